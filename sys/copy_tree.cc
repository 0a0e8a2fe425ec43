#include "sys/copy_tree.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "sys/error.h"
#include "sys/fd.h"
#include "sys/fs.h"

namespace pitbox::sys {
namespace {

constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
// O_NONBLOCK: should a fifo take a file's place after it was looked at, opening it must not hang.
constexpr int kFileFlags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
// Recursion holds two fds and a stack frame per level; trees deeper than this are refused.
constexpr int kMaxDepth = 1024;

// statx of `name` in `dirfd`, or of `dirfd` itself when `name` is empty; never follows a symlink.
bool stat_at(int dirfd, const char* name, struct statx& st) {
  int flags = AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | (*name ? 0 : AT_EMPTY_PATH);
  return ::statx(dirfd, name, flags, STATX_BASIC_STATS | STATX_MNT_ID, &st) == 0;
}

dev_t dev_of(const struct statx& st) { return makedev(st.stx_dev_major, st.stx_dev_minor); }
std::pair<dev_t, uint64_t> inode_of(const struct statx& st) { return {dev_of(st), st.stx_ino}; }

// The mount a walk stays on: a different device, or the same one mounted again (a bind mount),
// is another tree.
struct Mount {
  dev_t dev;
  uint64_t mnt_id;  // 0 when the kernel does not report mount ids
  explicit Mount(const struct statx& root)
      : dev(dev_of(root)), mnt_id((root.stx_mask & STATX_MNT_ID) ? root.stx_mnt_id : 0) {}
  bool contains(const struct statx& st) const {
    if (dev_of(st) != dev) return false;
    return mnt_id == 0 || !(st.stx_mask & STATX_MNT_ID) || st.stx_mnt_id == mnt_id;
  }
};

// Opens without updating the source's access time when the caller may (the owner or root).
UniqueFd open_source(int dirfd, const char* name, int flags) {
  int fd = ::openat(dirfd, name, flags | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = ::openat(dirfd, name, flags);
  return UniqueFd(fd);
}

// One entry of a tree: an fd open on it (files and directories), or otherwise a name in an open
// directory (symlinks, devices, fifos and sockets, which cannot be opened for their attributes).
struct Entry {
  int fd = -1;
  int dirfd = -1;
  const char* name = nullptr;

  static Entry open(int fd) { return {fd, -1, nullptr}; }
  static Entry at(int dirfd, const char* name) { return {-1, dirfd, name}; }

  // Extended attributes of a named entry go through its directory's fd: the l*xattr calls follow
  // the /proc magic link to the directory but not the entry's own name.
  std::string proc_path() const { return "/proc/self/fd/" + std::to_string(dirfd) + "/" + name; }
  ssize_t list_xattrs(char* buf, size_t size) const {
    return fd >= 0 ? ::flistxattr(fd, buf, size) : ::llistxattr(proc_path().c_str(), buf, size);
  }
  ssize_t get_xattr(const char* key, void* buf, size_t size) const {
    return fd >= 0 ? ::fgetxattr(fd, key, buf, size)
                   : ::lgetxattr(proc_path().c_str(), key, buf, size);
  }
  int set_xattr(const char* key, const std::string& value) const {
    return fd >= 0 ? ::fsetxattr(fd, key, value.data(), value.size(), 0)
                   : ::lsetxattr(proc_path().c_str(), key, value.data(), value.size(), 0);
  }
  int remove_xattr(const char* key) const {
    return fd >= 0 ? ::fremovexattr(fd, key) : ::lremovexattr(proc_path().c_str(), key);
  }
  int chown(uid_t uid, gid_t gid) const {
    return fd >= 0 ? ::fchown(fd, uid, gid)
                   : ::fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW);
  }
  // Not for symlinks, whose mode Linux does not keep.
  int chmod(mode_t mode) const {
    return fd >= 0 ? ::fchmod(fd, mode) : ::fchmodat(dirfd, name, mode, 0);
  }
  int set_times(const struct timespec times[2]) const {
    return fd >= 0 ? ::futimens(fd, times) : ::utimensat(dirfd, name, times, AT_SYMLINK_NOFOLLOW);
  }
};

// The names of an entry's extended attributes (none where the filesystem keeps none).
std::vector<std::string> xattr_names(const Entry& e, const std::string& where) {
  std::string buf;
  for (;;) {
    ssize_t n = e.list_xattrs(nullptr, 0);
    if (n < 0) {
      if (errno == ENOTSUP) return {};
      throw_errno("list xattrs of " + where);
    }
    if (n == 0) return {};
    buf.resize(static_cast<size_t>(n));
    n = e.list_xattrs(buf.data(), buf.size());
    if (n >= 0) {
      buf.resize(static_cast<size_t>(n));
      break;
    }
    if (errno != ERANGE) throw_errno("list xattrs of " + where);  // ERANGE: one was added
  }
  std::vector<std::string> names;
  for (size_t pos = 0; pos < buf.size();) {
    size_t end = buf.find('\0', pos);
    if (end == std::string::npos) end = buf.size();
    if (end > pos) names.emplace_back(buf, pos, end - pos);
    pos = end + 1;
  }
  return names;
}

// The value of one extended attribute; nothing if it went away since it was listed.
std::optional<std::string> xattr_value(const Entry& e, const std::string& key,
                                       const std::string& where) {
  std::string value;
  for (;;) {
    ssize_t n = e.get_xattr(key.c_str(), nullptr, 0);
    if (n < 0) {
      if (errno == ENODATA) return std::nullopt;
      throw_errno("get xattr " + key + " of " + where);
    }
    value.resize(static_cast<size_t>(n));
    n = e.get_xattr(key.c_str(), value.data(), value.size());
    if (n >= 0) {
      value.resize(static_cast<size_t>(n));
      return value;
    }
    if (errno == ENODATA) return std::nullopt;
    if (errno != ERANGE) throw_errno("get xattr " + key + " of " + where);  // ERANGE: it grew
  }
}

// Removes the extended attributes a new entry got from where it was made (a default ACL's
// inherited entries, btrfs properties), keeping the labels a security module gives (security.*).
void drop_inherited_xattrs(const Entry& e, const std::string& where) {
  for (const auto& key : xattr_names(e, where)) {
    if (key.starts_with("security.")) continue;
    if (e.remove_xattr(key.c_str()) != 0 && errno != ENODATA) {
      throw_errno("remove xattr " + key + " of " + where);
    }
  }
}

// Copies the regular files, symlinks, devices, fifos, sockets and directories below one root.
class TreeCopier {
 public:
  TreeCopier(std::string source, std::string dest, const struct statx& source_root, int dest_root,
             const struct statx& dest_root_st)
      : source_(std::move(source)),
        dest_(std::move(dest)),
        mount_(source_root),
        dest_root_(dest_root),
        dest_root_inode_(inode_of(dest_root_st)) {}

