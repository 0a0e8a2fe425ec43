// Processes: pidfds, exit statuses and signal masks.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "sys/fd.h"

namespace pitbox::sys {

// How a process ended: an exit code, or the signal that killed it.
struct ExitStatus {
  int code = 0;
  int signal = 0;
  bool core_dumped = false;

  // What a shell reports: the code, or 128 + the signal.
  int shell_code() const { return signal ? 128 + signal : code; }
  std::string describe() const;
  static ExitStatus from_wait_status(int status);
  static ExitStatus from_siginfo(const siginfo_t& info);
};

// A process, named so that a recycled pid is never mistaken for it.
struct ProcessRef {
  pid_t pid = 0;
  uint64_t start_time = 0;  // /proc/<pid>/stat field 22, in clock ticks since boot

  static ProcessRef self();
  static ProcessRef of(pid_t pid);  // {0, 0} when there is no such process
  bool alive() const;
  bool operator==(const ProcessRef& o) const { return pid == o.pid && start_time == o.start_time; }
};

// A process referred to by a pidfd: signals and waits can never hit a recycled pid.
class Pidfd {
 public:
  Pidfd() = default;
  Pidfd(UniqueFd fd, pid_t pid) : fd_(std::move(fd)), pid_(pid) {}
  static Pidfd open(pid_t pid);

  int fd() const { return fd_.get(); }
  pid_t pid() const { return pid_; }
  bool valid() const { return fd_.valid(); }

  // False when the process has already been reaped.
  bool send_signal(int sig) const;
  // Reaps the process if it is our child and has exited. For a process that is not our child
  // (one found again after a restart) it only tells whether it has exited; its status is then
  // unknown (code -1).
  std::optional<ExitStatus> try_wait();
  // Waits up to `timeout` for the child to exit and reaps it.
  std::optional<ExitStatus> wait(std::chrono::milliseconds timeout);
  // Kills with SIGKILL and reaps; never throws.
  void kill_and_reap() noexcept;

 private:
  UniqueFd fd_;
  pid_t pid_ = -1;
  std::optional<ExitStatus> status_;
};

// Where one of pitbox's helper programs (`name`: pitbox-init, pitbox-nft) is: $`env_var`, else
// beside the running executable or in ../lib/pitbox. Throws unavailable naming both.
std::string find_helper_binary(const std::string& name, const std::string& env_var);

// Blocks all signals in this thread for its lifetime, restoring the old mask after.
class BlockAllSignals {
 public:
  BlockAllSignals();
  ~BlockAllSignals();
  BlockAllSignals(const BlockAllSignals&) = delete;
  BlockAllSignals& operator=(const BlockAllSignals&) = delete;

 private:
  sigset_t old_;
};

}  // namespace pitbox::sys
