// Identifiers: box and snapshot ids ("sb-"/"sn-" + 12 base32 characters) and the host uid/gid
// ranges boxes run in. A range is leased to one box at a time, machine-wide.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "runtime/runtime.h"
#include "sys/process.h"

namespace pitbox::node {

std::string new_box_id();
bool is_box_id(const std::string& s);
// Snapshot ids: "sn-" + 12 base32 characters.
std::string new_snapshot_id();
bool is_snapshot_id(const std::string& s);

// Host ids [kIdBase + slot * 65536, +65536) belong to one box at a time. The ranges sit far
// above any login user's ids and subuid ranges, and stay below 2^31.
constexpr uint32_t kIdBase = 1u << 30;
constexpr uint32_t kIdsPerBox = 65536;
constexpr uint32_t kIdSlots = 16383;

using sys::ProcessRef;

// One lease file per slot in a memory-backed directory (/run/pitbox/ids). A lease names the
// process whose life it follows: the pitbox run that made a one-shot box, or a persistent box's
// init. It ends when released or when that process is gone, so it outlives a restarted daemon
// and never outlives its box.
class IdLease {
 public:
  IdLease() = default;
  IdLease(std::string path, uint32_t slot, ProcessRef owner)
      : path_(std::move(path)), slot_(slot), owner_(owner) {}
  IdLease(IdLease&& o) noexcept { *this = std::move(o); }
  IdLease& operator=(IdLease&& o) noexcept;
  IdLease(const IdLease&) = delete;
  IdLease& operator=(const IdLease&) = delete;
  // Releases the lease (unless it was kept).
  ~IdLease();

  bool valid() const { return !path_.empty(); }
  uint32_t slot() const { return slot_; }
  runtime::IdMapping ids() const { return {kIdBase + slot_ * kIdsPerBox, kIdsPerBox}; }
  // Hands the lease to another process (a box's init, once it runs).
  void transfer(ProcessRef owner);
  // Makes `owner` the holder if the lease is still ours (its owner may have died, and another
  // taken the slot since); false when it is not, and then this object holds nothing.
  bool take_back(ProcessRef owner);
  void release();
  // Leaves the lease to its owner: nothing happens when this object goes (a daemon shutting down
  // while its boxes keep running).
  void keep() { path_.clear(); }

 private:
  std::string path_;
  uint32_t slot_ = 0;
  ProcessRef owner_;
};

class IdAllocator {
 public:
  explicit IdAllocator(std::string dir) : dir_(std::move(dir)) {}
  // A free range, leased to `owner`.
  IdLease acquire(ProcessRef owner);
  // The range `slot` again, for a box found running after a restart; throws conflict if another
  // live process holds it.
  IdLease reclaim(uint32_t slot, ProcessRef owner);

 private:
  // Takes the slot if it is free or its owner is gone.
  bool try_take(uint32_t slot, ProcessRef owner, IdLease& out);
  std::string dir_;
};

}  // namespace pitbox::node