  // Copies the entries of directory `src` into the new directory `dst`, then gives `dst` the
  // attributes `st` of `src` (its times last, after the entries made in it changed them).
  void copy_dir(int src, int dst, const struct statx& st, const std::string& rel, int depth) {
    std::vector<DirEntry> entries;
    try {
      entries = read_dir(src);
    } catch (const Error& e) {
      throw Error(e.code(), source_path(rel) + ": " + e.message(), e.details());
    }
    for (const auto& entry : entries) copy_entry(src, dst, entry.name, rel, depth);
    copy_attrs(Entry::open(src), Entry::open(dst), st, rel);
  }

  CopyStats stats() const {
    CopyStats out = stats_;
    out.reflinked = cloned_ && !copied_;
    return out;
  }

 private:
  std::string source_path(const std::string& rel) const {
    return rel.empty() ? source_ : join_path(source_, rel);
  }
  std::string dest_path(const std::string& rel) const {
    return rel.empty() ? dest_ : join_path(dest_, rel);
  }

  void copy_entry(int src_dir, int dst_dir, const std::string& name, const std::string& parent,
                  int depth) {
    std::string rel = parent.empty() ? name : parent + "/" + name;
    const char* n = name.c_str();
    struct statx st;
    if (!stat_at(src_dir, n, st)) {
      if (errno == ENOENT) return;  // removed since the directory was read
      throw_errno("stat " + source_path(rel));
    }
    if (!mount_.contains(st)) return;  // another filesystem mounted here: not part of the tree
    mode_t type = st.stx_mode & S_IFMT;
    if (type == S_IFDIR) {
      copy_subdir(src_dir, dst_dir, n, st, rel, depth);
      return;
    }
    // Hard links: the first name of an inode is copied, the others are linked to the copy.
    bool linked = st.stx_nlink > 1;
    if (linked) {
      auto it = links_.find(inode_of(st));
      if (it != links_.end()) {
        if (::linkat(dest_root_, it->second.c_str(), dst_dir, n, 0) != 0) {
          throw_errno("link " + dest_path(rel) + " to " + dest_path(it->second));
        }
        ++stats_.files;
        return;
      }
    }
    switch (type) {
      case S_IFREG:
        copy_file(src_dir, dst_dir, n, st, rel);
        break;
      case S_IFLNK:
        copy_symlink(src_dir, dst_dir, n, st, rel);
        break;
      case S_IFCHR:
      case S_IFBLK:
      case S_IFIFO:
      case S_IFSOCK: {
        // Overlayfs whiteouts are 0:0 character devices.
        dev_t rdev = makedev(st.stx_rdev_major, st.stx_rdev_minor);
        if (::mknodat(dst_dir, n, type | 0600, type == S_IFCHR || type == S_IFBLK ? rdev : 0) !=
            0) {
          throw_errno("mknod " + dest_path(rel));
        }
        copy_attrs(Entry::at(src_dir, n), Entry::at(dst_dir, n), st, rel);
        break;
      }
      default:
        throw Error(ErrorCode::internal, source_path(rel) + ": unknown file type");
    }
    ++stats_.files;
    if (linked) links_.emplace(inode_of(st), rel);
  }

