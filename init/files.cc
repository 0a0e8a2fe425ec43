#include "init/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "proto/messages.h"
#include "sys/error.h"
#include "sys/fs.h"

namespace pitbox::init {

using nlohmann::json;

namespace {

constexpr size_t kDefaultListLimit = 1000;
constexpr size_t kMaxListLimit = 10000;

std::string required_path(const json& req, const char* key = "path") {
  auto it = req.find(key);
  if (it == req.end() || !it->is_string() || it->get<std::string>().empty()) {
    throw invalid_argument(std::string("\"") + key + "\" must be a non-empty string");
  }
  std::string p = it->get<std::string>();
  if (p.find('\0') != std::string::npos)
    throw invalid_argument(std::string("\"") + key + "\" contains a NUL byte");
  return clean_path(p);
}

uint32_t mode_of(const json& req, uint32_t fallback) {
  auto it = req.find("mode");
  if (it == req.end() || it->is_null()) return fallback;
  if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > 07777) {
    throw invalid_argument("\"mode\" must be a number from 0 to 07777");
  }
  return it->get<uint32_t>();
}

[[noreturn]] void fail(const std::string& what, const std::string& path, int err = errno) {
  if (err == ENOENT) throw not_found(what + " " + path + ": no such file or directory");
  throw_errno(what + " " + path, err);
}

sys::UniqueFd open_path(int rootfd, const std::string& path, int flags, const char* what) {
  sys::UniqueFd fd = sys::open_in_root(rootfd, path, flags);
  if (!fd) fail(what, path);
  return fd;
}

// The directory that holds `path`, and the name in it. Refuses "/".
std::pair<sys::UniqueFd, std::string> open_parent(int rootfd, const std::string& path,
                                                  const char* what) {
  if (path == "/") throw invalid_argument(std::string(what) + ": not allowed on /");
  auto [parent, name] = sys::split_parent(path);
  return {open_path(rootfd, parent, O_PATH | O_DIRECTORY, what), name};
}

std::string type_name(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return "file";
    case S_IFDIR:
      return "dir";
    case S_IFLNK:
      return "symlink";
    case S_IFIFO:
      return "fifo";
    case S_IFSOCK:
      return "socket";
    case S_IFCHR:
      return "char";
    case S_IFBLK:
      return "block";
  }
  return "unknown";
}

proto::FileInfo info_of(const struct stat& st, const std::string& name) {
  proto::FileInfo f;
  f.name = name;
  f.type = type_name(st.st_mode);
  f.mode = st.st_mode & 07777;
  f.size = static_cast<uint64_t>(st.st_size);
  f.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  f.uid = st.st_uid;
  f.gid = st.st_gid;
  return f;
}

