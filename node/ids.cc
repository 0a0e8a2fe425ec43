#include "node/ids.h"

#include <fcntl.h>
#include <sys/file.h>

#include <cstring>

#include "sys/error.h"
#include "sys/fs.h"
#include "sys/random.h"

namespace pitbox::node {

std::string new_box_id() { return "sb-" + sys::random_base32(12); }

bool is_box_id(const std::string& s) {
  if (s.size() != 15 || s.compare(0, 3, "sb-") != 0) return false;
  for (size_t i = 3; i < s.size(); ++i) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '2' && c <= '7'))) return false;
  }
  return true;
}

IdLease IdAllocator::acquire() {
  sys::make_dirs(dir_, 0700);
  // Start at a random slot so that concurrent callers rarely contend.
  std::string r = sys::random_bytes(4);
  uint32_t start;
  std::memcpy(&start, r.data(), sizeof start);
  for (uint32_t i = 0; i < kIdSlots; ++i) {
    uint32_t slot = (start + i) % kIdSlots;
    std::string path = dir_ + "/" + std::to_string(slot);
    sys::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) throw_errno("open " + path);
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) {
      return IdLease({kIdBase + slot * kIdsPerBox, kIdsPerBox}, std::move(fd));
    }
    if (errno != EWOULDBLOCK) throw_errno("flock " + path);
  }
  throw Error(ErrorCode::resource_exhausted,
              "all " + std::to_string(kIdSlots) + " host id ranges are in use by running boxes");
}

}  // namespace pitbox::node
