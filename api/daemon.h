// pitbox serve: the api, control and node layers of one machine in one process.
#pragma once

#include <string>

namespace pitbox::api {

struct DaemonOptions {
  std::string state_dir = "/var/lib/pitbox";
  std::string listen = "127.0.0.1:7070";
  std::string cgroup_parent = "pitbox";
  bool log_requests = true;
  size_t pool_size = 4;       // warm boxes kept ready (control::Sandboxes::Options::pool_size)
  std::string default_image;  // "" = the Debian base once built, else "host"
  bool build_base = false;    // build the Debian base image in the background if missing
  std::string storage = "overlay";  // the storage driver: overlay, btrfs or btrfs:SIZE
  // Boxes' addresses (net::Network), and the policy of a create that names none: "egress",
  // "none", or "off" (no network for any box: each has only its own loopback).
  std::string network_range = "10.88.0.0/16";
  std::string network_default = "egress";
  std::string preview_domain = "localhost";
  std::string dns_upstream;  // the boxes' resolver asks these ("" = /etc/resolv.conf; "off")  //
                             // previews by host: {port}-{box}.{domain}
};

// Serves until SIGTERM or SIGINT, then leaves the boxes running for the next start. Returns
// the process's exit code; problems at start are printed and give 1.
int run_daemon(const DaemonOptions& options);

// Where the admin key of a state directory is kept.
std::string admin_key_path(const std::string& state_dir);

}  // namespace pitbox::api
