#include "sys/mount.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>

#include "sys/error.h"

namespace pitbox::sys {

UniqueFd clone_mount(const std::string& path, bool recursive) {
  unsigned flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (recursive ? AT_RECURSIVE : 0);
  UniqueFd fd(::open_tree(AT_FDCWD, path.c_str(), flags));
  if (!fd) throw_errno("open_tree " + path);
  return fd;
}

void set_mount_attrs(int mount_fd, uint64_t set, uint64_t clear, int userns_fd, bool recursive) {
  mount_attr attr{};
  attr.attr_set = set;
  attr.attr_clr = clear;
  if (userns_fd >= 0) {
    attr.attr_set |= MOUNT_ATTR_IDMAP;
    attr.userns_fd = static_cast<uint64_t>(userns_fd);
  }
  unsigned flags = AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0);
  if (::mount_setattr(mount_fd, "", flags, &attr, sizeof attr) != 0) throw_errno("mount_setattr");
}

namespace {

// What the filesystem context logged ("e overlayfs: ..." lines), for error messages.
std::string fs_context_log(int fs_fd) {
  std::string out;
  char buf[512];
  for (;;) {
    ssize_t n = ::read(fs_fd, buf, sizeof buf - 1);
    if (n <= 0) break;
    if (!out.empty()) out += "; ";
    std::string line(buf, static_cast<size_t>(n));
    if (line.size() > 2 && line[1] == ' ') line.erase(0, 2);
    out += line;
  }
  return out;
}

[[noreturn]] void throw_fs_error(int fs_fd, const std::string& what) {
  int err = errno;
  std::string log = fs_context_log(fs_fd);
  throw Error(error_code_from_errno(err),
              what + ": " + std::strerror(err) + (log.empty() ? "" : " (" + log + ")"),
              {{"errno", err}});
}

}  // namespace

UniqueFd make_filesystem(const char* fstype,
                         const std::vector<std::pair<std::string, std::string>>& options,
                         uint64_t attrs) {
  UniqueFd fs(::fsopen(fstype, FSOPEN_CLOEXEC));
  if (!fs) throw_errno(std::string("fsopen ") + fstype);
  for (const auto& [key, value] : options) {
    if (::fsconfig(fs.get(), FSCONFIG_SET_STRING, key.c_str(), value.c_str(), 0) != 0) {
      throw_fs_error(fs.get(), std::string(fstype) + " option " + key + "=" + value);
    }
  }
  if (::fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) {
    throw_fs_error(fs.get(), std::string("create ") + fstype);
  }
  UniqueFd mnt(::fsmount(fs.get(), FSMOUNT_CLOEXEC, static_cast<unsigned>(attrs)));
  if (!mnt) throw_fs_error(fs.get(), std::string("fsmount ") + fstype);
  return mnt;
}

UniqueFd make_tmpfs(uint64_t size_bytes, mode_t mode, uint64_t attrs) {
  char mode_text[16];
  std::snprintf(mode_text, sizeof mode_text, "%o", static_cast<unsigned>(mode));
  std::vector<std::pair<std::string, std::string>> options{{"mode", mode_text}};
  if (size_bytes != 0) options.emplace_back("size", std::to_string(size_bytes));
  return make_filesystem("tmpfs", options, attrs);
}

UniqueFd make_overlay(const OverlayLayers& layers) {
  if (layers.lower.empty()) throw invalid_argument("an overlay needs at least one lower layer");
  UniqueFd fs(::fsopen("overlay", FSOPEN_CLOEXEC));
  if (!fs) throw_errno("fsopen overlay");
  auto set_string = [&](const char* key, const char* value) {
    if (::fsconfig(fs.get(), FSCONFIG_SET_STRING, key, value, 0) != 0) {
      throw_fs_error(fs.get(), std::string("overlay option ") + key + "=" + value);
    }
  };
  auto set_fd = [&](const char* key, int fd) {
    if (::fsconfig(fs.get(), FSCONFIG_SET_FD, key, nullptr, fd) != 0) {
      throw_fs_error(fs.get(), std::string("overlay layer ") + key);
    }
  };
  for (int fd : layers.lower) set_fd("lowerdir+", fd);
  if (layers.upper >= 0) {
    set_fd("upperdir", layers.upper);
    set_fd("workdir", layers.work);
  }
  // Layers may come from untrusted images: never trust their metadata-only copies, and keep no
  // inode index (boxes are independent).
  set_string("metacopy", "off");
  set_string("index", "off");
  if (layers.volatile_upper && layers.upper >= 0) {
    if (::fsconfig(fs.get(), FSCONFIG_SET_FLAG, "volatile", nullptr, 0) != 0) {
      throw_fs_error(fs.get(), "overlay option volatile");
    }
  }
  if (::fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) {
    throw_fs_error(fs.get(), "create overlay");
  }
  UniqueFd mnt(::fsmount(fs.get(), FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV));
  if (!mnt) throw_fs_error(fs.get(), "fsmount overlay");
  return mnt;
}

}  // namespace pitbox::sys
