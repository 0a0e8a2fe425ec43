#include "sys/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "sys/error.h"
#include "sys/fs.h"
#include "sys/units.h"

namespace pitbox::sys {

namespace cgroup_format {

uint64_t v1_cfs_quota_us(uint64_t millicpus, uint64_t period_us) {
  return millicpus * period_us / 1000;
}

std::string v2_cpu_max(uint64_t millicpus, uint64_t period_us) {
  if (millicpus == 0) return "max " + std::to_string(period_us);
  return std::to_string(v1_cfs_quota_us(millicpus, period_us)) + " " + std::to_string(period_us);
}

uint64_t keyed_value(std::string_view text, std::string_view key) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    if (line.size() > key.size() && line.substr(0, key.size()) == key && line[key.size()] == ' ') {
      std::string_view v = line.substr(key.size() + 1);
      uint64_t out = 0;
      std::from_chars(v.data(), v.data() + v.size(), out);
      return out;
    }
    pos = end + 1;
  }
  return 0;
}

std::vector<std::pair<std::string, std::string>> v1_mounts(std::string_view mountinfo) {
  std::vector<std::pair<std::string, std::string>> out;
  std::istringstream in{std::string(mountinfo)};
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
    auto sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    std::istringstream head(line.substr(0, sep)), tail(line.substr(sep + 3));
    std::string id, parent, dev, root, mountpoint, fstype, source, superopts;
    head >> id >> parent >> dev >> root >> mountpoint;
    tail >> fstype >> source >> superopts;
    if (fstype != "cgroup") continue;
    std::istringstream opts(superopts);
    std::string opt;
    while (std::getline(opts, opt, ',')) out.emplace_back(opt, mountpoint);
  }
  return out;
}

}  // namespace cgroup_format

namespace {

constexpr uint64_t kCpuPeriodUs = 100000;

void write_control(const std::string& path, const std::string& value, const std::string& what) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  if (::write(fd.get(), value.data(), value.size()) < 0) {
    int err = errno;
    throw Error(
        err == EINVAL || err == ERANGE ? ErrorCode::invalid_argument : error_code_from_errno(err),
        "the kernel refused " + what + " (" + path + " = " + value + "): " + std::strerror(err),
        {{"errno", err}, {"file", path}, {"value", value}});
  }
}

std::string read_control(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return {};
  try {
    return read_fd(fd.get(), 1 << 20);
  } catch (const Error&) {
    return {};
  }
}

uint64_t read_number(const std::string& path) {
  std::string s = read_control(path);
  uint64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

std::vector<pid_t> read_pids(const std::string& procs_file) {
  std::vector<pid_t> out;
  std::istringstream in(read_control(procs_file));
  pid_t pid;
  while (in >> pid) out.push_back(pid);
  return out;
}

// rmdir, waiting for processes that are still leaving the cgroup.
// Polls `done` for up to `timeout` (freezing a cgroup completes asynchronously).
template <typename F>
bool wait_until(F done, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (int round = 0;; ++round) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(round < 20 ? 100 : 2000));
  }
}

constexpr std::chrono::seconds kFreezeTimeout{5};

void remove_dir_patiently(const std::string& dir) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  auto pause = std::chrono::microseconds(100);
  for (;;) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return;
    if (errno != EBUSY || std::chrono::steady_clock::now() > deadline) throw_errno("rmdir " + dir);
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(20000));
  }
}

void ensure_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("mkdir " + dir);
}

void validate_name(const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
    throw invalid_argument("invalid cgroup name \"" + name + "\"");
  }
}

// ---------------------------------------------------------------------------------------------
// cgroup v1: each controller has its own hierarchy; a box has one directory in each.

struct V1Layout {
  std::string cpu, cpuacct, memory, pids, freezer;  // controller mount points ("" = absent)
  std::vector<std::string> distinct;                // each hierarchy once

  // Only the hierarchies of the controllers that are kept.
  V1Layout subset(bool cpu_on, bool memory_on, bool pids_on, bool accounting) const {
    V1Layout s;
    s.cpu = cpu_on || accounting ? cpu : "";
    s.memory = memory_on || accounting ? memory : "";
    s.pids = pids_on || accounting ? pids : "";
    s.cpuacct = accounting ? cpuacct : "";
    s.freezer = accounting ? freezer : "";
    // Co-mounted controllers share a hierarchy: keep it once, under any of its names.
    for (const auto& d : distinct) {
      for (const auto* kept : {&s.cpu, &s.memory, &s.pids, &s.cpuacct, &s.freezer}) {
        if (!kept->empty() && same_hierarchy(*kept, d)) {
          s.distinct.push_back(d);
          break;
        }
      }
    }
    return s;
  }

