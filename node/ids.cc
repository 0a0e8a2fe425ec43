#include "node/ids.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "sys/error.h"
#include "sys/fs.h"
#include "sys/random.h"

namespace pitbox::node {

namespace {

bool is_id(const std::string& s, const char* prefix) {
  if (s.size() != 15 || s.compare(0, 3, prefix) != 0) return false;
  for (size_t i = 3; i < s.size(); ++i) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '2' && c <= '7'))) return false;
  }
  return true;
}

}  // namespace

std::string new_box_id() { return "sb-" + sys::random_base32(12); }
bool is_box_id(const std::string& s) { return is_id(s, "sb-"); }
std::string new_snapshot_id() { return "sn-" + sys::random_base32(12); }
bool is_snapshot_id(const std::string& s) { return is_id(s, "sn-"); }

IdLease& IdLease::operator=(IdLease&& o) noexcept {
  if (this != &o) {
    release();
    path_ = std::move(o.path_);
    slot_ = o.slot_;
    owner_ = o.owner_;
    o.path_.clear();
  }
  return *this;
}

IdLease::~IdLease() { release(); }

namespace {

constexpr size_t kOwnerRecord = 48;  // "pid start_time", blank-padded, newline

// The owner written in a lease file, under its lock.
ProcessRef read_owner(int fd) {
  char buf[64] = {};
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  ProcessRef r;
  unsigned long long start = 0;
  if (n > 0 && std::sscanf(buf, "%d %llu", &r.pid, &start) == 2) r.start_time = start;
  return r;
}

// One fixed-size record, overwritten in place (truncating costs more than the write); blanks
// mean free.
bool write_owner(int fd, ProcessRef owner) {
  char buf[kOwnerRecord + 1];
  int n = 0;
  if (owner.pid) {
    n = std::snprintf(buf, sizeof buf, "%d %llu", owner.pid,
                      static_cast<unsigned long long>(owner.start_time));
  }
  std::memset(buf + n, ' ', kOwnerRecord - n);
  buf[kOwnerRecord - 1] = '\n';
  return ::pwrite(fd, buf, kOwnerRecord, 0) == static_cast<ssize_t>(kOwnerRecord);
}

}  // namespace

void IdLease::transfer(ProcessRef owner) {
  if (path_.empty()) return;
  sys::UniqueFd fd(::open(path_.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd || ::flock(fd.get(), LOCK_EX) != 0) throw_errno("lease " + path_);
  if (!write_owner(fd.get(), owner)) throw_errno("lease " + path_);
  owner_ = owner;
}

bool IdLease::take_back(ProcessRef owner) {
  if (path_.empty()) return false;
  sys::UniqueFd fd(::open(path_.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd || ::flock(fd.get(), LOCK_EX) != 0) throw_errno("lease " + path_);
  ProcessRef now = read_owner(fd.get());
  if (now.pid != owner_.pid || now.start_time != owner_.start_time) {
    path_.clear();
    return false;
  }
  if (!write_owner(fd.get(), owner)) throw_errno("lease " + path_);
  owner_ = owner;
  return true;
}

void IdLease::release() {
  if (path_.empty()) return;
  sys::UniqueFd fd(::open(path_.c_str(), O_RDWR | O_CLOEXEC));
  // Only if it is still ours: a lease whose owner died may have been taken since.
  if (fd && ::flock(fd.get(), LOCK_EX) == 0) {
    ProcessRef now = read_owner(fd.get());
    if (now.pid == owner_.pid && now.start_time == owner_.start_time) write_owner(fd.get(), {});
  }
  path_.clear();
}

bool IdAllocator::try_take(uint32_t slot, ProcessRef owner, IdLease& out) {
  std::string path = dir_ + "/" + std::to_string(slot);
  sys::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) throw_errno("open " + path);
  // The lock is held only while the owner is checked and written.
  if (::flock(fd.get(), LOCK_EX) != 0) throw_errno("flock " + path);
  ProcessRef current = read_owner(fd.get());
  if (current.pid && current.alive() &&
      !(current.pid == owner.pid && current.start_time == owner.start_time)) {
    return false;
  }
  if (!write_owner(fd.get(), owner)) throw_errno("write " + path);
  out = IdLease(path, slot, owner);
  return true;
}

IdLease IdAllocator::acquire(ProcessRef owner) {
  sys::make_dirs(dir_, 0700);
  // Start at a random slot so that concurrent callers rarely meet.
  std::string r = sys::random_bytes(4);
  uint32_t start;
  std::memcpy(&start, r.data(), sizeof start);
  IdLease lease;
  for (uint32_t i = 0; i < kIdSlots; ++i) {
    if (try_take((start + i) % kIdSlots, owner, lease)) return lease;
  }
  throw Error(ErrorCode::resource_exhausted,
              "all " + std::to_string(kIdSlots) + " host id ranges are in use by running boxes");
}

IdLease IdAllocator::reclaim(uint32_t slot, ProcessRef owner) {
  if (slot >= kIdSlots)
    throw invalid_argument("id slot " + std::to_string(slot) + " is out of range");
  sys::make_dirs(dir_, 0700);
  IdLease lease;
  if (!try_take(slot, owner, lease)) {
    throw Error(ErrorCode::conflict,
                "host id range " + std::to_string(slot) + " is held by another running process");
  }
  return lease;
}

}  // namespace pitbox::node
