#include "sys/btrfs.h"

#include <endian.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <linux/magic.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

#include "sys/error.h"
#include "sys/fd.h"
#include "sys/fs.h"
#include "sys/loop.h"
#include "sys/process.h"

extern char** environ;

namespace pitbox::sys::btrfs {
namespace {

// Where a btrfs superblock keeps its magic in the device (the primary copy at 64 KiB).
constexpr off_t kSuperblockMagicOffset = 65536 + 64;
constexpr std::string_view kSuperblockMagic = "_BHRfS_M";

// Where btrfs-progs puts mkfs.btrfs; the daemon's PATH may lack the sbin directories.
constexpr std::array<const char*, 4> kMkfsPaths = {"/usr/sbin/mkfs.btrfs", "/sbin/mkfs.btrfs",
                                                   "/usr/bin/mkfs.btrfs", "/bin/mkfs.btrfs"};
// How much of mkfs.btrfs's output an error message keeps.
constexpr size_t kOutputLimit = 4096;

// Throws for a failed btrfs ioctl; ENOTTY means the fd was not on btrfs.
[[noreturn]] void throw_ioctl(const std::string& what) {
  int err = errno;
  if (err == ENOTTY) {
    throw Error(ErrorCode::invalid_argument, what + ": not on a btrfs filesystem",
                {{"errno", err}});
  }
  throw_errno(what, err);
}

UniqueFd open_dir(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  return fd;
}

// The parent directory and last component of `path`, which must name a possible subvolume.
std::pair<std::string, std::string> split_subvolume_path(const std::string& path, size_t max_name) {
  auto [parent, name] = split_parent(path);
  if (name.empty() || name == "." || name == ".." || name == "/") {
    throw invalid_argument("not a usable subvolume path: " + path);
  }
  if (name.size() > max_name) throw invalid_argument("subvolume name too long: " + path);
  return {parent, name};
}

// Throws unless the directory open at `fd` is the root of a subvolume.
void require_subvolume_root(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno("stat " + path);
  if (st.st_ino != BTRFS_FIRST_FREE_OBJECTID) {
    throw invalid_argument(path + " is not a btrfs subvolume");
  }
}

uint64_t tree_id(int fd, const std::string& path) {
  btrfs_ioctl_ino_lookup_args args{};
  args.treeid = 0;  // in: "the tree of this fd"; out: its id
  args.objectid = BTRFS_FIRST_FREE_OBJECTID;
  if (::ioctl(fd, BTRFS_IOC_INO_LOOKUP, &args) != 0) throw_ioctl("find the subvolume of " + path);
  return args.treeid;
}

uint64_t get_flags(int fd, const std::string& path) {
  uint64_t flags = 0;
  if (::ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags) != 0) {
    throw_ioctl("get the flags of subvolume " + path);
  }
  return flags;
}

void set_flags(int fd, uint64_t flags, const std::string& path) {
  if (::ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, &flags) != 0) {
    throw_ioctl("set the flags of subvolume " + path);
  }
}

// Throws for a failed quota ioctl: without quota the kernel answers ENOTCONN ("Transport
// endpoint is not connected") or, for the quota tree, ENOENT.
[[noreturn]] void throw_quota(const std::string& what) {
  int err = errno;
  if (err == ENOTCONN || err == ENOENT) {
    throw Error(ErrorCode::unavailable, what + ": quota is not enabled on this filesystem",
                {{"errno", err}});
  }
  errno = err;
  throw_ioctl(what);
}

