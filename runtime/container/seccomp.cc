#include "runtime/container/seccomp.h"

#include <linux/seccomp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>

#include <cerrno>

#include "sys/raw_syscall.h"

namespace pitbox::runtime::container {

sys::SeccompProgram default_seccomp_program() {
  sys::SeccompBuilder b;
  // Kernel, clock, swap, accounting and module administration.
  for (const char* name : {"acct",         "clock_adjtime",   "clock_settime",   "settimeofday",
                           "stime",        "adjtimex",        "create_module",   "init_module",
                           "finit_module", "delete_module",   "get_kernel_syms", "query_module",
                           "kexec_load",   "kexec_file_load", "reboot",          "swapon",
                           "swapoff",      "syslog",          "vhangup",         "ioperm",
                           "iopl",         "uselib",          "ustat",           "sysfs",
                           "_sysctl",      "nfsservctl",      "lookup_dcookie",  "vm86",
                           "vm86old",      "quotactl",        "quotactl_fd"}) {
    b.deny(name, EPERM);
  }
  // Mounts and namespaces: a box cannot rearrange its filesystem or leave its namespaces.
  for (const char* name :
       {"mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick",
        "move_mount", "open_tree", "mount_setattr", "unshare", "setns"}) {
    b.deny(name, EPERM);
  }
  // Keys, BPF, perf, userfaultfd, io_uring, file handles, other processes' memory, NUMA.
  for (const char* name : {"add_key",
                           "request_key",
                           "keyctl",
                           "bpf",
                           "perf_event_open",
                           "userfaultfd",
                           "io_uring_setup",
                           "io_uring_enter",
                           "io_uring_register",
                           "open_by_handle_at",
                           "name_to_handle_at",
                           "process_vm_readv",
                           "process_vm_writev",
                           "kcmp",
                           "pidfd_getfd",
                           "fanotify_init",
                           "mbind",
                           "set_mempolicy",
                           "move_pages",
                           "migrate_pages"}) {
    b.deny(name, EPERM);
  }
  // New namespaces through clone; clone3 passes its flags in memory where a filter cannot
  // look, so it reports "not implemented" and libc falls back to clone.
  constexpr uint64_t kNamespaceFlags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
                                       CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP;
  b.deny_if_any_bits("clone", 0, kNamespaceFlags, EPERM);
  b.deny("clone3", ENOSYS);
  // Typing into a terminal that is not yours (TIOCSTI) and console tricks (TIOCLINUX).
  b.deny_if_equal32("ioctl", 1, TIOCSTI, EPERM);
  b.deny_if_equal32("ioctl", 1, TIOCLINUX, EPERM);
  return b.build();
}

int child_load_seccomp(const sock_fprog* prog, ChildFailure* f) {
  using sys::raw::call;
  long rc = call(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  if (rc < 0) return child::fail(f, Step::no_new_privs, rc, "prctl");
  if (!prog) return 0;
  rc = call(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog);
  if (rc < 0) return child::fail(f, Step::seccomp, rc, "load filter");
  return 0;
}

}  // namespace pitbox::runtime::container
