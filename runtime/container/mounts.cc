#include "runtime/container/mounts.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>

#include "sys/caps.h"
#include "sys/error.h"
#include "sys/fs.h"
#include "sys/mount.h"
#include "sys/netlink.h"
#include "sys/raw_syscall.h"

namespace pitbox::runtime::container {

namespace {

std::string relative(const std::string& box_path) {
  std::string rel = box_path;
  while (!rel.empty() && rel.front() == '/') rel.erase(0, 1);
  while (!rel.empty() && rel.back() == '/') rel.pop_back();
  return rel;
}

constexpr unsigned long kNoSuidDevExec = MS_NOSUID | MS_NODEV | MS_NOEXEC;
constexpr uint64_t kReadOnlyAttrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;

}  // namespace

const char* MountPlan::keep(std::string s) {
  strings_.push_back(std::move(s));
  return strings_.back().c_str();
}

int MountPlan::dev_tmpfs(const IdMapping& ids) {
  sys::UniqueFd dev = sys::make_tmpfs(64 << 10, 0755, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
  struct Node {
    const char* name;
    unsigned major, minor;
  };
  for (Node n : {Node{"null", 1, 3}, Node{"zero", 1, 5}, Node{"full", 1, 7}, Node{"random", 1, 8},
                 Node{"urandom", 1, 9}, Node{"tty", 5, 0}}) {
    if (::mknodat(dev.get(), n.name, S_IFCHR | 0666, makedev(n.major, n.minor)) != 0 ||
        ::fchmodat(dev.get(), n.name, 0666, 0) != 0) {
      throw_errno(std::string("making /dev/") + n.name);
    }
  }
  for (auto [name, mode] : {std::pair{"pts", 0755}, std::pair{"shm", 01777}}) {
    if (::mkdirat(dev.get(), name, static_cast<mode_t>(mode)) != 0 ||
        ::fchmodat(dev.get(), name, static_cast<mode_t>(mode), 0) != 0) {
      throw_errno(std::string("making /dev/") + name);
    }
  }
  for (auto [name, target] :
       {std::pair{"ptmx", "pts/ptmx"}, std::pair{"fd", "/proc/self/fd"},
        std::pair{"stdin", "/proc/self/fd/0"}, std::pair{"stdout", "/proc/self/fd/1"},
        std::pair{"stderr", "/proc/self/fd/2"}}) {
    if (::symlinkat(target, dev.get(), name) != 0) throw_errno(std::string("making /dev/") + name);
  }
  // The box's root owns /dev itself (it may add files there), but no device node: making one
  // needs CAP_MKNOD over this filesystem, which only the host's root has.
  if (::fchownat(dev.get(), "", ids.host_base, ids.host_base, AT_EMPTY_PATH) != 0) {
    throw_errno("chown /dev");
  }
  fds_.push_back(std::move(dev));
  return fds_.back().get();
}

int MountPlan::sysfs_of(int netns_fd) {
  sys::EnterNetns in_netns(netns_fd);
  fds_.push_back(sys::make_filesystem("sysfs", {}, kReadOnlyAttrs | MOUNT_ATTR_NOEXEC));
  return fds_.back().get();
}

int MountPlan::detached_copy(const std::string& host_path, uint64_t attrs) {
  sys::UniqueFd fd = sys::clone_mount(host_path, true);
  sys::set_mount_attrs(fd.get(), attrs, 0, -1, true);
  fds_.push_back(std::move(fd));
  return fds_.back().get();
}

MountPlan MountPlan::for_box(const BoxSpec& spec) {
  using K = MountOp::Kind;
  MountPlan p;
  for (const auto& b : spec.rootfs.binds) {
    if (b.source.empty() || b.source[0] != '/' || b.target.empty() || b.target[0] != '/') {
      throw invalid_argument("bind " + b.source + " -> " + b.target +
                             ": both paths must be absolute");
    }
    struct stat st;
    if (::stat(b.source.c_str(), &st) != 0) throw_errno("bind source " + b.source);
    MountOp op{.kind = K::bind, .in_image = true, .target_is_file = !S_ISDIR(st.st_mode)};
    op.source = p.keep(b.source);
    op.source_fd = p.detached_copy(
        b.source, b.read_only ? kReadOnlyAttrs : MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    op.target = p.keep(relative(b.target));
    p.add(op);
  }
  p.add({.kind = K::filesystem,
         .in_image = true,
         .source = "proc",
         .target = "proc",
         .fstype = "proc",
         .flags = kNoSuidDevExec});
  if (spec.netns_fd < 0) {
    p.add({.kind = K::filesystem,
           .in_image = true,
           .source = "sysfs",
           .target = "sys",
           .fstype = "sysfs",
           .flags = MS_RDONLY | kNoSuidDevExec});
  } else {
    // A sysfs shows the network namespace of whoever mounts it, and only a user namespace owning
    // that namespace may: the box's root does not own a prepared one, so the host mounts it.
    p.add({.kind = K::bind,
           .in_image = true,
           .source = "sysfs",
           .source_fd = p.sysfs_of(spec.netns_fd),
           .target = "sys"});
  }

  // /dev: a small tmpfs made here, as the host's root, so that it can hold real device nodes
  // (a box could only bind them one by one); devpts and /dev/shm are the box's own.
  p.add({.kind = K::bind,
         .in_image = true,
         .source = "/dev",
         .source_fd = p.dev_tmpfs(spec.ids),
         .target = "dev"});
  p.add({.kind = K::filesystem,
         .source = "devpts",
         .target = "dev/pts",
         .fstype = "devpts",
         .flags = MS_NOSUID | MS_NOEXEC,
         .data = "newinstance,ptmxmode=0666,mode=0620,gid=5"});
  p.add({.kind = K::filesystem,
         .source = "tmpfs",
         .target = "dev/shm",
         .fstype = "tmpfs",
         .flags = kNoSuidDevExec,
         .data = "mode=1777,size=64m"});

  // /tmp: memory backed and charged to the box's memory limit.
  std::string tmp_opts = "mode=1777";
  if (spec.limits.memory_bytes) tmp_opts += ",size=" + std::to_string(spec.limits.memory_bytes);
  p.add({.kind = K::filesystem,
         .in_image = true,
         .source = "tmpfs",
         .target = "tmp",
         .fstype = "tmpfs",
         .flags = MS_NOSUID | MS_NODEV,
         .data = p.keep(tmp_opts)});

  // What runc masks: kernel memory, keys and timer internals read as empty...
  for (const char* f : {"proc/kcore", "proc/keys", "proc/timer_list", "proc/sched_debug",
                        "proc/latency_stats", "proc/timer_stats"}) {
    // (the box's own /dev/null, bound above)
    p.add({.kind = K::bind,
           .optional = true,
           .source = "dev/null",
           .target = f,
           .attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC});
  }
  // ...hardware directories are hidden under empty read-only tmpfs...
  for (const char* d :
       {"proc/acpi", "proc/asound", "proc/scsi", "sys/firmware", "sys/devices/virtual/powercap"}) {
    p.add({.kind = K::filesystem,
           .optional = true,
           .source = "tmpfs",
           .target = d,
           .fstype = "tmpfs",
           .flags = MS_RDONLY | kNoSuidDevExec,
           .data = "size=4k"});
  }
  // ...and kernel settings are read-only.
  for (const char* r : {"proc/bus", "proc/fs", "proc/irq", "proc/sys", "proc/sysrq-trigger"}) {
    p.add({.kind = K::readonly,
           .optional = true,
           .target = r,
           .attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC});
  }
  return p;
}

namespace {

// A file of /etc, straight into the writable layer: no file, mount or copy-up per box.
void write_etc_file(int upper, const std::string& name, const std::string& content) {
  if (content.empty()) return;
  if (::mkdirat(upper, "etc", 0755) != 0 && errno != EEXIST) throw_errno("mkdir /etc");
  sys::UniqueFd etc(::openat(upper, "etc", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!etc) throw_errno("open /etc of the writable layer");
  ::unlinkat(etc.get(), name.c_str(), 0);  // last start's, or a whiteout if the box deleted it
  sys::UniqueFd f(::openat(etc.get(), name.c_str(),
                           O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!f || !sys::write_all(f.get(), content)) throw_errno("writing /etc/" + name);
}

}  // namespace

sys::UniqueFd make_root_mount(const RootfsSpec& rootfs, const IdMapping& ids, int userns_fd,
                              const EtcFiles& etc_files) {
  if (rootfs.layers.empty()) throw invalid_argument("a box needs at least one image layer");
  auto idmapped = [&](const std::string& dir, uint64_t attrs) {
    sys::UniqueFd fd = sys::clone_mount(dir);
    try {
      sys::set_mount_attrs(fd.get(), attrs, 0, userns_fd);
    } catch (const Error& e) {
      throw Error(e.code(), "id-mapping " + dir + " failed (" + e.message() +
                                "); the state directory needs a filesystem with id-mapped mount "
                                "support such as ext4, xfs, btrfs or tmpfs");
    }
    return fd;
  };
  std::vector<sys::UniqueFd> layers;
  sys::OverlayLayers overlay;
  for (const auto& l : rootfs.layers) {
    layers.push_back(idmapped(l, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV));
    overlay.lower.push_back(layers.back().get());
  }
  // The mounts the upper directory comes from must stay open until the overlay exists: closing
  // a detached mount's last fd unmounts it.
  sys::UniqueFd upper, work, upper_mount;
  if (rootfs.ephemeral) {
    // In memory, owned by the box's root as seen from the host: no id-mapping needed.
    upper_mount =
        sys::make_tmpfs(rootfs.ephemeral_size, 0755, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID);
    for (const char* d : {"upper", "work"}) {
      if (::mkdirat(upper_mount.get(), d, 0755) != 0 ||
          ::fchownat(upper_mount.get(), d, ids.host_base, ids.host_base, 0) != 0) {
        throw_errno(std::string("making the in-memory writable layer: ") + d);
      }
    }
    upper = sys::UniqueFd(::openat(upper_mount.get(), "upper", O_PATH | O_DIRECTORY | O_CLOEXEC));
    work = sys::UniqueFd(::openat(upper_mount.get(), "work", O_PATH | O_DIRECTORY | O_CLOEXEC));
    overlay.volatile_upper = true;
  } else {
    auto [upper_parent, upper_name] = sys::split_parent(rootfs.upper);
    auto [work_parent, work_name] = sys::split_parent(rootfs.work);
    if (upper_parent != work_parent) {
      throw invalid_argument("the upper and work directories must be siblings");
    }
    upper_mount = idmapped(upper_parent, MOUNT_ATTR_NODEV);
    upper = sys::UniqueFd(
        ::openat(upper_mount.get(), upper_name.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    work = sys::UniqueFd(
        ::openat(upper_mount.get(), work_name.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  }
  if (!upper || !work) throw_errno("opening the writable layer");
  overlay.upper = upper.get();
  overlay.work = work.get();
  // Through an id-mapped upper layer only the box's ids can be written: overlayfs must create
  // its work files as the box's root (who also owns an in-memory one), and so do we.
  sys::ScopedFsCreds as_box_root(ids.host_base, ids.host_base);
  for (const auto& [name, content] : etc_files) write_etc_file(upper.get(), name, content);
  return sys::make_overlay(overlay);
}

// ---------------------------------------------------------------------------------------------
// Child

namespace {

using sys::raw::call;

constexpr size_t kPathMax = 4096;

// Checks that `op.target` (under rootfd) has no symlink on the way, creating the last
// component when it is missing. Returns 0, 1 when an optional target is missing, or -1.
int prepare_image_target(int rootfd, const MountOp& op, ChildFailure* f) {
  open_how how{};
  how.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  long fd = call(SYS_openat2, rootfd, op.target, &how, sizeof how);
  if (fd >= 0) {
    call(SYS_close, fd);
    return 0;
  }
  if (fd != -ENOENT) return child::fail(f, Step::mount, fd, op.target);  // ELOOP: a symlink
  if (op.optional) return 1;
  // Create the last component in its (symlink-free) parent.
  char parent[kPathMax];
  child::concat(parent, sizeof parent, op.target);
  const char* base = op.target;
  char* slash = nullptr;
  for (char* c = parent; *c; ++c) {
    if (*c == '/') slash = c;
  }
  long dirfd;
  if (slash) {
    *slash = 0;
    base = op.target + (slash - parent) + 1;
    dirfd = call(SYS_openat2, rootfd, parent, &how, sizeof how);
    if (dirfd < 0) return child::fail(f, Step::mount, dirfd, parent);
  } else {
    dirfd = call(SYS_dup, rootfd);
  }
  long rc;
  if (op.target_is_file) {
    rc = call(SYS_openat, dirfd, base, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (rc >= 0) call(SYS_close, rc);
  } else {
    rc = call(SYS_mkdirat, dirfd, base, 0755);
  }
  call(SYS_close, dirfd);
  if (rc < 0 && rc != -EEXIST) return child::fail(f, Step::mount, rc, op.target);
  return 0;
}

int set_attrs(const char* path, uint64_t attrs, const MountOp& op, ChildFailure* f) {
  if (!attrs) return 0;
  mount_attr attr{};
  attr.attr_set = attrs;
  long rc = call(SYS_mount_setattr, AT_FDCWD, path, AT_RECURSIVE, &attr, sizeof attr);
  if (rc < 0) return child::fail(f, Step::mount, rc, op.target);
  return 0;
}

// Runs one operation; the current directory is the box root and targets are relative to it.
int run_op(const MountOp& op, int rootfd, ChildFailure* f) {
  using K = MountOp::Kind;
  if (op.in_image) {
    int rc = prepare_image_target(rootfd, op, f);
    if (rc != 0) return rc < 0 ? -1 : 0;
  }
  const char* target = op.target;
  long rc = 0;
  switch (op.kind) {
    case K::bind:
      if (op.source_fd >= 0) {
        rc = call(SYS_move_mount, op.source_fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
        break;
      }
      rc = call(SYS_mount, op.source, target, 0, MS_BIND | MS_REC, 0);
      if (rc >= 0) return set_attrs(target, op.attrs, op, f);
      break;
    case K::filesystem:
      rc = call(SYS_mount, op.source, target, op.fstype, op.flags, op.data);
      break;
    case K::mkdir:
      rc = call(SYS_mkdirat, AT_FDCWD, target, op.flags);
      if (rc == -EEXIST) rc = 0;
      break;
    case K::file:
      rc =
          call(SYS_openat, AT_FDCWD, target, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, op.flags);
      if (rc >= 0) rc = call(SYS_close, rc);
      break;
    case K::symlink:
      rc = call(SYS_symlinkat, op.source, AT_FDCWD, target);
      if (rc == -EEXIST) rc = 0;
      break;
    case K::readonly:
      rc = call(SYS_mount, target, target, 0, MS_BIND | MS_REC, 0);
      if (rc >= 0) return set_attrs(target, op.attrs, op, f);
      break;
  }
  if (rc == -ENOENT && op.optional) return 0;
  if (rc < 0) return child::fail(f, Step::mount, rc, op.target);
  return 0;
}

}  // namespace

int child_attach_root(const ChildPlan& plan, int root_mount_fd, ChildFailure* f) {
  // Nothing we mount may propagate back to the host.
  long rc = call(SYS_mount, 0, "/", 0, MS_REC | MS_PRIVATE, 0);
  if (rc < 0) return child::fail(f, Step::private_mounts, rc, "/");
  rc = call(SYS_move_mount, root_mount_fd, "", AT_FDCWD, plan.root, MOVE_MOUNT_F_EMPTY_PATH);
  if (rc < 0) return child::fail(f, Step::attach_root, rc, plan.root);
  long rootfd = call(SYS_openat, AT_FDCWD, plan.root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) return child::fail(f, Step::attach_root, rootfd, plan.root);
  return static_cast<int>(rootfd);
}

int child_populate_root(const ChildPlan& plan, int rootfd, ChildFailure* f) {
  long rc = call(SYS_fchdir, rootfd);
  if (rc < 0) return child::fail(f, Step::attach_root, rc, "fchdir");
  for (size_t i = 0; i < plan.mount_count; ++i) {
    if (run_op(plan.mounts[i], rootfd, f) < 0) return -1;
  }
  // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only the
  // box's tree in this namespace.
  if ((rc = call(SYS_pivot_root, ".", ".")) < 0) return child::fail(f, Step::pivot_root, rc, ".");
  if ((rc = call(SYS_umount2, ".", MNT_DETACH)) < 0)
    return child::fail(f, Step::pivot_root, rc, "old root");
  if ((rc = call(SYS_chdir, "/")) < 0) return child::fail(f, Step::pivot_root, rc, "/");
  return 0;
}

}  // namespace pitbox::runtime::container