  void copy_subdir(int src_dir, int dst_dir, const char* name, const struct statx& seen,
                   const std::string& rel, int depth) {
    UniqueFd src(open_source(src_dir, name, kDirFlags));
    if (!src) throw_errno("open " + source_path(rel));
    struct statx st;
    if (!stat_at(src.get(), "", st)) throw_errno("stat " + source_path(rel));
    if (inode_of(st) != inode_of(seen)) {
      throw Error(ErrorCode::conflict, source_path(rel) + " changed while being copied");
    }
    if (inode_of(st) == dest_root_inode_) {
      throw invalid_argument("cannot copy " + source_ + " into itself (" + dest_ + ")");
    }
    if (depth >= kMaxDepth) {
      throw Error(ErrorCode::resource_exhausted,
                  source_path(rel) + ": more than " + std::to_string(kMaxDepth) + " levels deep");
    }
    if (::mkdirat(dst_dir, name, 0700) != 0) throw_errno("mkdir " + dest_path(rel));
    UniqueFd dst(::openat(dst_dir, name, kDirFlags));
    if (!dst) throw_errno("open " + dest_path(rel));
    copy_dir(src.get(), dst.get(), st, rel, depth + 1);
  }

  void copy_file(int src_dir, int dst_dir, const char* name, const struct statx& seen,
                 const std::string& rel) {
    UniqueFd src(open_source(src_dir, name, kFileFlags));
    if (!src) throw_errno("open " + source_path(rel));
    struct statx st;
    if (!stat_at(src.get(), "", st)) throw_errno("stat " + source_path(rel));
    if (inode_of(st) != inode_of(seen) || !S_ISREG(st.stx_mode)) {
      throw Error(ErrorCode::conflict, source_path(rel) + " changed while being copied");
    }
    UniqueFd dst(
        ::openat(dst_dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!dst) throw_errno("create " + dest_path(rel));
    copy_data(src.get(), dst.get(), st, rel);
    stats_.bytes += st.stx_size;
    copy_attrs(Entry::open(src.get()), Entry::open(dst.get()), st, rel);
  }

  void copy_symlink(int src_dir, int dst_dir, const char* name, const struct statx& st,
                    const std::string& rel) {
    // st_size is the target's length on most filesystems; a longer target is read again.
    std::string target(std::max<size_t>(st.stx_size + 1, 256), '\0');
    for (;;) {
      ssize_t n = ::readlinkat(src_dir, name, target.data(), target.size());
      if (n < 0) throw_errno("readlink " + source_path(rel));
      if (static_cast<size_t>(n) < target.size()) {
        target.resize(static_cast<size_t>(n));
        break;
      }
      target.resize(target.size() * 2);
    }
    if (::symlinkat(target.c_str(), dst_dir, name) != 0) throw_errno("symlink " + dest_path(rel));
    copy_attrs(Entry::at(src_dir, name), Entry::at(dst_dir, name), st, rel);
  }

  // Owner first, since chown clears setuid/setgid and security.capability; then the extended
  // attributes, then the mode (an ACL just written would otherwise leave the group bits as its
  // mask), and the times last.
  void copy_attrs(const Entry& from, const Entry& to, const struct statx& st,
                  const std::string& rel) {
    if (to.chown(st.stx_uid, st.stx_gid) != 0) throw_errno("chown " + dest_path(rel));
    for (const auto& key : xattr_names(from, source_path(rel))) {
      auto value = xattr_value(from, key, source_path(rel));
      if (!value) continue;
      if (to.set_xattr(key.c_str(), *value) != 0) {
        throw_errno("set xattr " + key + " on " + dest_path(rel));
      }
    }
    if (!S_ISLNK(st.stx_mode) && to.chmod(st.stx_mode & 07777) != 0) {
      throw_errno("chmod " + dest_path(rel));
    }
    const struct timespec times[2] = {{st.stx_atime.tv_sec, st.stx_atime.tv_nsec},
                                      {st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec}};
    if (to.set_times(times) != 0) throw_errno("set times of " + dest_path(rel));
  }

  // Shares the data with FICLONE where the filesystem can; else copies the parts that hold data
  // (so holes stay holes) and sets the size.
  void copy_data(int from, int to, const struct statx& st, const std::string& rel) {
    if (st.stx_size == 0) return;
    if (try_clone_) {
      if (::ioctl(to, FICLONE, from) == 0) {
        cloned_ = true;
        return;
      }
      // Not on this filesystem (or not between these two): stop asking. EINVAL is about the one
      // file (btrfs will not clone between nodatasum and checksummed files).
      if (errno == EOPNOTSUPP || errno == ENOTTY || errno == EXDEV || errno == ENOSYS) {
        try_clone_ = false;
      }
      if (::ftruncate(to, 0) != 0) throw_errno("truncate " + dest_path(rel));
    }
    copied_ = true;
    const off_t size = static_cast<off_t>(st.stx_size);
    for (off_t pos = 0; pos < size;) {
      off_t data = ::lseek(from, pos, SEEK_DATA);
      off_t end = size;
      if (data < 0) {
        if (errno == ENXIO) break;  // only a hole is left
        if (errno != EINVAL) throw_errno("seek " + source_path(rel));
        data = pos;  // the filesystem knows no holes
      } else {
        end = ::lseek(from, data, SEEK_HOLE);
        if (end < 0) throw_errno("seek " + source_path(rel));
        end = std::min(end, size);
      }
      if (data >= end) break;
      if (!copy_range(from, to, data, end - data, rel)) break;
      pos = end;
    }
    if (::ftruncate(to, size) != 0) throw_errno("truncate " + dest_path(rel));
  }

  // Copies `len` bytes at `offset`; returns false if the source ended first (it shrank).
  bool copy_range(int from, int to, off_t offset, off_t len, const std::string& rel) {
    while (len > 0) {
      if (try_copy_range_) {
        loff_t in = offset, out = offset;
        ssize_t n = ::copy_file_range(from, &in, to, &out, static_cast<size_t>(len), 0);
        if (n == 0) return false;
        if (n > 0) {
          offset += n;
          len -= n;
          continue;
        }
        if (errno == EINTR) continue;
        if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
          throw_errno("copy " + source_path(rel) + " to " + dest_path(rel));
        }
        try_copy_range_ = false;
      }
      if (buffer_.empty()) buffer_.resize(1 << 20);
      ssize_t n = ::pread(from, buffer_.data(), std::min<size_t>(buffer_.size(), len), offset);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw_errno("read " + source_path(rel));
      }
      if (n == 0) return false;
      for (ssize_t done = 0; done < n;) {
        ssize_t w =
            ::pwrite(to, buffer_.data() + done, static_cast<size_t>(n - done), offset + done);
        if (w < 0) {
          if (errno == EINTR) continue;
          throw_errno("write " + dest_path(rel));
        }
        done += w;
      }
      offset += n;
      len -= n;
    }
    return true;
  }