  static bool same_hierarchy(const std::string& a, const std::string& b) {
    if (a == b) return true;
    struct stat sa, sb;
    return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev;
  }
};

class CgroupV1 final : public Cgroup {
 public:
  CgroupV1(const V1Layout& layout, std::string parent, std::string name, bool owned)
      : layout_(layout), name_(std::move(name)), owned_(owned) {
    for (const auto& m : layout_.distinct) dirs_.push_back(m + "/" + parent + "/" + name_);
    auto dir_of = [&](const std::string& mount) {
      return mount.empty() ? std::string() : mount + "/" + parent + "/" + name_;
    };
    cpu_ = dir_of(layout_.cpu);
    cpuacct_ = dir_of(layout_.cpuacct);
    memory_ = dir_of(layout_.memory);
    pids_ = dir_of(layout_.pids);
    freezer_ = dir_of(layout_.freezer);
  }
  ~CgroupV1() override {
    if (!owned_) return;
    try {
      remove();
    } catch (...) {
    }
  }

  const std::string& name() const override { return name_; }

  void create_dirs() {
    for (const auto& d : dirs_) {
      if (::mkdir(d.c_str(), 0755) != 0) {
        if (errno == EEXIST) throw Error(ErrorCode::conflict, "cgroup " + d + " already exists");
        throw_errno("mkdir " + d);
      }
    }
  }

  void set_limits(const CgroupLimits& limits) override {
    // A controller this cgroup was made without can take no limit (and has none to lift).
    auto controller = [&](const std::string& dir, bool wanted, const char* name) {
      if (wanted && dir.empty()) {
        throw Error(
            ErrorCode::invalid_argument,
            std::string("cgroup ") + name_ + " was made without the " + name + " controller");
      }
      return !dir.empty();
    };
    if (controller(cpu_, limits.millicpus, "cpu")) {
      if (limits.millicpus) {
        write_control(cpu_ + "/cpu.cfs_period_us", std::to_string(kCpuPeriodUs), "the cpu period");
        write_control(
            cpu_ + "/cpu.cfs_quota_us",
            std::to_string(cgroup_format::v1_cfs_quota_us(limits.millicpus, kCpuPeriodUs)),
            "cpu limit " + format_millicpus(limits.millicpus));
      } else {
        write_control(cpu_ + "/cpu.cfs_quota_us", "-1", "removing the cpu limit");
      }
    }
    if (controller(memory_, limits.memory_bytes, "memory")) {
      std::string mem = limits.memory_bytes ? std::to_string(limits.memory_bytes) : "-1";
      std::string what = limits.memory_bytes ? "memory limit " + format_size(limits.memory_bytes)
                                             : "removing the memory limit";
      bool has_memsw = exists(memory_ + "/memory.memsw.limit_in_bytes");
      // memsw must stay >= the memory limit: raise in the order that keeps it so.
      uint64_t current = read_number(memory_ + "/memory.limit_in_bytes");
      bool raising = !limits.memory_bytes || limits.memory_bytes > current;
      if (has_memsw && raising) write_control(memory_ + "/memory.memsw.limit_in_bytes", mem, what);
      write_control(memory_ + "/memory.limit_in_bytes", mem, what);
      if (has_memsw && !raising) write_control(memory_ + "/memory.memsw.limit_in_bytes", mem, what);
      // Without swap accounting, keep the box from being swapped at all.
      if (limits.memory_bytes) try_write(memory_ + "/memory.swappiness", "0");
    }
    if (controller(pids_, limits.pids, "pids")) {
      write_control(
          pids_ + "/pids.max", limits.pids ? std::to_string(limits.pids) : "max",
          limits.pids ? "pids limit " + std::to_string(limits.pids) : "removing the pids limit");
    }
  }

  void add_process(pid_t pid) override {
    std::string p = std::to_string(pid);
    for (const auto& d : dirs_) write_control(d + "/cgroup.procs", p, "moving a process");
  }

  std::vector<pid_t> processes() const override { return read_pids(pids_ + "/cgroup.procs"); }

  CgroupStats stats() const override {
    CgroupStats s;
    s.memory_bytes = read_number(memory_ + "/memory.usage_in_bytes");
    s.memory_peak_bytes = read_number(memory_ + "/memory.max_usage_in_bytes");
    s.oom_kills =
        cgroup_format::keyed_value(read_control(memory_ + "/memory.oom_control"), "oom_kill");
    if (!cpuacct_.empty()) s.cpu_usage_ns = read_number(cpuacct_ + "/cpuacct.usage");
    s.pids = read_number(pids_ + "/pids.current");
    return s;
  }

