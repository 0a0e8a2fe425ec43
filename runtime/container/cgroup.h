// Control groups: a box's processes live in their own cgroup with its limits, and see it as
// their root through a cgroup namespace.
#pragma once

#include <memory>

#include "runtime/container/child.h"
#include "runtime/runtime.h"
#include "sys/cgroup.h"

namespace pitbox::runtime::container {

// Parent: the box's cgroup with its limits, or none when the box needs neither limits nor
// accounting. A limit the kernel refuses is an invalid_argument error and leaves no cgroup.
std::unique_ptr<sys::Cgroup> create_box_cgroup(sys::Cgroups& cgroups, const BoxSpec& spec);

// Child: once the parent has moved it into the box's cgroup, make that cgroup its root.
int child_enter_cgroup_namespace(ChildFailure* f);

}  // namespace pitbox::runtime::container