  const std::string source_;
  const std::string dest_;
  const Mount mount_;
  const int dest_root_;
  const std::pair<dev_t, uint64_t> dest_root_inode_;  // never copied into itself
  // Source inodes with more than one name -> where their first name was copied, below dest.
  std::map<std::pair<dev_t, uint64_t>, std::string> links_;
  bool try_clone_ = true;
  bool try_copy_range_ = true;
  bool cloned_ = false;
  bool copied_ = false;
  std::vector<char> buffer_;
  CopyStats stats_;
};

// Adds up the blocks of the regular files below the directory `fd`.
class SizeWalk {
 public:
  explicit SizeWalk(const struct statx& root) : mount_(root) {}

  void add_dir(int fd, const std::string& where, int depth) {
    std::vector<DirEntry> entries;
    try {
      entries = read_dir(fd);
    } catch (const Error& e) {
      throw Error(e.code(), where + ": " + e.message(), e.details());
    }
    for (const auto& entry : entries) {
      const char* name = entry.name.c_str();
      std::string path = join_path(where, entry.name);
      struct statx st;
      if (!stat_at(fd, name, st)) {
        if (errno == ENOENT) continue;  // removed meanwhile
        throw_errno("stat " + path);
      }
      if (!mount_.contains(st)) continue;
      if (S_ISREG(st.stx_mode)) {
        add_file(st);
      } else if (S_ISDIR(st.stx_mode)) {
        if (depth >= kMaxDepth) {
          throw Error(ErrorCode::resource_exhausted,
                      path + ": more than " + std::to_string(kMaxDepth) + " levels deep");
        }
        UniqueFd child(::openat(fd, name, kDirFlags));
        if (!child) {
          if (errno == ENOENT) continue;
          throw_errno("open " + path);
        }
        add_dir(child.get(), path, depth + 1);
      }
    }
  }

