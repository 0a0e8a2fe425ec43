// The network namespace: a box has only loopback for now.
#pragma once

#include "runtime/container/child.h"

namespace pitbox::runtime::container {

// Child: brings "lo" up in the box's fresh network namespace.
int child_loopback_up(ChildFailure* f);

}  // namespace pitbox::runtime::container
