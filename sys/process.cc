#include "sys/process.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "sys/error.h"
#include "sys/fs.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace pitbox::sys {

std::string ExitStatus::describe() const {
  if (signal) {
    std::string s = "killed by signal " + std::to_string(signal);
    const char* name = sigabbrev_np(signal);
    if (name) s += std::string(" (SIG") + name + ")";
    if (core_dumped) s += ", core dumped";
    return s;
  }
  return "exited with code " + std::to_string(code);
}

ExitStatus ExitStatus::from_wait_status(int status) {
  ExitStatus s;
  if (WIFEXITED(status)) {
    s.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    s.signal = WTERMSIG(status);
    s.core_dumped = WCOREDUMP(status);
  }
  return s;
}

ExitStatus ExitStatus::from_siginfo(const siginfo_t& info) {
  ExitStatus s;
  if (info.si_code == CLD_EXITED) {
    s.code = info.si_status;
  } else {
    s.signal = info.si_status;
    s.core_dumped = info.si_code == CLD_DUMPED;
  }
  return s;
}

namespace {

// The start time of a live process (not a zombie), or 0.
uint64_t start_time_of(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return 0;
  char buf[1024];
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return 0;
  buf[n] = 0;
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses; fields follow the last ')'.
  const char* p = std::strrchr(buf, ')');
  if (!p) return 0;
  unsigned long long start = 0;
  char state = 0;
  // After ") " come fields 3 onwards (the state first); the start time is field 22.
  if (std::sscanf(p + 2,
                  "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                  &state, &start) != 2) {
    return 0;
  }
  if (state == 'Z' || state == 'X') return 0;  // ended, only not reaped yet
  return start;
}

}  // namespace

ProcessRef ProcessRef::self() { return of(::getpid()); }

ProcessRef ProcessRef::of(pid_t pid) {
  uint64_t start = start_time_of(pid);
  return start ? ProcessRef{pid, start} : ProcessRef{};
}

bool ProcessRef::alive() const { return pid > 0 && start_time && start_time_of(pid) == start_time; }

Pidfd Pidfd::open(pid_t pid) {
  long fd = ::syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) throw_errno("pidfd_open " + std::to_string(pid));
  return Pidfd(UniqueFd(static_cast<int>(fd)), pid);
}

bool Pidfd::send_signal(int sig) const {
  if (!fd_ || status_) return false;
  return ::syscall(SYS_pidfd_send_signal, fd_.get(), sig, nullptr, 0) == 0;
}

std::optional<ExitStatus> Pidfd::try_wait() {
  if (status_) return status_;
  if (!fd_) return std::nullopt;
  siginfo_t info;
  std::memset(&info, 0, sizeof info);
  if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(fd_.get()), &info,
               WEXITED | WNOHANG | __WALL) != 0) {
    if (errno != ECHILD) throw_errno("waitid");
    // Not our child: a pidfd becomes readable when its process exits.
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, 0) == 1) {
      status_ = ExitStatus{.code = -1};
      return status_;
    }
    return std::nullopt;
  }
  if (info.si_pid == 0) return std::nullopt;
  status_ = ExitStatus::from_siginfo(info);
  return status_;
}

std::optional<ExitStatus> Pidfd::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto s = try_wait()) return s;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{fd_.get(), POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(left.count()));
  }
}

void Pidfd::kill_and_reap() noexcept {
  try {
    if (!fd_ || status_) return;
    send_signal(SIGKILL);
    while (!wait(std::chrono::seconds(10))) send_signal(SIGKILL);
  } catch (...) {
  }
}

BlockAllSignals::BlockAllSignals() {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old_);
}

BlockAllSignals::~BlockAllSignals() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }

std::string find_helper_binary(const std::string& name, const std::string& env_var) {
  if (const char* env = std::getenv(env_var.c_str()); env && *env) return env;
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = 0;
    std::string dir = split_parent(self).first;
    for (const std::string& path : {dir + "/" + name, dir + "/../lib/pitbox/" + name}) {
      if (exists(path)) return path;
    }
  }
  throw Error(ErrorCode::unavailable,
              name + " not found beside the pitbox binary (set " + env_var + " to its path)");
}

}  // namespace pitbox::sys
