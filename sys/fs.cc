#include "sys/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "sys/error.h"
#include "sys/random.h"

namespace pitbox::sys {

std::string read_fd(int fd, size_t limit) {
  // Reads straight into the string, growing it: no big stack buffer (fresh stack pages cost
  // page faults) and no copy.
  std::string out;
  size_t chunk = 4096;
  while (out.size() < limit) {
    size_t have = out.size();
    size_t want = std::min(chunk, limit - have);
    out.resize(have + want);
    ssize_t n = ::read(fd, out.data() + have, want);
    if (n < 0) {
      out.resize(have);
      if (errno == EINTR) continue;
      throw_errno("read");
    }
    out.resize(have + static_cast<size_t>(n));
    if (n == 0) break;
    chunk = std::min<size_t>(chunk * 2, 1 << 20);
  }
  return out;
}

std::string read_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  return read_fd(fd.get());
}

bool write_all(int fd, std::string_view data, bool no_sigpipe) {
  while (!data.empty()) {
    ssize_t n = no_sigpipe ? ::send(fd, data.data(), data.size(), MSG_NOSIGNAL)
                           : ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

bool read_exact(int fd, void* buf, size_t len) {
  auto* p = static_cast<char*>(buf);
  while (len > 0) {
    ssize_t n = ::read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

void write_file(const std::string& path, std::string_view data, mode_t mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) throw_errno("open " + path);
  if (!write_all(fd.get(), data)) throw_errno("write " + path);
}

void write_file_atomic(const std::string& path, std::string_view data, mode_t mode) {
  std::string tmp = path + ".tmp-" + random_base32(8);
  try {
    write_file(tmp, data, mode);
    if (::rename(tmp.c_str(), path.c_str()) != 0) throw_errno("rename " + tmp);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

std::vector<DirEntry> read_dir(int fd) {
  std::vector<DirEntry> out;
  if (::lseek(fd, 0, SEEK_SET) < 0) throw_errno("lseek directory");
  alignas(8) char buf[4096];
  for (;;) {
    long n = ::syscall(SYS_getdents64, fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("getdents64");
    }
    if (n == 0) break;
    for (long pos = 0; pos < n;) {
      auto* d = reinterpret_cast<struct dirent64*>(buf + pos);
      std::string_view name = d->d_name;
      if (name != "." && name != "..") out.push_back({std::string(name), d->d_type});
      pos += d->d_reclen;
    }
  }
  return out;
}

std::vector<DirEntry> read_dir(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return {};
    throw_errno("open " + path);
  }
  return read_dir(fd.get());
}

uint64_t file_size(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw_errno("stat " + path);
  return static_cast<uint64_t>(st.st_size);
}

bool exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

bool is_dir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool make_dirs(const std::string& path, mode_t mode) {
  if (path.empty()) return false;
  if (::mkdir(path.c_str(), mode) == 0) return true;
  if (errno == EEXIST) {
    if (is_dir(path)) return false;
    throw Error(ErrorCode::conflict, path + " exists and is not a directory");
  }
  if (errno != ENOENT) throw_errno("mkdir " + path);
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos || slash == 0) throw_errno("mkdir " + path);
  make_dirs(path.substr(0, slash), mode);
  if (::mkdir(path.c_str(), mode) == 0) return true;
  if (errno == EEXIST && is_dir(path)) return false;
  throw_errno("mkdir " + path);
}

namespace {

// Removes everything inside the directory `fd` (which lives on device `dev`).
// Trees deeper than this are flattened rather than followed down: one open fd per level, and a
// box could nest directories deeper than any fd limit.
constexpr int kMaxOpenDepth = 32;

struct Removal {
  int top;    // the tree's root, where too-deep directories are moved
  dev_t dev;  // the filesystem it must not leave
  unsigned moved = 0;
};

// Removes everything inside the directory `fd`.
void empty_dir(Removal& r, int fd, const std::string& where, int depth) {
  // Read the names first (unlinking while reading a directory may skip entries), and read again
  // until the directory is empty.
  for (;;) {
    std::vector<DirEntry> entries = read_dir(fd);
    if (entries.empty()) return;
    for (const auto& entry : entries) {
      const std::string& name = entry.name;
      if (::unlinkat(fd, name.c_str(), 0) == 0 || errno == ENOENT) continue;
      if (errno != EISDIR && errno != EPERM) throw_errno("unlink " + where + "/" + name);
      if (depth >= kMaxOpenDepth) {
        // Moved up to the root of the tree; the loop there gets to it.
        std::string up = ".pitbox-deep-" + std::to_string(r.moved++);
        if (::renameat(fd, name.c_str(), r.top, up.c_str()) == 0) continue;
      }
      UniqueFd child(::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!child) throw_errno("open " + where + "/" + name);
      struct stat st;
      if (::fstat(child.get(), &st) != 0) throw_errno("stat " + where + "/" + name);
      if (st.st_dev != r.dev) {
        throw Error(ErrorCode::conflict, "refusing to remove " + where + "/" + name +
                                             ": another filesystem is mounted there");
      }
      // Directories left with no permissions (overlayfs work dirs) must be opened up first.
      if ((st.st_mode & 0700) != 0700) ::fchmod(child.get(), 0700);
      empty_dir(r, child.get(), where + "/" + name, depth + 1);
      if (::unlinkat(fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
        throw_errno("rmdir " + where + "/" + name);
      }
    }
  }
}

}  // namespace

void remove_tree_at(int dirfd, const std::string& name) {
  if (::unlinkat(dirfd, name.c_str(), 0) == 0 || errno == ENOENT) return;
  if (errno != EISDIR && errno != EPERM) throw_errno("unlink " + name);
  UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return;
    throw_errno("open " + name);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) throw_errno("stat " + name);
  if ((st.st_mode & 0700) != 0700) ::fchmod(fd.get(), 0700);
  Removal r{fd.get(), st.st_dev};
  empty_dir(r, fd.get(), name, 0);
  fd.reset();
  if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
    throw_errno("rmdir " + name);
  }
}

void remove_tree(const std::string& path) {
  auto [parent, name] = split_parent(path);
  UniqueFd dir(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) {
    if (errno == ENOENT) return;
    throw_errno("open " + parent);
  }
  remove_tree_at(dir.get(), name);
}

UniqueFd open_in_root(int rootfd, std::string_view path, int flags, mode_t mode) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  std::string p(path.empty() ? std::string_view(".") : path);
  for (;;) {
    long fd = ::syscall(SYS_openat2, rootfd, p.c_str(), &how, sizeof how);
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    // openat2 asks to retry when a rename raced with the lookup.
    if (errno != EAGAIN && errno != EINTR) return UniqueFd();
  }
}

std::pair<std::string, std::string> split_parent(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  auto slash = path.find_last_of('/');
  if (slash == std::string_view::npos) return {".", std::string(path)};
  std::string parent(path.substr(0, slash));
  if (parent.empty()) parent = "/";
  return {parent, std::string(path.substr(slash + 1))};
}

std::string join_path(std::string_view a, std::string_view b) {
  std::string out(a);
  while (!out.empty() && out.back() == '/') out.pop_back();
  while (!b.empty() && b.front() == '/') b.remove_prefix(1);
  out += '/';
  out += b;
  return out;
}

}  // namespace pitbox::sys