  void kill_all() override {
    for (int round = 0; round < 1000; ++round) {
      auto pids = processes();
      if (pids.empty()) return;
      // Freeze first so nothing can fork while we go through the list.
      bool frozen = !freezer_.empty() && try_write(freezer_ + "/freezer.state", "FROZEN");
      for (pid_t pid : pids) ::kill(pid, SIGKILL);
      if (frozen) try_write(freezer_ + "/freezer.state", "THAWED");
      std::this_thread::sleep_for(std::chrono::milliseconds(round < 10 ? 1 : 10));
    }
    throw Error(ErrorCode::internal, "processes of cgroup " + name_ + " would not die");
  }

  void remove() override {
    if (removed_) return;
    if (!processes().empty()) kill_all();
    for (const auto& d : dirs_) remove_dir_patiently(d);
    removed_ = true;
  }

  void disown() override { owned_ = false; }

  void freeze() override {
    std::string state = need_freezer() + "/freezer.state";
    // The v1 freezer can stay FREEZING for good when a task forks at the wrong moment (its child
    // joins after the walk over the tasks): thawing and freezing again gets past it (runc
    // does the same).
    auto deadline = std::chrono::steady_clock::now() + kFreezeTimeout;
    for (int round = 0; std::chrono::steady_clock::now() < deadline; ++round) {
      if (round % 50 == 49) {
        try_write(state, "THAWED");
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      write_control(state, "FROZEN", "freezing");
      if (wait_until([&] { return frozen(); }, std::chrono::milliseconds(round < 50 ? 2 : 20))) {
        return;
      }
    }
    try_write(state, "THAWED");
    throw Error(ErrorCode::unavailable, "cgroup " + name_ + " did not freeze within 5 s");
  }

  void thaw() override { write_control(need_freezer() + "/freezer.state", "THAWED", "thawing"); }

  bool frozen() const override {
    if (freezer_.empty()) return false;
    std::string s = read_control(freezer_ + "/freezer.state");
    return s.rfind("FROZEN", 0) == 0;
  }

 private:
  const std::string& need_freezer() const {
    if (freezer_.empty()) {
      throw Error(ErrorCode::invalid_argument,
                  "cgroup " + name_ + " was made without the freezer controller");
    }
    return freezer_;
  }

  static bool try_write(const std::string& path, const std::string& value) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    return fd && ::write(fd.get(), value.data(), value.size()) >= 0;
  }

  V1Layout layout_;
  std::string name_;
  bool owned_;
  bool removed_ = false;
  std::vector<std::string> dirs_;
  std::string cpu_, cpuacct_, memory_, pids_, freezer_;
};

class CgroupsV1 final : public Cgroups {
 public:
  CgroupsV1(V1Layout layout, std::string parent)
      : layout_(std::move(layout)), parent_(std::move(parent)) {}

  std::string_view version() const override { return "v1"; }

  std::unique_ptr<Cgroup> create(const std::string& name, const CgroupLimits& limits,
                                 bool accounting) override {
    validate_name(name);
    if (!parent_ready_) {
      for (const auto& m : layout_.distinct) ensure_dir(m + "/" + parent_);
      parent_ready_ = true;
    }
    V1Layout layout = layout_.subset(limits.millicpus != 0, limits.memory_bytes != 0,
                                     limits.pids != 0, accounting);
    auto cg = std::make_unique<CgroupV1>(layout, parent_, name, true);
    try {
      cg->create_dirs();
    } catch (const Error& e) {
      if (e.code() == ErrorCode::conflict) cg->disown();  // not ours to remove
      throw;
    }
    // A new cgroup has no limits; on a refusal the destructor removes the directories.
    if (limits.any()) cg->set_limits(limits);
    return cg;
  }

  std::unique_ptr<Cgroup> open(const std::string& name) override {
    validate_name(name);
    return std::make_unique<CgroupV1>(layout_, parent_, name, false);
  }

  bool exists(const std::string& name) const override {
    for (const auto& m : layout_.distinct) {
      if (is_dir(m + "/" + parent_ + "/" + name)) return true;
    }
    return false;
  }

  std::vector<std::string> list() const override {
    std::map<std::string, bool> names;
    for (const auto& m : layout_.distinct) {
      for (const auto& e : read_dir(m + "/" + parent_)) {
        if (e.type == DT_DIR) names[e.name] = true;
      }
    }
    std::vector<std::string> out;
    for (const auto& [n, _] : names) out.push_back(n);
    return out;
  }