std::string read_link_at(int dirfd, const char* name) {
  char buf[4096];
  ssize_t n = ::readlinkat(dirfd, name, buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

json do_stat(int rootfd, const json& req) {
  std::string path = required_path(req);
  bool follow = req.value("follow", false);
  sys::UniqueFd fd = open_path(rootfd, path, O_PATH | (follow ? 0 : O_NOFOLLOW), "stat");
  struct stat st;
  if (::fstatat(fd.get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) fail("stat", path);
  proto::FileInfo info = info_of(st, sys::split_parent(path).second);
  if (S_ISLNK(st.st_mode)) info.target = read_link_at(fd.get(), "");
  json out = info;
  out["path"] = path;
  return out;
}

json do_list(int rootfd, const json& req) {
  std::string path = required_path(req);
  size_t limit = req.value("limit", kDefaultListLimit);
  if (limit == 0 || limit > kMaxListLimit) {
    throw invalid_argument("\"limit\" must be from 1 to " + std::to_string(kMaxListLimit));
  }
  std::string after = req.value("after", std::string());
  sys::UniqueFd fd = open_path(rootfd, path, O_RDONLY | O_DIRECTORY, "list");
  std::vector<std::string> names;
  for (auto& e : sys::read_dir(fd.get())) {
    if (!after.empty() && e.name <= after) continue;
    names.push_back(std::move(e.name));
  }
  std::sort(names.begin(), names.end());
  bool more = names.size() > limit;
  if (more) names.resize(limit);
  json entries = json::array();
  for (const auto& n : names) {
    struct stat st;
    if (::fstatat(fd.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // raced away
    proto::FileInfo info = info_of(st, n);
    if (S_ISLNK(st.st_mode)) info.target = read_link_at(fd.get(), n.c_str());
    entries.push_back(info);
  }
  json out = {{"path", path}, {"entries", entries}};
  out["next"] = more ? json(names.back()) : json(nullptr);
  return out;
}

json do_mkdir(int rootfd, const json& req) {
  std::string path = required_path(req);
  uint32_t mode = mode_of(req, 0755);
  bool parents = req.value("parents", false);
  std::vector<std::string> todo;
  if (parents) {
    for (size_t pos = path.find('/', 1); pos != std::string::npos; pos = path.find('/', pos + 1)) {
      todo.push_back(path.substr(0, pos));
    }
  }
  todo.push_back(path);
  for (const auto& p : todo) {
    auto [dir, name] = open_parent(rootfd, p, "mkdir");
    if (::mkdirat(dir.get(), name.c_str(), mode) == 0) continue;
    if (errno == EEXIST && (parents || p != path)) {
      struct stat st;
      if (::fstatat(dir.get(), name.c_str(), &st, 0) == 0 && S_ISDIR(st.st_mode)) continue;
      throw Error(ErrorCode::conflict, "mkdir " + p + ": exists and is not a directory");
    }
    if (errno == EEXIST) throw Error(ErrorCode::conflict, "mkdir " + p + ": already exists");
    fail("mkdir", p);
  }
  return {{"path", path}};
}

json do_remove(int rootfd, const json& req) {
  std::string path = required_path(req);
  bool recursive = req.value("recursive", false);
  auto [dir, name] = open_parent(rootfd, path, "remove");
  if (::unlinkat(dir.get(), name.c_str(), 0) == 0) return {{"path", path}};
  if (errno != EISDIR) fail("remove", path);
  if (recursive) {
    sys::remove_tree_at(dir.get(), name);
  } else if (::unlinkat(dir.get(), name.c_str(), AT_REMOVEDIR) != 0) {
    if (errno == ENOTEMPTY || errno == EEXIST) {
      throw Error(ErrorCode::conflict, "remove " + path + ": directory not empty (use recursive)");
    }
    fail("remove", path);
  }
  return {{"path", path}};
}

json do_rename(int rootfd, const json& req) {
  std::string from = required_path(req, "from");
  std::string to = required_path(req, "to");
  auto [fdir, fname] = open_parent(rootfd, from, "rename");
  auto [tdir, tname] = open_parent(rootfd, to, "rename");
  unsigned flags = req.value("overwrite", true) ? 0 : RENAME_NOREPLACE;
  if (::renameat2(fdir.get(), fname.c_str(), tdir.get(), tname.c_str(), flags) != 0) {
    if (errno == EEXIST) throw Error(ErrorCode::conflict, "rename: " + to + " already exists");
    if (errno == ENOENT) throw not_found("rename " + from + ": no such file or directory");
    throw_errno("rename " + from + " to " + to);
  }
  return {{"from", from}, {"to", to}};
}

json do_chmod(int rootfd, const json& req) {
  std::string path = required_path(req);
  if (req.find("mode") == req.end()) throw invalid_argument("chmod: \"mode\" is required");
  uint32_t mode = mode_of(req, 0);
  sys::UniqueFd fd = open_path(rootfd, path, O_PATH, "chmod");
  // fchmodat2 (Linux 6.6) works on O_PATH fds; older kernels go through /proc/self/fd.
  if (::syscall(452 /* fchmodat2 */, fd.get(), "", mode, AT_EMPTY_PATH) != 0) {
    if (errno != ENOSYS && errno != EINVAL) fail("chmod", path);
    std::string proc = "/proc/self/fd/" + std::to_string(fd.get());
    if (::chmod(proc.c_str(), mode) != 0) fail("chmod", path);
  }
  return {{"path", path}, {"mode", mode}};
}

json do_chown(int rootfd, const json& req) {
  std::string path = required_path(req);
  auto id = [&](const char* key) -> int64_t {
    auto it = req.find(key);
    if (it == req.end() || it->is_null()) return -1;
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > 0xfffffffe) {
      throw invalid_argument(std::string("\"") + key + "\" must be a uid/gid number");
    }
    return it->get<int64_t>();
  };
  int64_t uid = id("uid"), gid = id("gid");
  sys::UniqueFd fd = open_path(rootfd, path, O_PATH | O_NOFOLLOW, "chown");
  if (::fchownat(fd.get(), "", static_cast<uid_t>(uid), static_cast<gid_t>(gid),
                 AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
    fail("chown", path);
  }
  return {{"path", path}};
}

}  // namespace

std::string clean_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string::npos) end = path.size();
    std::string part = path.substr(pos, end - pos);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(std::move(part));
    }
    pos = end + 1;
  }
  std::string out;
  for (const auto& p : parts) out += "/" + p;
  return out.empty() ? "/" : out;
}