  void add_file(const struct statx& st) {
    if (st.stx_nlink > 1 && !seen_.insert(inode_of(st)).second) return;
    bytes_ += st.stx_blocks * 512;
  }

  uint64_t bytes() const { return bytes_; }

 private:
  const Mount mount_;
  std::set<std::pair<dev_t, uint64_t>> seen_;  // inodes with more than one name, counted once
  uint64_t bytes_ = 0;
};

}  // namespace

CopyStats copy_tree(const std::string& source, const std::string& dest) {
  UniqueFd src(open_source(AT_FDCWD, source.c_str(), kDirFlags));
  if (!src) throw_errno("open " + source);
  struct statx src_st;
  if (!stat_at(src.get(), "", src_st)) throw_errno("stat " + source);

  auto [parent, name] = split_parent(dest);
  if (name.empty() || name == "." || name == ".." || name == "/") {
    throw invalid_argument("cannot copy a tree to " + dest);
  }
  UniqueFd parent_fd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!parent_fd) throw_errno("open " + parent);
  if (::mkdirat(parent_fd.get(), name.c_str(), 0700) != 0) throw_errno("mkdir " + dest);
  try {
    UniqueFd dst(::openat(parent_fd.get(), name.c_str(), kDirFlags));
    if (!dst) throw_errno("open " + dest);
    struct statx dst_st;
    if (!stat_at(dst.get(), "", dst_st)) throw_errno("stat " + dest);
    // Entries made below the root inherit nothing: each directory gets its own extended
    // attributes (a default ACL among them) only once its entries are made.
    drop_inherited_xattrs(Entry::open(dst.get()), dest);
    TreeCopier copier(source, dest, src_st, dst.get(), dst_st);
    copier.copy_dir(src.get(), dst.get(), src_st, "", 0);
    return copier.stats();
  } catch (...) {
    try {
      remove_tree_at(parent_fd.get(), name);
    } catch (...) {
      // The error that stopped the copy is the one to report.
    }
    throw;
  }
}

uint64_t tree_size(const std::string& path) {
  struct statx st;
  if (!stat_at(AT_FDCWD, path.c_str(), st)) throw_errno("stat " + path);
  SizeWalk walk(st);
  if (S_ISREG(st.stx_mode)) {
    walk.add_file(st);
  } else if (S_ISDIR(st.stx_mode)) {
    UniqueFd fd(::open(path.c_str(), kDirFlags));
    if (!fd) throw_errno("open " + path);
    walk.add_dir(fd.get(), path, 0);
  }
  return walk.bytes();
}

}  // namespace pitbox::sys
