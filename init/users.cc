#include "init/users.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <charconv>
#include <optional>
#include <string_view>

#include "sys/error.h"
#include "sys/fs.h"

namespace pitbox::init {
namespace {

// Fields between separators, empty ones included ("a::b" has three).
std::vector<std::string> split(std::string_view line, char sep) {
  std::vector<std::string> out;
  for (;;) {
    size_t end = line.find(sep);
    out.emplace_back(line.substr(0, end));
    if (end == std::string_view::npos) return out;
    line.remove_prefix(end + 1);
  }
}

// Calls f(line) for each line of text (no string streams: they would pull the C++ locale
// machinery into init, and its start-up costs page faults in every box).
template <typename F>
void for_each_line(std::string_view text, F f) {
  while (!text.empty()) {
    size_t end = text.find('\n');
    if (!f(text.substr(0, end))) return;
    if (end == std::string_view::npos) return;
    text.remove_prefix(end + 1);
  }
}

std::optional<uint32_t> number(const std::string& s) {
  uint32_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// The box owns these files: a FIFO planted there must not block init, and anything but a
// regular file counts as missing.
std::string read_in_root(int rootfd, const char* path) {
  sys::UniqueFd fd = sys::open_in_root(rootfd, path, O_RDONLY | O_NONBLOCK | O_NOCTTY);
  struct stat st;
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return {};
  try {
    return sys::read_fd(fd.get(), 4u << 20);
  } catch (const Error&) {
    return {};
  }
}

struct PasswdEntry {
  std::string name;
  uid_t uid;
  gid_t gid;
  std::string home, shell;
};

std::optional<PasswdEntry> find_user(const std::string& passwd, const std::string& name,
                                     std::optional<uid_t> uid) {
  std::optional<PasswdEntry> found;
  for_each_line(passwd, [&](std::string_view line) {
    auto f = split(line, ':');
    if (f.size() < 7) return true;
    auto u = number(f[2]);
    auto g = number(f[3]);
    if (!u || !g) return true;
    if ((uid && *u == *uid) || (!uid && f[0] == name)) {
      found = PasswdEntry{f[0], *u, *g, f[5], f[6]};
      return false;
    }
    return true;
  });
  return found;
}

}  // namespace

Identity resolve_identity(int rootfd, const std::string& spec) {
  std::string user = spec, group;
  if (auto colon = spec.find(':'); colon != std::string::npos) {
    user = spec.substr(0, colon);
    group = spec.substr(colon + 1);
  }
  if (user.empty()) user = "0";
  std::string passwd = read_in_root(rootfd, "/etc/passwd");
  Identity id;
  std::optional<uid_t> uid = number(user);
  auto entry = find_user(passwd, user, uid);
  if (entry) {
    id.uid = entry->uid;
    id.gid = entry->gid;
    id.name = entry->name;
    id.home = entry->home.empty() ? "/" : entry->home;
    id.shell = entry->shell;
  } else if (uid) {
    id.uid = *uid;
    id.gid = 0;
    if (*uid == 0) id.home = "/root";
  } else {
    throw not_found("user \"" + user + "\" is not in the box's /etc/passwd");
  }
  std::string groups = read_in_root(rootfd, "/etc/group");
  if (!group.empty()) {
    if (auto g = number(group)) {
      id.gid = *g;
    } else {
      bool found = false;
      for_each_line(groups, [&](std::string_view line) {
        auto f = split(line, ':');
        if (f.size() >= 3 && f[0] == group) {
          if (auto g2 = number(f[2])) {
            id.gid = *g2;
            found = true;
          }
        }
        return !found;
      });
      if (!found) throw not_found("group \"" + group + "\" is not in the box's /etc/group");
    }
  }
  // Supplementary groups: every group that lists the user by name.
  if (!id.name.empty()) {
    for_each_line(groups, [&](std::string_view line) {
      auto f = split(line, ':');
      if (f.size() < 4) return true;
      auto g = number(f[2]);
      if (!g || *g == id.gid) return true;
      for (const auto& member : split(f[3], ',')) {
        if (member == id.name) {
          id.groups.push_back(*g);
          break;
        }
      }
      return true;
    });
  }
  return id;
}

}  // namespace pitbox::init
