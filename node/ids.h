// Identifiers: box ids ("sb-" + 12 base32 characters) and the host uid/gid ranges boxes run
// in. Each running box holds a lease on its own range, so no two boxes share host ids.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/runtime.h"
#include "sys/fd.h"

namespace pitbox::node {

std::string new_box_id();
bool is_box_id(const std::string& s);

// Host ids [kIdBase + slot * 65536, +65536) belong to one box at a time. The ranges sit far
// above any login user's ids and subuid ranges, and stay below 2^31.
constexpr uint32_t kIdBase = 1u << 30;
constexpr uint32_t kIdsPerBox = 65536;
constexpr uint32_t kIdSlots = 16383;

// A leased id range; the lease ends when the object goes (or the process dies).
class IdLease {
 public:
  IdLease() = default;
  IdLease(runtime::IdMapping ids, sys::UniqueFd lock) : ids_(ids), lock_(std::move(lock)) {}
  const runtime::IdMapping& ids() const { return ids_; }

 private:
  runtime::IdMapping ids_;
  sys::UniqueFd lock_;
};

// Hands out ranges with one lock file per slot in `dir` (flock: a crashed holder frees its slot).
class IdAllocator {
 public:
  explicit IdAllocator(std::string dir) : dir_(std::move(dir)) {}
  IdLease acquire();

 private:
  std::string dir_;
};

}  // namespace pitbox::node
