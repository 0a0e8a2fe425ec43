// The seccomp filter every box process runs under: everything Docker's default profile denies,
// plus the newer mount and io_uring calls. The rules are compiled when pitbox is built.
#pragma once

#include <linux/filter.h>

#include <vector>

#include "runtime/container/child.h"
#include "sys/seccomp.h"

namespace pitbox::runtime::container {

std::vector<sys::SeccompRule> default_seccomp_rules();

// The rules above, compiled at build time (by pitbox-seccomp-gen).
const sock_fprog& default_seccomp_program();

// Child: sets no_new_privs and loads the program. Must be the last step before exec.
int child_load_seccomp(const sock_fprog* prog, ChildFailure* f);

}  // namespace pitbox::runtime::container
