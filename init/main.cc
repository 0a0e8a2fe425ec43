// pitbox-init: PID 1 of every box. Reaps zombies, forwards signals to the processes it started,
// and serves the box protocol on the channel it inherits (fd 3 unless --channel-fd says).
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "init/loop.h"
#include "init/server.h"
#include "init/signals.h"
#include "sys/error.h"

namespace {

void usage() {
  std::fprintf(stderr, "usage: pitbox-init [--channel-fd N] [--root DIR]\n");
  std::exit(2);
}

// PID 1 ignores signals whose disposition is the default, even blocked ones: give each a
// handler so that they queue for the signalfd.
void on_signal(int) {}

}  // namespace

int main(int argc, char** argv) {
  int channel_fd = 3;
  std::string root = "/";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--channel-fd" && i + 1 < argc) {
      channel_fd = std::atoi(argv[++i]);
    } else if (a == "--root" && i + 1 < argc) {
      root = argv[++i];
    } else if (a == "--version") {
      std::printf("pitbox-init %s (box protocol %u)\n", PITBOX_VERSION, pitbox::proto::kVersion);
      return 0;
    } else {
      usage();
    }
  }
  try {
    // Processes of the box must not be able to attach to init or read its memory.
    ::prctl(PR_SET_DUMPABLE, 0);
    if (::getpid() != 1) ::prctl(PR_SET_CHILD_SUBREAPER, 1);

    // Start from default dispositions: whatever started init may have ignored signals, and
    // ignored signals survive exec into every process of the box.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) {
      if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);
    }
    sigset_t mask;
    sigemptyset(&mask);
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    for (int sig : pitbox::init::kForwardedSignals) {
      ::sigaction(sig, &sa, nullptr);
      sigaddset(&mask, sig);
    }
    ::sigaction(SIGCHLD, &sa, nullptr);
    sigaddset(&mask, SIGCHLD);
    ::sigprocmask(SIG_SETMASK, &mask, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    pitbox::sys::UniqueFd sigfd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sigfd) pitbox::throw_errno("signalfd");

    // Diagnostics go to stderr, a pipe to the node: never let a full pipe stop init.
    ::fcntl(STDERR_FILENO, F_SETFL, ::fcntl(STDERR_FILENO, F_GETFL) | O_NONBLOCK);
    if (::fcntl(channel_fd, F_SETFD, FD_CLOEXEC) != 0) {
      pitbox::throw_errno("channel fd " + std::to_string(channel_fd));
    }
    ::fcntl(channel_fd, F_SETFL, ::fcntl(channel_fd, F_GETFL) | O_NONBLOCK);
    pitbox::sys::UniqueFd rootfd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!rootfd) pitbox::throw_errno("open root " + root);

    // Opened before any process of the box runs: later it could replace what these paths lead to.
    pitbox::sys::UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!devnull) pitbox::throw_errno("open /dev/null");
    pitbox::sys::UniqueFd devpts(::open("/dev/pts", O_PATH | O_DIRECTORY | O_CLOEXEC));

    pitbox::init::Loop loop;
    pitbox::init::Server server(
        loop, pitbox::sys::UniqueFd(channel_fd),
        {.rootfd = rootfd.get(), .devnull = devnull.get(), .devpts = devpts.get()});
    loop.add(sigfd.get(), EPOLLIN, [&](uint32_t) {
      signalfd_siginfo si;
      while (::read(sigfd.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
        if (si.ssi_signo != SIGCHLD) server.forward_signal(static_cast<int>(si.ssi_signo));
      }
      // One SIGCHLD may stand for many children: reap until none is left.
      int status;
      pid_t pid;
      while ((pid = ::waitpid(-1, &status, WNOHANG | __WALL)) > 0) {
        server.child_exited(pid, pitbox::sys::ExitStatus::from_wait_status(status));
      }
      server.after_reaping();
    });
    server.start();
    loop.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pitbox-init: %s\n", e.what());
    return 1;
  }
  return 0;
}
