#include "init/files.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <linux/magic.h>
#include <regex.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <vector>

#include "proto/frame.h"
#include "proto/messages.h"
#include "sys/error.h"
#include "sys/fs.h"

namespace pitbox::init {

using nlohmann::json;

namespace {

constexpr size_t kDefaultListLimit = 1000;
constexpr size_t kMaxListLimit = 10000;
// A response must fit in one frame: results stop (and say so) before their JSON could reach
// half the frame limit. Names from the box may grow six-fold when escaped.
constexpr size_t kResultBudget = proto::kMaxPayload / 2;
size_t json_cost(const std::string& a, const std::string& b = {}) {
  return 6 * (a.size() + b.size()) + 160;
}

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
  json entries = json::array();
  size_t cost = 0;
  std::string last;
  bool more = false;
  for (const auto& n : names) {
    if (entries.size() >= limit || cost >= kResultBudget) {
      more = true;
      break;
    }
    last = n;
    struct stat st;
    if (::fstatat(fd.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // raced away
    proto::FileInfo info = info_of(st, n);
    if (S_ISLNK(st.st_mode)) info.target = read_link_at(fd.get(), n.c_str());
    cost += json_cost(info.name, info.target);
    entries.push_back(info);
  }
  json out = {{"path", path}, {"entries", entries}};
  out["next"] = more ? json(last) : json(nullptr);
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

json do_symlink(int rootfd, const json& req) {
  std::string path = required_path(req);
  auto it = req.find("target");
  if (it == req.end() || !it->is_string() || it->get<std::string>().empty()) {
    throw invalid_argument("symlink: \"target\" must be a non-empty string");
  }
  auto [dir, name] = open_parent(rootfd, path, "symlink");
  if (::symlinkat(it->get<std::string>().c_str(), dir.get(), name.c_str()) != 0) {
    if (errno == EEXIST) throw Error(ErrorCode::conflict, "symlink " + path + ": already exists");
    fail("symlink", path);
  }
  return {{"path", path}};
}

// Walks a tree below `dirfd` without following symlinks or entering /proc, /sys and /dev
// style filesystems; calls visit(path, name, stat) for every entry until it returns false.
template <typename Visit>
bool walk(int dirfd, const std::string& path, int depth, int max_depth, Visit&& visit) {
  std::vector<sys::DirEntry> entries;
  try {
    entries = sys::read_dir(dirfd);
  } catch (const Error&) {
    return true;  // unreadable: skip it
  }
  std::sort(entries.begin(), entries.end(),
            [](const sys::DirEntry& a, const sys::DirEntry& b) { return a.name < b.name; });
  for (const auto& e : entries) {
    struct stat st;
    if (::fstatat(dirfd, e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    std::string child = path == "/" ? "/" + e.name : path + "/" + e.name;
    if (!visit(child, e.name, st)) return false;
    if (!S_ISDIR(st.st_mode) || depth >= max_depth) continue;
    sys::UniqueFd sub(
        ::openat(dirfd, e.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub) continue;
    struct statfs fs;
    if (::fstatfs(sub.get(), &fs) == 0 &&
        (fs.f_type == PROC_SUPER_MAGIC || fs.f_type == SYSFS_MAGIC ||
         fs.f_type == DEVPTS_SUPER_MAGIC || (S_ISDIR(st.st_mode) && child == "/dev"))) {
      continue;
    }
    if (!walk(sub.get(), child, depth + 1, max_depth, visit)) return false;
  }
  return true;
}

size_t limit_of(const json& req, size_t fallback, size_t most) {
  size_t limit = req.value("limit", fallback);
  if (limit == 0 || limit > most) {
    throw invalid_argument("\"limit\" must be from 1 to " + std::to_string(most));
  }
  return limit;
}

int max_depth_of(const json& req) {
  int d = req.value("max_depth", 64);
  if (d < 0 || d > 256) throw invalid_argument("\"max_depth\" must be from 0 to 256");
  return d;
}

json do_find(int rootfd, const json& req) {
  std::string path = required_path(req);
  std::string pattern = req.value("name", std::string("*"));
  std::string type = req.value("type", std::string());
  size_t limit = limit_of(req, 1000, 100000);
  int max_depth = max_depth_of(req);
  sys::UniqueFd dir = open_path(rootfd, path, O_RDONLY | O_DIRECTORY, "find");
  json matches = json::array();
  bool truncated = false;
  size_t cost = 0;
  walk(dir.get(), path, 1, max_depth,
       [&](const std::string& p, const std::string& name, const struct stat& st) {
         if (::fnmatch(pattern.c_str(), name.c_str(), FNM_PERIOD) != 0) return true;
         std::string t = type_name(st.st_mode);
         if (!type.empty() && t != type) return true;
         if (matches.size() >= limit || cost >= kResultBudget) {
           truncated = true;
           return false;
         }
         cost += json_cost(p);
         matches.push_back({{"path", p}, {"type", t}, {"size", static_cast<uint64_t>(st.st_size)}});
         return true;
       });
  return {{"matches", matches}, {"truncated", truncated}};
}

// A substring or extended regular expression, matched line by line.
class LineMatcher {
 public:
  LineMatcher(const std::string& pattern, bool regex, bool ignore_case)
      : pattern_(pattern), regex_(regex), ignore_case_(ignore_case) {
    if (pattern.empty()) throw invalid_argument("grep: \"pattern\" must not be empty");
    if (regex) {
      int rc = ::regcomp(&re_, pattern.c_str(),
                         REG_EXTENDED | REG_NOSUB | (ignore_case ? REG_ICASE : 0));
      if (rc != 0) {
        char msg[256];
        ::regerror(rc, &re_, msg, sizeof msg);
        throw invalid_argument("grep: bad regular expression \"" + pattern + "\": " + msg);
      }
      compiled_ = true;
    } else if (ignore_case) {
      for (auto& ch : pattern_)
        ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    }
  }
  ~LineMatcher() {
    if (compiled_) ::regfree(&re_);
  }
  LineMatcher(const LineMatcher&) = delete;
  LineMatcher& operator=(const LineMatcher&) = delete;

  bool matches(std::string line) const {
    if (regex_) return ::regexec(&re_, line.c_str(), 0, nullptr, 0) == 0;
    if (ignore_case_) {
      for (auto& ch : line) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    }
    return line.find(pattern_) != std::string::npos;
  }

 private:
  std::string pattern_;
  bool regex_;
  bool ignore_case_;
  bool compiled_ = false;
  regex_t re_{};
};

json do_grep(int rootfd, const json& req) {
  std::string path = required_path(req);
  auto pat = req.find("pattern");
  if (pat == req.end() || !pat->is_string())
    throw invalid_argument("grep: \"pattern\" is required");
  LineMatcher matcher(pat->get<std::string>(), req.value("regex", false),
                      req.value("ignore_case", false));
  std::string glob = req.value("glob", std::string("*"));
  size_t limit = limit_of(req, 1000, 100000);
  int max_depth = max_depth_of(req);
  uint64_t max_size = req.value("max_file_size", uint64_t{10} << 20);
  constexpr size_t kMaxLine = 4096;
  json matches = json::array();
  bool truncated = false;
  size_t cost = 0;
  auto search = [&](int fd, const std::string& file) {
    std::string content = sys::read_fd(fd, max_size);
    if (content.find('\0') != std::string::npos) return true;  // binary: skipped
    size_t line_no = 0, pos = 0;
    while (pos < content.size()) {
      size_t end = content.find('\n', pos);
      if (end == std::string::npos) end = content.size();
      ++line_no;
      std::string line = content.substr(pos, end - pos);
      if (matcher.matches(line)) {
        if (matches.size() >= limit || cost >= kResultBudget) {
          truncated = true;
          return false;
        }
        if (line.size() > kMaxLine) line.resize(kMaxLine);
        cost += json_cost(file, line);
        matches.push_back({{"path", file}, {"line", line_no}, {"text", line}});
      }
      pos = end + 1;
    }
    return true;
  };
  sys::UniqueFd start = open_path(rootfd, path, O_RDONLY | O_NONBLOCK, "grep");
  struct stat st;
  if (::fstat(start.get(), &st) != 0) fail("grep", path);
  if (S_ISREG(st.st_mode)) {
    search(start.get(), path);
  } else if (S_ISDIR(st.st_mode)) {
    walk(start.get(), path, 1, max_depth,
         [&](const std::string& p, const std::string& name, const struct stat& s) {
           if (!S_ISREG(s.st_mode) || static_cast<uint64_t>(s.st_size) > max_size) return true;
           if (::fnmatch(glob.c_str(), name.c_str(), FNM_PERIOD) != 0) return true;
           sys::UniqueFd f = sys::open_in_root(rootfd, p, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
           return !f || search(f.get(), p);
         });
  } else {
    throw invalid_argument("grep " + path + ": not a file or directory");
  }
  return {{"matches", matches}, {"truncated", truncated}};
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
         op == "chmod" || op == "chown" || op == "symlink" || op == "find" || op == "grep";
}

json file_operation(int rootfd, const std::string& op, const json& request) {
  if (op == "stat") return do_stat(rootfd, request);
  if (op == "list") return do_list(rootfd, request);
  if (op == "mkdir") return do_mkdir(rootfd, request);
  if (op == "remove") return do_remove(rootfd, request);
  if (op == "rename") return do_rename(rootfd, request);
  if (op == "chmod") return do_chmod(rootfd, request);
  if (op == "chown") return do_chown(rootfd, request);
  if (op == "symlink") return do_symlink(rootfd, request);
  if (op == "find") return do_find(rootfd, request);
  if (op == "grep") return do_grep(rootfd, request);
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