 private:
  V1Layout layout_;
  std::string parent_;
  bool parent_ready_ = false;
};

// ---------------------------------------------------------------------------------------------
// cgroup v2: one directory per box with the cpu, memory and pids controllers enabled above it.

class CgroupV2 final : public Cgroup {
 public:
  CgroupV2(std::string dir, std::string name, bool owned)
      : dir_(std::move(dir)), name_(std::move(name)), owned_(owned) {}
  ~CgroupV2() override {
    if (!owned_) return;
    try {
      remove();
    } catch (...) {
    }
  }

  const std::string& name() const override { return name_; }

  void set_limits(const CgroupLimits& limits) override {
    write_control(dir_ + "/cpu.max", cgroup_format::v2_cpu_max(limits.millicpus, kCpuPeriodUs),
                  limits.millicpus ? "cpu limit " + format_millicpus(limits.millicpus)
                                   : "removing the cpu limit");
    std::string mem = limits.memory_bytes ? std::to_string(limits.memory_bytes) : "max";
    write_control(dir_ + "/memory.max", mem,
                  limits.memory_bytes ? "memory limit " + format_size(limits.memory_bytes)
                                      : "removing the memory limit");
    if (exists(dir_ + "/memory.swap.max")) {
      write_control(dir_ + "/memory.swap.max", limits.memory_bytes ? "0" : "max", "the swap limit");
    }
    write_control(
        dir_ + "/pids.max", limits.pids ? std::to_string(limits.pids) : "max",
        limits.pids ? "pids limit " + std::to_string(limits.pids) : "removing the pids limit");
  }

  void add_process(pid_t pid) override {
    write_control(dir_ + "/cgroup.procs", std::to_string(pid), "moving a process");
  }

  std::vector<pid_t> processes() const override { return read_pids(dir_ + "/cgroup.procs"); }

  CgroupStats stats() const override {
    CgroupStats s;
    s.memory_bytes = read_number(dir_ + "/memory.current");
    s.memory_peak_bytes = read_number(dir_ + "/memory.peak");
    s.oom_kills = cgroup_format::keyed_value(read_control(dir_ + "/memory.events"), "oom_kill");
    s.cpu_usage_ns =
        cgroup_format::keyed_value(read_control(dir_ + "/cpu.stat"), "usage_usec") * 1000;
    s.pids = read_number(dir_ + "/pids.current");
    return s;
  }

  void kill_all() override {
    bool have_kill = exists(dir_ + "/cgroup.kill");
    for (int round = 0; round < 1000; ++round) {
      auto pids = processes();
      if (pids.empty()) return;
      if (have_kill) {
        write_control(dir_ + "/cgroup.kill", "1", "killing the cgroup");
      } else {
        for (pid_t pid : pids) ::kill(pid, SIGKILL);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(round < 10 ? 1 : 10));
    }
    throw Error(ErrorCode::internal, "processes of cgroup " + name_ + " would not die");
  }

  void remove() override {
    if (removed_) return;
    if (!processes().empty()) kill_all();
    remove_dir_patiently(dir_);
    removed_ = true;
  }

  void disown() override { owned_ = false; }

  void freeze() override {
    write_control(dir_ + "/cgroup.freeze", "1", "freezing");
    if (!wait_until([&] { return frozen(); }, kFreezeTimeout)) {
      write_control(dir_ + "/cgroup.freeze", "0", "thawing");
      throw Error(ErrorCode::unavailable, "cgroup " + name_ + " did not freeze within 5 s");
    }
  }

  void thaw() override { write_control(dir_ + "/cgroup.freeze", "0", "thawing"); }

  bool frozen() const override {
    return cgroup_format::keyed_value(read_control(dir_ + "/cgroup.events"), "frozen") == 1;
  }

 private:
  std::string dir_;
  std::string name_;
  bool owned_;
  bool removed_ = false;
};

class CgroupsV2 final : public Cgroups {
 public:
  CgroupsV2(std::string root, std::string parent)
      : root_(std::move(root)), parent_dir_(root_ + "/" + parent) {}

  std::string_view version() const override { return "v2"; }

  std::unique_ptr<Cgroup> create(const std::string& name, const CgroupLimits& limits,
                                 bool accounting) override {
    validate_name(name);
    std::vector<std::string> needed;
    if (limits.millicpus || accounting) needed.push_back("cpu");
    if (limits.memory_bytes || accounting) needed.push_back("memory");
    if (limits.pids || accounting) needed.push_back("pids");
    prepare_parent(needed);
    std::string dir = parent_dir_ + "/" + name;
    if (::mkdir(dir.c_str(), 0755) != 0) {
      if (errno == EEXIST) throw Error(ErrorCode::conflict, "cgroup " + dir + " already exists");
      throw_errno("mkdir " + dir);
    }
    auto cg = std::make_unique<CgroupV2>(dir, name, true);
    if (limits.any()) cg->set_limits(limits);  // a new cgroup has no limits
    return cg;
  }

