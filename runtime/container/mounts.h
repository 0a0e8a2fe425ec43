// The mount namespace: the box's root is an overlay of id-mapped image layers and its own
// writable layer, with fresh /proc, /sys (read-only), /dev and /tmp, sensitive /proc paths
// masked or read-only as runc does, and nothing else of the host.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "runtime/container/child.h"
#include "runtime/runtime.h"
#include "sys/fd.h"

namespace pitbox::runtime::container {

struct MountOp {
  enum class Kind : uint8_t {
    bind,        // bind `source` (a host path) on `target`, then set `attrs`
    filesystem,  // mount a new `fstype` on `target`
    mkdir,       // a directory (mode in `flags`)
    file,        // an empty file to bind something over (mode in `flags`)
    symlink,     // `target` -> `source`
    readonly,    // bind `target` on itself, then set `attrs`
  };
  Kind kind;
  // The target lies in the image: it is checked to contain no symlink (an image could point
  // /proc elsewhere) and created when missing.
  bool in_image = false;
  bool target_is_file = false;
  // A missing target is skipped instead of failing the box (paths some kernels lack).
  bool optional = false;
  const char* source = nullptr;
  // For binds from the host: a detached copy of the source made by the parent (open_tree),
  // with `attrs` already set; the child only attaches it. The child never walks host paths
  // as the box's root, and a bind source may live where the box's root could not reach.
  int source_fd = -1;
  const char* target = nullptr;  // relative to the box root: "proc", "dev/pts"
  const char* fstype = nullptr;
  unsigned long flags = 0;  // MS_* for filesystems, the mode for mkdir and file
  const char* data = nullptr;
  uint64_t attrs = 0;  // MOUNT_ATTR_*, applied recursively
};

// The mounts of one box and the strings they point into.
class MountPlan {
 public:
  static MountPlan for_box(const BoxSpec& spec);
  MountPlan(MountPlan&&) = default;
  MountPlan& operator=(MountPlan&&) = default;

  const MountOp* data() const { return ops_.data(); }
  size_t size() const { return ops_.size(); }
  const std::vector<MountOp>& ops() const { return ops_; }

 private:
  MountPlan() = default;
  const char* keep(std::string s);
  int detached_copy(const std::string& host_path, uint64_t attrs);
  int dev_tmpfs(const IdMapping& ids);
  int sysfs_of(int netns_fd);
  void add(MountOp op) { ops_.push_back(op); }

  std::deque<std::string> strings_;
  std::vector<sys::UniqueFd> fds_;
  std::vector<MountOp> ops_;
};

// Files of /etc written into the writable layer at each start: {"hosts", content}, ...
using EtcFiles = std::vector<std::pair<std::string, std::string>>;

// Parent: the box's root as a detached overlay mount. Layers are id-mapped read-only, the
// writable layer id-mapped read-write, all through the box's user namespace, and the overlay
// is created with the box's root as its mounter. `etc_files` go into the writable layer.
sys::UniqueFd make_root_mount(const RootfsSpec& rootfs, const IdMapping& ids, int userns_fd,
                              const EtcFiles& etc_files);

// Child, still with the host ids: makes mounts private and attaches the root at plan.root
// (a path only the host's root may walk). Returns an fd of the attached root, or -1.
int child_attach_root(const ChildPlan& plan, int root_mount_fd, ChildFailure* f);
// Child, as the box's root: performs the plan inside the root and pivots into it.
int child_populate_root(const ChildPlan& plan, int rootfd, ChildFailure* f);

}  // namespace pitbox::runtime::container