// Whether `path` is the root of a mount (STATX_ATTR_MOUNT_ROOT: Linux 5.8, older than the
// mount API pitbox needs anyway). A btrfs subvolume has its own st_dev but is no mount root.
bool is_mount_point(const std::string& path) {
  struct statx stx {};
  if (::statx(AT_FDCWD, path.c_str(), AT_NO_AUTOMOUNT, 0, &stx) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return false;
    throw_errno("statx " + path);
  }
  if (!(stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)) {
    throw Error(ErrorCode::unavailable, "this kernel cannot tell whether " + path +
                                            " is a mount point (no STATX_ATTR_MOUNT_ROOT)");
  }
  return (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
}

// Runs a program with stdin from /dev/null and returns its exit status and the start of what
// it wrote to stdout and stderr.
std::pair<ExitStatus, std::string> run(const std::vector<std::string>& argv) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  UniqueFd r(fds[0]), w(fds[1]);
  posix_spawn_file_actions_t actions;
  if (int rc = ::posix_spawn_file_actions_init(&actions); rc != 0) {
    throw_errno("posix_spawn_file_actions_init", rc);
  }
  ::posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  ::posix_spawn_file_actions_adddup2(&actions, w.get(), 1);
  ::posix_spawn_file_actions_adddup2(&actions, w.get(), 2);
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  ::posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw_errno("run " + argv[0], rc);
  w.reset();
  std::string output;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(r.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    // Keep reading past the limit: a child blocked on a full pipe would never exit.
    if (output.size() < kOutputLimit) output.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw_errno("waitpid " + argv[0]);
  }
  if (output.size() > kOutputLimit) output.resize(kOutputLimit);
  return {ExitStatus::from_wait_status(status), output};
}

// Formats `file` as btrfs, with mkfs.btrfs's own words in the error when it refuses.
void format(const std::string& file, const std::string& shown_as) {
  const char* mkfs = nullptr;
  for (const char* candidate : kMkfsPaths) {
    if (::access(candidate, X_OK) == 0) {
      mkfs = candidate;
      break;
    }
  }
  if (!mkfs) {
    throw Error(ErrorCode::unavailable,
                "format " + shown_as + ": mkfs.btrfs not found (install btrfs-progs)");
  }
  auto [status, output] = run({mkfs, "-q", file});
  if (status.code == 0 && status.signal == 0) return;
  while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
  for (char& c : output) {
    if (c == '\n') c = ' ';
  }
  throw Error(ErrorCode::invalid_argument, "mkfs.btrfs " + shown_as + " failed (" +
                                               status.describe() + ")" +
                                               (output.empty() ? "" : ": " + output));
}

// Creates `file`, `size` bytes, sparse, formatted as btrfs. It appears under its name only
// once formatted, so a crash never leaves an unformatted image behind for the next mount.
void create_image(const std::string& file, uint64_t size) {
  if (size == 0) throw invalid_argument("a btrfs pool needs a size");
  make_dirs(split_parent(file).first);
  std::string tmp = file + ".new-XXXXXX";
  UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd) throw_errno("create " + tmp);
  try {
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
      throw_errno("size " + file + " to " + std::to_string(size) + " bytes");
    }
    fd.reset();
    format(tmp, file);
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, file.c_str(), RENAME_NOREPLACE) != 0) {
      throw_errno("rename " + tmp + " to " + file);
    }
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

// Throws unless `file` starts like a btrfs filesystem: mounting anything else only says EINVAL.
void require_btrfs_image(const std::string& file) {
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + file);
  char magic[kSuperblockMagic.size()] = {};
  ssize_t n = ::pread(fd.get(), magic, sizeof magic, kSuperblockMagicOffset);
  if (n < 0) throw_errno("read " + file);
  if (std::string_view(magic, static_cast<size_t>(n)) != kSuperblockMagic) {
    throw invalid_argument(file + " exists but holds no btrfs filesystem");
  }
}

}  // namespace

bool is_btrfs(const std::string& path) {
  struct statfs st {};
  if (::statfs(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return false;
    throw_errno("statfs " + path);
  }
  return static_cast<unsigned long>(st.f_type) == BTRFS_SUPER_MAGIC;
}

bool is_subvolume(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return false;
    throw_errno("stat " + path);
  }
  return S_ISDIR(st.st_mode) && st.st_ino == BTRFS_FIRST_FREE_OBJECTID && is_btrfs(path);
}

uint64_t subvolume_id(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  return tree_id(fd.get(), path);
}

void create_subvolume(const std::string& path) {
  auto [parent, name] = split_subvolume_path(path, BTRFS_PATH_NAME_MAX);
  UniqueFd dir = open_dir(parent);
  btrfs_ioctl_vol_args args{};
  std::memcpy(args.name, name.data(), name.size());
  if (::ioctl(dir.get(), BTRFS_IOC_SUBVOL_CREATE, &args) != 0) {
    throw_ioctl("create subvolume " + path);
  }
}