  std::unique_ptr<Cgroup> open(const std::string& name) override {
    validate_name(name);
    return std::make_unique<CgroupV2>(parent_dir_ + "/" + name, name, false);
  }

  bool exists(const std::string& name) const override { return is_dir(parent_dir_ + "/" + name); }

  std::vector<std::string> list() const override {
    std::vector<std::string> out;
    for (const auto& e : read_dir(parent_dir_)) {
      if (e.type == DT_DIR) out.push_back(e.name);
    }
    return out;
  }

 private:
  // The parent must exist and pass the controllers a box needs down to it.
  void prepare_parent(const std::vector<std::string>& needed) {
    if (!parent_ready_) {
      ensure_dir(parent_dir_);
      parent_ready_ = true;
    }
    for (const auto& controller : needed) {
      if (enabled_.count(controller)) continue;
      if (!has_word(read_control(root_ + "/cgroup.controllers"), controller)) {
        throw Error(ErrorCode::unavailable,
                    "cgroup v2 controller \"" + controller + "\" is not available in " + root_);
      }
      for (const auto& dir : {root_, parent_dir_}) {
        if (!has_word(read_control(dir + "/cgroup.subtree_control"), controller)) {
          write_control(dir + "/cgroup.subtree_control", "+" + controller,
                        "enabling the " + controller + " controller");
        }
      }
      enabled_.insert(controller);
    }
  }

  static bool has_word(const std::string& text, const std::string& word) {
    std::istringstream in(text);
    std::string w;
    while (in >> w) {
      if (w == word) return true;
    }
    return false;
  }

  std::string root_;
  std::string parent_dir_;
  bool parent_ready_ = false;
  std::set<std::string> enabled_;
};

}  // namespace

std::unique_ptr<Cgroups> Cgroups::v2(const std::string& root, const std::string& parent) {
  return std::make_unique<CgroupsV2>(root, parent);
}

std::unique_ptr<Cgroups> Cgroups::detect(const std::string& parent) {
  const std::string root = "/sys/fs/cgroup";
  struct statfs st;
  if (::statfs(root.c_str(), &st) != 0) throw_errno("statfs " + root);
  if (st.f_type == CGROUP2_SUPER_MAGIC) return std::make_unique<CgroupsV2>(root, parent);

  V1Layout layout;
  const std::pair<const char*, std::string*> slots[] = {{"cpu", &layout.cpu},
                                                        {"cpuacct", &layout.cpuacct},
                                                        {"memory", &layout.memory},
                                                        {"pids", &layout.pids},
                                                        {"freezer", &layout.freezer}};
  // The usual layout (/sys/fs/cgroup/<controller>, with symlinks for co-mounted ones) takes a
  // few statfs calls; anything else is looked up in mountinfo.
  for (auto [name, slot] : slots) {
    std::string path = root + "/" + name;
    struct statfs fs;
    if (::statfs(path.c_str(), &fs) == 0 && fs.f_type == CGROUP_SUPER_MAGIC) *slot = path;
  }
  if (layout.cpu.empty() || layout.memory.empty() || layout.pids.empty()) {
    layout = V1Layout{};
    for (const auto& [controller, mount] :
         cgroup_format::v1_mounts(read_file("/proc/self/mountinfo"))) {
      for (auto [name, slot] : slots) {
        if (controller == name && slot->empty()) *slot = mount;
      }
    }
  }
  for (auto [name, slot] : {slots[0], slots[2], slots[3]}) {
    if (slot->empty()) {
      throw Error(ErrorCode::unavailable,
                  std::string("cgroup v1 controller \"") + name + "\" is not mounted");
    }
  }
  // Co-mounted controllers (cpu,cpuacct) share one hierarchy: one directory per hierarchy.
  std::vector<dev_t> devices;
  for (auto [name, slot] : slots) {
    struct stat sb;
    if (slot->empty() || ::stat(slot->c_str(), &sb) != 0) continue;
    bool seen = false;
    for (dev_t d : devices) seen = seen || d == sb.st_dev;
    if (seen) continue;
    devices.push_back(sb.st_dev);
    layout.distinct.push_back(*slot);
  }
  return std::make_unique<CgroupsV1>(std::move(layout), parent);
}

}  // namespace pitbox::sys
