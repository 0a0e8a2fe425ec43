// The default seccomp rules, kept apart from the rest of the runtime so that the build-time
// compiler (seccomp_gen.cc) needs nothing else.
#include <sched.h>
#include <sys/ioctl.h>

#include <cerrno>

#include "runtime/container/seccomp.h"

namespace pitbox::runtime::container {

std::vector<sys::SeccompRule> default_seccomp_rules() {
  using When = sys::SeccompRule::When;
  std::vector<sys::SeccompRule> rules;
  auto deny = [&](std::initializer_list<const char*> names) {
    for (const char* n : names) rules.push_back({n, EPERM});
  };
  // Kernel, clock, swap, accounting and module administration.
  deny({"acct",         "clock_adjtime",   "clock_settime",   "settimeofday",
        "stime",        "adjtimex",        "create_module",   "init_module",
        "finit_module", "delete_module",   "get_kernel_syms", "query_module",
        "kexec_load",   "kexec_file_load", "reboot",          "swapon",
        "swapoff",      "syslog",          "vhangup",         "ioperm",
        "iopl",         "uselib",          "ustat",           "sysfs",
        "_sysctl",      "nfsservctl",      "lookup_dcookie",  "vm86",
        "vm86old",      "quotactl",        "quotactl_fd"});
  // Mounts and namespaces: a box cannot rearrange its filesystem or leave its namespaces.
  deny({"mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick",
        "move_mount", "open_tree", "mount_setattr", "unshare", "setns"});
  // Keys, BPF, perf, userfaultfd, io_uring, file handles, other processes' memory, NUMA.
  deny({"add_key",
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
        "migrate_pages"});
  // New namespaces through clone. clone3 passes its flags in memory, where a filter cannot
  // look: it reports "not implemented" and libc falls back to clone.
  constexpr uint64_t kNamespaceFlags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
                                       CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP;
  rules.push_back({"clone", EPERM, When::any_bit_set, 0, kNamespaceFlags});
  rules.push_back({"clone3", ENOSYS});
  // Typing into a terminal (TIOCSTI) and console tricks (TIOCLINUX).
  rules.push_back({"ioctl", EPERM, When::low32_equal, 1, TIOCSTI});
  rules.push_back({"ioctl", EPERM, When::low32_equal, 1, TIOCLINUX});
  return rules;
}

}  // namespace pitbox::runtime::container
