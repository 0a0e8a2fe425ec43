// The user namespace: box ids 0..n-1 map to an unprivileged host range.
#pragma once

#include <sys/types.h>

#include "runtime/container/child.h"
#include "runtime/runtime.h"

namespace pitbox::runtime::container {

// Parent: writes the child's uid_map and gid_map.
void write_id_maps(pid_t pid, const IdMapping& ids);

// Child: becomes the box's root (uid and gid 0 inside, no supplementary groups).
int child_become_root(ChildFailure* f);

}  // namespace pitbox::runtime::container