void snapshot(const std::string& source, const std::string& dest, bool read_only) {
  UniqueFd src = open_dir(source);
  // The kernel snapshots the subvolume holding any directory it is given: refuse the mistake.
  require_subvolume_root(src.get(), source);
  auto [parent, name] = split_subvolume_path(dest, BTRFS_SUBVOL_NAME_MAX);
  UniqueFd dir = open_dir(parent);
  btrfs_ioctl_vol_args_v2 args{};
  args.fd = src.get();
  args.flags = read_only ? BTRFS_SUBVOL_RDONLY : 0;
  std::memcpy(args.name, name.data(), name.size());
  if (::ioctl(dir.get(), BTRFS_IOC_SNAP_CREATE_V2, &args) != 0) {
    throw_ioctl("snapshot " + source + " as " + dest);
  }
}

void delete_subvolume(const std::string& path) {
  auto [parent, name] = split_subvolume_path(path, BTRFS_SUBVOL_NAME_MAX);
  UniqueFd dir(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) {
    if (errno == ENOENT) return;
    throw_errno("open " + parent);
  }
  UniqueFd sub(::openat(dir.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!sub) {
    if (errno == ENOENT) return;
    throw_errno("open " + path);
  }
  require_subvolume_root(sub.get(), path);
  // Deleting a read-only subvolume is refused (EPERM) until it is made writable.
  uint64_t flags = get_flags(sub.get(), path);
  bool was_read_only = flags & BTRFS_SUBVOL_RDONLY;
  if (was_read_only) set_flags(sub.get(), flags & ~BTRFS_SUBVOL_RDONLY, path);

  btrfs_ioctl_vol_args_v2 args{};
  std::memcpy(args.name, name.data(), name.size());
  int rc = ::ioctl(dir.get(), BTRFS_IOC_SNAP_DESTROY_V2, &args);
  if (rc != 0 && errno == ENOTTY) {  // before Linux 5.7
    btrfs_ioctl_vol_args old{};
    std::memcpy(old.name, name.data(), name.size());
    rc = ::ioctl(dir.get(), BTRFS_IOC_SNAP_DESTROY, &old);
  }
  if (rc != 0) {
    int err = errno;
    if (was_read_only) {
      try {
        set_flags(sub.get(), flags, path);
      } catch (const Error&) {
        // The deletion's error is the one to report.
      }
    }
    errno = err;
    throw_ioctl("delete subvolume " + path);
  }
}

void set_read_only(const std::string& path, bool read_only) {
  UniqueFd fd = open_dir(path);
  uint64_t flags = get_flags(fd.get(), path);
  uint64_t wanted =
      read_only ? (flags | BTRFS_SUBVOL_RDONLY) : (flags & ~uint64_t{BTRFS_SUBVOL_RDONLY});
  if (wanted != flags) set_flags(fd.get(), wanted, path);
}

bool is_read_only(const std::string& path) {
  UniqueFd fd = open_dir(path);
  return get_flags(fd.get(), path) & BTRFS_SUBVOL_RDONLY;
}

void enable_quota(const std::string& path) {
  UniqueFd fd = open_dir(path);
  btrfs_ioctl_quota_ctl_args args{};
  args.cmd = BTRFS_QUOTA_CTL_ENABLE;
  if (::ioctl(fd.get(), BTRFS_IOC_QUOTA_CTL, &args) != 0) {
    throw_ioctl("enable quota on " + path);
  }
  // Enabling starts a rescan of what exists; its numbers are wrong until it ends.
  if (::ioctl(fd.get(), BTRFS_IOC_QUOTA_RESCAN_WAIT) != 0) {
    throw_ioctl("wait for the quota rescan of " + path);
  }
}

void set_size_limit(const std::string& subvolume, uint64_t bytes) {
  UniqueFd fd = open_dir(subvolume);
  require_subvolume_root(fd.get(), subvolume);
  btrfs_ioctl_qgroup_limit_args args{};
  args.qgroupid = tree_id(fd.get(), subvolume);  // level 0: the qgroup id is the subvolume id
  args.lim.flags = BTRFS_QGROUP_LIMIT_MAX_RFER;
  args.lim.max_rfer = bytes ? bytes : UINT64_MAX;  // all ones clears the limit
  if (::ioctl(fd.get(), BTRFS_IOC_QGROUP_LIMIT, &args) != 0) {
    throw_quota("limit the size of " + subvolume);
  }
}

uint64_t referenced_bytes(const std::string& subvolume) {
  UniqueFd fd = open_dir(subvolume);
  require_subvolume_root(fd.get(), subvolume);
  uint64_t id = tree_id(fd.get(), subvolume);
  // qgroup numbers change when a transaction commits.
  if (::ioctl(fd.get(), BTRFS_IOC_SYNC) != 0) throw_ioctl("sync " + subvolume);
  btrfs_ioctl_search_args args{};
  args.key.tree_id = BTRFS_QUOTA_TREE_OBJECTID;
  args.key.min_objectid = args.key.max_objectid = 0;
  args.key.min_type = args.key.max_type = BTRFS_QGROUP_INFO_KEY;
  args.key.min_offset = args.key.max_offset = id;
  args.key.max_transid = UINT64_MAX;
  args.key.nr_items = 1;
  std::string what = "read the quota usage of " + subvolume;
  if (::ioctl(fd.get(), BTRFS_IOC_TREE_SEARCH, &args) != 0) throw_quota(what);
  if (args.key.nr_items == 0) throw not_found(what + ": it has no qgroup");
  btrfs_ioctl_search_header header{};
  std::memcpy(&header, args.buf, sizeof header);
  btrfs_qgroup_info_item item{};
  if (header.type != BTRFS_QGROUP_INFO_KEY || header.offset != id || header.len < sizeof item) {
    throw internal_error(what + ": unexpected item in the quota tree");
  }
  std::memcpy(&item, args.buf + sizeof header, sizeof item);
  return le64toh(item.rfer);
}

void mount_pool(const PoolOptions& options) {
  const std::string& file = options.file;
  const std::string& mountpoint = options.mountpoint;
  if (file.empty() || mountpoint.empty()) {
    throw invalid_argument("a btrfs pool needs a file and a mountpoint");
  }
  make_dirs(mountpoint);
  // One caller at a time per mountpoint. A caller that waited here finds the pool mounted:
  // the lock is on the directory underneath, the check below looks at the path.
  UniqueFd lock = open_dir(mountpoint);
  while (::flock(lock.get(), LOCK_EX) != 0) {
    if (errno != EINTR) throw_errno("lock " + mountpoint);
  }
  if (is_mount_point(mountpoint)) {
    if (is_btrfs(mountpoint)) return;
    throw Error(ErrorCode::conflict, mountpoint + " already has another filesystem mounted");
  }

  bool created = false;
  if (!exists(file)) {
    create_image(file, options.size);
    created = true;
  }
  try {
    if (!created) require_btrfs_image(file);
    // A second loop device on the same file would be a second filesystem writing into it
    // (btrfs gives cloned devices a temporary fsid): reuse the one that is there.
    std::optional<LoopDevice> loop;
    std::string dev;
    if (auto existing = loop_devices_of(file); !existing.empty()) {
      dev = existing.front();
    } else {
      loop = LoopDevice::attach(file);
      dev = loop->path();
    }
    if (::mount(dev.c_str(), mountpoint.c_str(), "btrfs", 0, nullptr) != 0) {
      int err = errno;
      if (loop) {
        try {
          loop->detach();
        } catch (const Error&) {
          // Closing it still frees it (LO_FLAGS_AUTOCLEAR); the mount's error matters more.
        }
      }
      throw_errno("mount " + dev + " (" + file + ") on " + mountpoint, err);
    }
    // `loop` closes here; the mount holds the device, which frees itself after the unmount.
  } catch (...) {
    if (created) ::unlink(file.c_str());
    throw;
  }
}

void unmount_pool(const std::string& mountpoint) {
  if (!is_mount_point(mountpoint)) return;
  if (!is_btrfs(mountpoint)) {
    throw invalid_argument(mountpoint + " is a mount point but not a btrfs pool");
  }
  if (::umount2(mountpoint.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0 && errno != EINVAL) {
    throw_errno("unmount " + mountpoint);
  }
}

}  // namespace pitbox::sys::btrfs
