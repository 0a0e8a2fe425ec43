// Linux capabilities: names, sets, and the credential switch used to mount as a box's root.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pitbox::sys {

// A set of capabilities as a bit mask (bit n = capability n).
struct CapSet {
  uint64_t bits = 0;

  bool has(int cap) const { return cap >= 0 && cap < 64 && (bits >> cap) & 1; }
  CapSet& add(int cap) {
    bits |= uint64_t{1} << cap;
    return *this;
  }
  std::vector<std::string> names() const;
};

// "CAP_CHOWN", "cap_chown" or "chown" -> 0.
std::optional<int> capability_from_name(std::string_view name);
std::string_view capability_name(int cap);  // "CAP_CHOWN"
// The highest capability this kernel knows (/proc/sys/kernel/cap_last_cap).
int last_capability();

// Makes this thread act on files as (uid, gid) while keeping its capabilities in effect, and
// switches back when it goes. Mounts created meanwhile record these credentials as the mounter.
class ScopedFsCreds {
 public:
  ScopedFsCreds(uid_t uid, gid_t gid);
  ~ScopedFsCreds();
  ScopedFsCreds(const ScopedFsCreds&) = delete;
  ScopedFsCreds& operator=(const ScopedFsCreds&) = delete;

 private:
  uid_t old_uid_;
  gid_t old_gid_;
};

}  // namespace pitbox::sys
