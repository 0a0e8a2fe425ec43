#include "sys/caps.h"

#include <linux/capability.h>
#include <sys/fsuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <fstream>

#include "sys/error.h"

namespace pitbox::sys {
namespace {

constexpr std::array<std::string_view, 41> kNames = {
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
};

// Puts every permitted capability back into the effective set of this thread.
void raise_effective() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2];
  if (::syscall(SYS_capget, &header, data) != 0) throw_errno("capget");
  data[0].effective = data[0].permitted;
  data[1].effective = data[1].permitted;
  if (::syscall(SYS_capset, &header, data) != 0) throw_errno("capset");
}

}  // namespace

std::vector<std::string> CapSet::names() const {
  std::vector<std::string> out;
  for (int i = 0; i < 64; ++i) {
    if (has(i)) out.emplace_back(capability_name(i));
  }
  return out;
}

std::optional<int> capability_from_name(std::string_view name) {
  std::string upper;
  for (char c : name) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (upper.rfind("CAP_", 0) != 0) upper = "CAP_" + upper;
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (kNames[i] == upper) return static_cast<int>(i);
  }
  return std::nullopt;
}

std::string_view capability_name(int cap) {
  if (cap >= 0 && static_cast<size_t>(cap) < kNames.size()) return kNames[static_cast<size_t>(cap)];
  return "CAP_UNKNOWN";
}

int last_capability() {
  std::ifstream f("/proc/sys/kernel/cap_last_cap");
  int last = 0;
  if (f >> last) return last;
  return static_cast<int>(kNames.size()) - 1;
}

ScopedFsCreds::ScopedFsCreds(uid_t uid, gid_t gid) {
  old_gid_ = static_cast<gid_t>(::setfsgid(gid));
  old_uid_ = static_cast<uid_t>(::setfsuid(uid));
  // Leaving fsuid 0 drops the file capabilities from the effective set; take them back.
  try {
    raise_effective();
  } catch (...) {
    ::setfsuid(old_uid_);
    ::setfsgid(old_gid_);
    throw;
  }
}

ScopedFsCreds::~ScopedFsCreds() {
  ::setfsuid(old_uid_);
  ::setfsgid(old_gid_);
  try {
    raise_effective();
  } catch (...) {
  }
}

}  // namespace pitbox::sys
