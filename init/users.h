// Who a process runs as: "name", "uid", "name:group" or "uid:gid", looked up in the box's own
// /etc/passwd and /etc/group (never the host's, never through NSS).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace pitbox::init {

struct Identity {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary
  std::string name;           // "" when the uid has no passwd entry
  std::string home = "/";
  std::string shell;
};

// Throws Error(not_found | invalid_argument) naming the user or group at fault.
Identity resolve_identity(int rootfd, const std::string& spec);

}  // namespace pitbox::init
