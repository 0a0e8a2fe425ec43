#include "runtime/container/cgroup.h"

#include <sched.h>

#include "sys/raw_syscall.h"

namespace pitbox::runtime::container {

std::unique_ptr<sys::Cgroup> create_box_cgroup(sys::Cgroups& cgroups, const BoxSpec& spec) {
  if (!spec.limits.any() && !spec.accounting) return nullptr;
  return cgroups.create(spec.id, spec.limits, spec.accounting);
}

int child_enter_cgroup_namespace(ChildFailure* f) {
  long rc = sys::raw::call(SYS_unshare, CLONE_NEWCGROUP);
  if (rc < 0) return child::fail(f, Step::cgroup_namespace, rc, "unshare");
  return 0;
}

}  // namespace pitbox::runtime::container
