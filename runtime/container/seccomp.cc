#include "runtime/container/seccomp.h"

#include <linux/seccomp.h>
#include <sys/prctl.h>

#include <cerrno>

#include "sys/raw_syscall.h"

namespace pitbox::runtime::container {

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
