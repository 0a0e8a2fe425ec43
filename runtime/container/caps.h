// Capabilities: a box's root keeps a small default set, everything else is dropped for good.
#pragma once

#include "runtime/container/child.h"
#include "sys/caps.h"

namespace pitbox::runtime::container {

// The default set: what Docker grants, minus CAP_MKNOD and CAP_NET_RAW.
sys::CapSet default_capabilities();

// Child: drops every capability not in `keep` from the bounding set, sets permitted and
// effective to `keep`, and clears the inheritable and ambient sets.
int child_drop_capabilities(uint64_t keep, int last_cap, ChildFailure* f);

}  // namespace pitbox::runtime::container
