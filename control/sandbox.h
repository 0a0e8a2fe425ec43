// A sandbox as the control plane knows it: what the user asked for, its state and times, and
// where the node keeps it. Also the parsing of requests that make or change one, which names
// the field at fault for every bad input.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "net/policy.h"
#include "sys/error.h"

namespace pitbox::control {

enum class State {
  creating,
  started,
  stopping,
  stopped,
  starting,
  error,
  destroying,
  paused,
  archived
};
std::string_view to_string(State s);
std::optional<State> state_from_string(std::string_view s);

struct SandboxSpec {
  std::string image = "host";  // as the user named it
  std::string image_id;        // what it named at create (tags move; a box keeps its image)
  std::string runtime = "container";
  std::string name;  // "" = none
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> env;
  std::optional<uint64_t> millicpus;
  std::optional<uint64_t> memory;
  std::optional<uint64_t> pids;
  std::optional<uint64_t> disk;
  std::string workdir;  // "" = the image's
  std::string user;     // "" = the image's (root)
  std::optional<double> auto_stop_minutes;
  std::optional<double> auto_delete_minutes;
  std::optional<double> auto_archive_minutes;
  bool ephemeral = false;
  std::string snapshot;  // the snapshot (id) the sandbox was made from; "" = its image's files
  // What the box may reach (net/policy.h); none: only its own loopback (a node without networks).
  std::optional<net::Policy> network;
  // The image's defaults for commands (its config's Env, WorkingDir, User), kept at create so
  // that a box runs the same however its image's tags move. "" workdir = the user's home.
  std::vector<std::string> image_env;
  std::string image_workdir;
  std::string image_user;
};

// A sandbox's files captured at one instant, for new sandboxes and rollbacks.
struct Snapshot {
  std::string id;  // "sn-" + 12 base32 characters
  std::string name;
  std::string sandbox_id;  // whose files these are
  // The image under the files, and its command defaults (as the sandbox had them).
  std::string image;
  std::string image_id;
  std::vector<std::string> image_env;
  std::string image_workdir;
  std::string image_user;
  uint64_t size = 0;  // bytes of its files (the sandbox's writable layer)
  int64_t created_at = 0;
  bool internal = false;  // made for a fork and removed after it; never listed

  nlohmann::json to_api() const;
  nlohmann::json to_doc() const;
  static Snapshot from_doc(const std::string& id, const std::string& name,
                           const nlohmann::json& doc);
};

// What the node offers, for validating a spec.
struct Capabilities {
  std::string default_image = "host";
  // The id of the image a reference names (not_found when none); by default the reference.
  std::function<std::string(const std::string&)> resolve_image;
  // The snapshot a reference (id or name) names; not_found when none.
  std::function<Snapshot(const std::string&)> resolve_snapshot;
  std::vector<std::string> runtimes = {"container"};
  std::string storage_driver = "overlay";
  bool disk_quota = false;  // the storage driver limits a box's disk
  uint64_t online_cpus = 1;
  // The policy of a create that names none; none: this node gives boxes no network.
  std::optional<net::Policy> default_network;
  // Refuses a policy that names what no box may reach (the node's net::Network::check).
  std::function<void(const net::Policy&)> check_network;
};

// Parses and checks a create request. Unknown fields, wrong types and values out of range are
// invalid_argument errors whose message and details name the field.
SandboxSpec parse_create(const nlohmann::json& body, const Capabilities& caps);
// `{"cpus", "memory", "pids", "disk"}` of POST .../resize: `spec` with what the body names
// changed (at least one).
SandboxSpec parse_resize(const nlohmann::json& body, const Capabilities& caps, SandboxSpec spec);
// A network policy (a create's "network" field, the body of PUT .../network) checked against
// what the node allows.
net::Policy parse_network(const nlohmann::json& value, const Capabilities& caps);
// `{"labels": {...}}` of PUT .../labels.
std::map<std::string, std::string> parse_labels_body(const nlohmann::json& body);
// A label selector "k=v" of GET /v1/sandboxes?label=.
std::pair<std::string, std::string> parse_label_selector(const std::string& text);
void validate_name(const std::string& name);

struct Sandbox {
  std::string id;
  SandboxSpec spec;
  State state = State::creating;
  std::optional<Error> error;  // why the box is in state error
  int64_t created_at = 0;      // ms since the epoch; 0 = never
  int64_t started_at = 0;
  int64_t stopped_at = 0;
  int64_t last_activity_at = 0;
  nlohmann::json location;  // the node's, to find the box again after a restart
  // The sessions started through the API ({"id", "pid", "started_at"}), so that a restarted
  // daemon gives the processes it finds again their ids.
  nlohmann::json sessions = nlohmann::json::array();
  std::string forked_from;          // the sandbox this one is a fork of
  uint64_t preview_generation = 0;  // preview links made before the last revocation fail
  std::set<int> public_ports;       // previews anyone may open, without a link or key

  // The object of the API (docs/api.md).
  nlohmann::json to_api() const;
  nlohmann::json network_to_api() const;  // its policy, and its address while it runs
  // Everything, for the store.
  nlohmann::json to_doc() const;
  static Sandbox from_doc(const std::string& id, const nlohmann::json& doc);
};

}  // namespace pitbox::control