bool is_file_operation(const std::string& op) {
  return op == "stat" || op == "list" || op == "mkdir" || op == "remove" || op == "rename" ||
         op == "chmod" || op == "chown";
}

json file_operation(int rootfd, const std::string& op, const json& request) {
  if (op == "stat") return do_stat(rootfd, request);
  if (op == "list") return do_list(rootfd, request);
  if (op == "mkdir") return do_mkdir(rootfd, request);
  if (op == "remove") return do_remove(rootfd, request);
  if (op == "rename") return do_rename(rootfd, request);
  if (op == "chmod") return do_chmod(rootfd, request);
  if (op == "chown") return do_chown(rootfd, request);
  throw invalid_argument("unknown file operation \"" + op + "\"");
}

sys::UniqueFd open_for_read(int rootfd, const json& request, json& reply) {
  std::string path = required_path(request);
  sys::UniqueFd fd = open_path(rootfd, path, O_RDONLY | O_NOCTTY | O_NONBLOCK, "read");
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) fail("read", path);
  if (S_ISDIR(st.st_mode)) throw invalid_argument("read " + path + ": is a directory");
  if (!S_ISREG(st.st_mode)) throw invalid_argument("read " + path + ": not a regular file");
  // Reads block like a normal file would from here on.
  ::fcntl(fd.get(), F_SETFL, O_RDONLY);
  int64_t offset = request.value("offset", int64_t{0});
  if (offset < 0) throw invalid_argument("\"offset\" must not be negative");
  if (offset > 0 && ::lseek(fd.get(), offset, SEEK_SET) < 0) fail("seek", path);
  json info = info_of(st, sys::split_parent(path).second);
  info["path"] = path;
  reply = info;
  return fd;
}

sys::UniqueFd open_for_write(int rootfd, const json& request) {
  std::string path = required_path(request);
  if (path == "/") throw invalid_argument("write: not allowed on /");
  uint32_t mode = mode_of(request, 0644);
  bool append = request.value("append", false);
  // O_NONBLOCK: opening a FIFO must not hang init; it is cleared once the file is known regular.
  int flags = O_WRONLY | O_CREAT | O_NOCTTY | O_NONBLOCK | (append ? O_APPEND : 0);
  sys::UniqueFd fd = sys::open_in_root(rootfd, path, flags, mode);
  if (!fd) {
    if (errno == EISDIR) throw invalid_argument("write " + path + ": is a directory");
    fail("write", path);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) fail("write", path);
  if (!S_ISREG(st.st_mode)) throw invalid_argument("write " + path + ": not a regular file");
  if (!append && ::ftruncate(fd.get(), 0) != 0) fail("truncate", path);
  ::fcntl(fd.get(), F_SETFL, append ? O_APPEND : 0);
  if (request.contains("mode")) ::fchmod(fd.get(), mode);
  return fd;
}

}  // namespace pitbox::init
