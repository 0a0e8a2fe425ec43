// The new mount API (open_tree, mount_setattr, fsopen/fsconfig/fsmount) as RAII calls.
// Mounts made here are detached: they belong to no namespace until someone moves them in,
// and they vanish when their last fd closes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "sys/fd.h"

namespace pitbox::sys {

// A detached copy of the mount tree at `path` (only its top mount unless `recursive`).
UniqueFd clone_mount(const std::string& path, bool recursive = false);

// Sets and clears MOUNT_ATTR_* flags on a (detached) mount; with `userns_fd` >= 0 it also
// idmaps the mount through that user namespace.
void set_mount_attrs(int mount_fd, uint64_t set, uint64_t clear = 0, int userns_fd = -1,
                     bool recursive = false);

struct OverlayLayers {
  // Read-only layers, topmost first. Each is an fd of a directory (O_PATH is enough).
  std::vector<int> lower;
  // The writable layer and overlayfs's scratch directory, on the same mount; -1 for a
  // read-only overlay.
  int upper = -1;
  int work = -1;
  // Never sync the upper layer (also not when the overlay goes): for layers thrown away after
  // use. overlayfs refuses to mount a volatile upper again after a crash.
  bool volatile_upper = false;
};

// A detached new mount of `fstype` with string `options`, its MOUNT_ATTR_* `attrs` set. Made
// in the calling thread's namespaces (a sysfs shows the network namespace it was made in).
UniqueFd make_filesystem(const char* fstype,
                         const std::vector<std::pair<std::string, std::string>>& options,
                         uint64_t attrs);

// A detached tmpfs mount, `size_bytes` big (0: the kernel's default, half of RAM), its root with
// `mode`, with MOUNT_ATTR_* `attrs`. Its pages are charged to the memory cgroup of whoever
// writes them.
UniqueFd make_tmpfs(uint64_t size_bytes, mode_t mode, uint64_t attrs);

// Creates a detached overlayfs mount with the calling thread's credentials as the mounter.
// On failure the message includes what overlayfs logged.
UniqueFd make_overlay(const OverlayLayers& layers);

}  // namespace pitbox::sys
