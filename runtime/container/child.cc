#include "runtime/container/child.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <cstring>

#include "runtime/container/caps.h"
#include "runtime/container/cgroup.h"
#include "runtime/container/mounts.h"
#include "runtime/container/net.h"
#include "runtime/container/seccomp.h"
#include "runtime/container/user.h"
#include "sys/raw_syscall.h"

namespace pitbox::runtime::container {

const char* step_name(Step step) {
  switch (step) {
    case Step::wait_for_parent:
      return "waiting for the runtime";
    case Step::become_root:
      return "becoming the box's root";
    case Step::cgroup_namespace:
      return "entering the cgroup namespace";
    case Step::private_mounts:
      return "making mounts private";
    case Step::attach_root:
      return "attaching the root filesystem";
    case Step::mount:
      return "mounting";
    case Step::pivot_root:
      return "pivoting into the root filesystem";
    case Step::hostname:
      return "setting the hostname";
    case Step::loopback:
      return "bringing up loopback";
    case Step::stdio:
      return "setting up init's file descriptors";
    case Step::capabilities:
      return "dropping capabilities";
    case Step::no_new_privs:
      return "setting no_new_privs";
    case Step::seccomp:
      return "loading the seccomp filter";
    case Step::exec_init:
      return "starting pitbox-init";
  }
  return "starting the box";
}

namespace child {

size_t length(const char* s) {
  size_t n = 0;
  while (s[n]) ++n;
  return n;
}

char* concat(char* buf, size_t cap, const char* a, const char* b, const char* c) {
  size_t n = 0;
  for (const char* part : {a, b, c}) {
    for (const char* p = part; *p && n + 1 < cap; ++p) buf[n++] = *p;
  }
  buf[n] = 0;
  return buf;
}

char* fd_path(char* buf, size_t cap, int fd) {
  char digits[16];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + fd % 10);
    fd /= 10;
  } while (fd && n < 15);
  char num[16];
  for (int i = 0; i < n; ++i) num[i] = digits[n - 1 - i];
  num[n] = 0;
  return concat(buf, cap, "/proc/self/fd/", num);
}

int fail(ChildFailure* f, Step step, long rc, const char* what) {
  f->step = step;
  f->err = static_cast<int32_t>(-rc);
  concat(f->what, sizeof f->what, what ? what : "");
  return -1;
}

}  // namespace child

namespace {

using sys::raw::call;

// Waits for the parent's go; returns the root mount fd, 0 if the parent went away, or -1.
long wait_for_go(const ChildPlan& plan, ChildFailure* f) {
  GoMessage go{};
  iovec iov{&go, sizeof go};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  long n;
  do {
    n = call(SYS_recvmsg, plan.sync_fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n == -EINTR);
  if (n == 0) return 0;
  if (n < 0) return child::fail(f, Step::wait_for_parent, n, "recvmsg");
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  if (n != sizeof go || go.magic != kGoMagic || !c || c->cmsg_type != SCM_RIGHTS) {
    return child::fail(f, Step::wait_for_parent, -EPROTO, "go message");
  }
  int fd;
  std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

// init's fds: 0 and 1 are /dev/null, 2 is the log pipe, 3 the channel; all others close on
// exec. Returns the fd to exec init from (moved out of the way of 0-3), or -1.
long setup_init_fds(const ChildPlan& plan, ChildFailure* f) {
  long init = call(SYS_fcntl, plan.init_fd, F_DUPFD_CLOEXEC, 100);
  long channel = call(SYS_fcntl, plan.channel_fd, F_DUPFD, 100);
  long log = call(SYS_fcntl, plan.log_fd, F_DUPFD, 100);
  long null = call(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR);
  for (long rc : {init, channel, log, null}) {
    if (rc < 0) return child::fail(f, Step::stdio, rc, "dup");
  }
  long rc = 0;
  for (auto [from, to] : {std::pair{null, 0L}, {null, 1L}, {log, 2L}, {channel, 3L}}) {
    if ((rc = call(SYS_dup3, from, to, 0)) < 0 && !(rc == -EINVAL && from == to)) {
      return child::fail(f, Step::stdio, rc, "dup3");
    }
  }
  rc = call(SYS_close_range, 4, ~0U, CLOSE_RANGE_CLOEXEC);
  if (rc < 0) return child::fail(f, Step::stdio, rc, "close_range");
  return init;
}

int run(const ChildPlan& plan, ChildFailure* f) {
  long rc;
  // A network namespace takes a while to make: make it, and do what needs only our own
  // namespaces, while the parent prepares the root filesystem.
  if (plan.own_netns) {
    if ((rc = call(SYS_unshare, CLONE_NEWNET)) < 0) {
      return child::fail(f, Step::loopback, rc, "network namespace");
    }
    if (child_loopback_up(f) < 0) return -1;
  }
  if ((rc = call(SYS_sethostname, plan.hostname, plan.hostname_len)) < 0) {
    return child::fail(f, Step::hostname, rc, plan.hostname);
  }
  long root_mount = wait_for_go(plan, f);
  if (root_mount <= 0) return root_mount == 0 ? 1 : -1;
  // The root is attached while we still have the host's ids: its mountpoint lies under the
  // state directory, which only the host's root may walk.
  int rootfd = child_attach_root(plan, static_cast<int>(root_mount), f);
  if (rootfd < 0) return -1;
  call(SYS_close, root_mount);
  if (child_become_root(f) < 0) return -1;
  // Only now: changing ids clears the parent-death signal. Had the parent died before, its end
  // of the sync socket would be closed already.
  if (plan.die_with_parent) {
    call(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    pollfd p{plan.sync_fd, 0, 0};
    if (call(SYS_poll, &p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR))) return 1;
  }
  if (child_enter_cgroup_namespace(f) < 0) return -1;
  if (child_populate_root(plan, rootfd, f) < 0) return -1;
  call(SYS_close, rootfd);
  long init_fd = setup_init_fds(plan, f);
  if (init_fd < 0) return -1;
  if (child_drop_capabilities(plan.keep_caps, plan.last_cap, f) < 0) return -1;
  if (child_load_seccomp(plan.seccomp, f) < 0) return -1;
  rc = call(SYS_execveat, init_fd, "", plan.init_argv, plan.init_envp, AT_EMPTY_PATH);
  return child::fail(f, Step::exec_init, rc, "pitbox-init");
}

}  // namespace

int child_main(void* arg) {
  const auto& plan = *static_cast<const ChildPlan*>(arg);
  ChildFailure failure{};
  int rc = run(plan, &failure);
  if (rc < 0) call(SYS_sendto, plan.sync_fd, &failure, sizeof failure, MSG_NOSIGNAL, 0, 0);
  call(SYS_exit_group, rc < 0 ? 1 : 0);
  return 0;
}

}  // namespace pitbox::runtime::container
