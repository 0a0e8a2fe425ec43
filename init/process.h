// Processes that pitbox-init starts: their stdio (pipes or a pseudo-terminal) and how they are
// spawned without copying init's memory (clone with CLONE_VM | CLONE_VFORK, like posix_spawn).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proto/messages.h"
#include "sys/fd.h"
#include "sys/process.h"

namespace pitbox::init {

struct Process {
  uint32_t stream = 0;
  pid_t pid = 0;
  std::vector<std::string> argv;
  bool tty = false;
  // Pipe ends, or for a terminal the master in `input` with `output` and `errors` unset.
  sys::UniqueFd input;
  sys::UniqueFd output;
  sys::UniqueFd errors;

  // Flow control and state, kept by the server.
  uint32_t credit = 0;        // output bytes we may still send
  std::string stdin_pending;  // received, not yet written to the process
  bool stdin_close_requested = false;
  bool output_done = false;  // end of output sent (or no such stream)
  bool errors_done = false;
  std::optional<sys::ExitStatus> exit_status;
  // After the process exits, only what was already in its pipes is forwarded.
  std::optional<size_t> output_left, errors_left;
};

struct SpawnOptions {
  // Where file lookups (users, working directory creation) are confined.
  int rootfd = -1;
  // Opened when init started, before any process of the box could replace what the paths
  // lead to: /dev/null, and the directory of the box's devpts (for ptmx).
  int devnull = -1;
  int devpts = -1;
};

// Starts `req` as a new session. Throws Error (not_found for a missing executable or working
// directory, permission_denied, invalid_argument) with nothing left running.
std::unique_ptr<Process> spawn_process(uint32_t stream, const proto::SpawnRequest& req,
                                       const SpawnOptions& options);

}  // namespace pitbox::init
