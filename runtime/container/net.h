// The network namespace of a box without a prepared one (BoxSpec::netns_fd): its own, with only
// loopback. Prepared namespaces come from net::Network, made by the host.
#pragma once

#include "runtime/container/child.h"

namespace pitbox::runtime::container {

// Child: brings "lo" up in the box's fresh network namespace.
int child_loopback_up(ChildFailure* f);

}  // namespace pitbox::runtime::container
