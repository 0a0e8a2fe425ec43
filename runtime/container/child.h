// The box's first process between clone() and the exec of pitbox-init. It shares the parent's
// memory (CLONE_VM), so it only makes raw system calls on data the parent prepared: no heap,
// no errno, no exceptions, no locks.
#pragma once

#include <linux/filter.h>

#include <cstddef>
#include <cstdint>

namespace pitbox::runtime::container {

// The steps of the child, for error messages ("mounting /proc: ...").
enum class Step : int32_t {
  wait_for_parent = 1,
  become_root,
  cgroup_namespace,
  private_mounts,
  attach_root,
  mount,
  pivot_root,
  hostname,
  loopback,
  stdio,
  capabilities,
  no_new_privs,
  seccomp,
  exec_init,
};
const char* step_name(Step step);

// What the child reports over the sync socket when a step fails.
struct ChildFailure {
  Step step;
  int32_t err;     // errno
  char what[480];  // the path or object involved
};

struct MountOp;

struct ChildPlan {
  int sync_fd = -1;     // SEQPACKET: the parent's "go" (with fds) in, a ChildFailure out
  int channel_fd = -1;  // becomes fd 3 of init
  int log_fd = -1;      // becomes fd 2 of init
  int init_fd = -1;     // the pitbox-init binary, executed with execveat
  bool die_with_parent = false;
  bool own_netns = true;  // unshare a network namespace with loopback (else: inherited)
  const char* hostname = nullptr;
  size_t hostname_len = 0;
  const char* root = nullptr;  // where the root filesystem is attached before pivot_root
  const MountOp* mounts = nullptr;
  size_t mount_count = 0;
  uint64_t keep_caps = 0;
  int last_cap = 40;
  const sock_fprog* seccomp = nullptr;
  char* const* init_argv = nullptr;
  char* const* init_envp = nullptr;
};

// What the parent sends when the child may go on; the root mount arrives as SCM_RIGHTS.
struct GoMessage {
  uint32_t magic;
};
constexpr uint32_t kGoMagic = 0x70627821;

// clone() entry point; `arg` is a const ChildPlan*.
int child_main(void* arg);

// Helpers for child code.
namespace child {
// Records a failure (rc is a raw syscall result, -errno) and returns -1.
int fail(ChildFailure* f, Step step, long rc, const char* what);
size_t length(const char* s);
// Writes a + b + c into buf (truncating) and returns buf.
char* concat(char* buf, size_t cap, const char* a, const char* b = "", const char* c = "");
// "/proc/self/fd/<fd>" into buf.
char* fd_path(char* buf, size_t cap, int fd);
}  // namespace child

}  // namespace pitbox::runtime::container
