// Control groups behind one interface, with a driver for cgroup v1 (one hierarchy per
// controller) and one for cgroup v2 (the unified hierarchy).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace pitbox::sys {

// Zero means "no limit".
struct CgroupLimits {
  uint64_t millicpus = 0;     // thousandths of a CPU of bandwidth
  uint64_t memory_bytes = 0;  // RAM; swap is never allowed when memory is limited
  uint64_t pids = 0;          // processes and threads

  bool any() const { return millicpus || memory_bytes || pids; }
};

struct CgroupStats {
  uint64_t memory_bytes = 0;
  uint64_t memory_peak_bytes = 0;
  uint64_t oom_kills = 0;
  uint64_t cpu_usage_ns = 0;
  uint64_t pids = 0;
};

// One box's cgroup. Removed when the object goes unless disown() was called.
class Cgroup {
 public:
  virtual ~Cgroup() = default;
  virtual const std::string& name() const = 0;
  virtual void set_limits(const CgroupLimits& limits) = 0;
  virtual void add_process(pid_t pid) = 0;
  virtual std::vector<pid_t> processes() const = 0;
  virtual CgroupStats stats() const = 0;
  // SIGKILLs every process in the cgroup and waits until none is left (thawing it if frozen).
  virtual void kill_all() = 0;
  // Freezes every process of the cgroup (none runs or gets CPU time; memory stays) and waits
  // until the kernel says it is frozen; thaw() lets them go on where they were. A cgroup made
  // without the freezer (v1, no accounting) cannot be frozen: invalid_argument. A freeze the
  // kernel does not finish within a few seconds is thawed again and unavailable.
  virtual void freeze() = 0;
  virtual void thaw() = 0;
  virtual bool frozen() const = 0;
  // Removes the cgroup (killing what is left in it). Throws if it cannot.
  virtual void remove() = 0;
  // Keeps the cgroup on the machine after this object goes.
  virtual void disown() = 0;
};

// The machine's cgroup hierarchy. Box cgroups live under one parent ("pitbox").
class Cgroups {
 public:
  virtual ~Cgroups() = default;
  // Finds the hierarchy this machine uses (v2 when /sys/fs/cgroup is cgroup2, v1 otherwise).
  static std::unique_ptr<Cgroups> detect(const std::string& parent = "pitbox");
  // The v2 driver on the cgroup2 hierarchy mounted at `root` (tests use a hybrid machine's
  // /sys/fs/cgroup/unified).
  static std::unique_ptr<Cgroups> v2(const std::string& root, const std::string& parent);

  virtual std::string_view version() const = 0;
  // Creates the cgroup `name` with `limits`; nothing is left behind if a limit is refused. On
  // cgroup v1 it spans only the hierarchies its limits need, unless `accounting` asks for all
  // (usage figures and freezing).
  virtual std::unique_ptr<Cgroup> create(const std::string& name, const CgroupLimits& limits,
                                         bool accounting) = 0;
  // An existing cgroup (not owned: it is not removed when the object goes).
  virtual std::unique_ptr<Cgroup> open(const std::string& name) = 0;
  virtual bool exists(const std::string& name) const = 0;
  virtual std::vector<std::string> list() const = 0;
};

// The file formats, exposed for tests.
namespace cgroup_format {
// cgroup v1 cpu.cfs_quota_us for a period of `period_us`.
uint64_t v1_cfs_quota_us(uint64_t millicpus, uint64_t period_us);
// cgroup v2 cpu.max: "<quota> <period>" or "max <period>".
std::string v2_cpu_max(uint64_t millicpus, uint64_t period_us);
// The value of `key` in a "key value" per line file (memory.events, cpu.stat, ...), or 0.
uint64_t keyed_value(std::string_view text, std::string_view key);
// The mount points of cgroup v1 controllers in a mountinfo text: {controller, mount point}.
std::vector<std::pair<std::string, std::string>> v1_mounts(std::string_view mountinfo);
}  // namespace cgroup_format

}  // namespace pitbox::sys
