#include "sys/cgroup.h"

#include <gtest/gtest.h>

// The v2 driver cannot run on a machine whose controllers are bound to v1; its file formats are
// checked here, and the v1 driver runs for real in the runtime tests.
namespace pitbox::sys {
namespace {

TEST(CgroupFormat, CpuQuota) {
  EXPECT_EQ(cgroup_format::v1_cfs_quota_us(500, 100000), 50000u);
  EXPECT_EQ(cgroup_format::v1_cfs_quota_us(2000, 100000), 200000u);
  EXPECT_EQ(cgroup_format::v2_cpu_max(250, 100000), "25000 100000");
  EXPECT_EQ(cgroup_format::v2_cpu_max(0, 100000), "max 100000");
}

TEST(CgroupFormat, KeyedValues) {
  std::string events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\n";
  EXPECT_EQ(cgroup_format::keyed_value(events, "oom_kill"), 2u);
  EXPECT_EQ(cgroup_format::keyed_value(events, "oom"), 3u);
  EXPECT_EQ(cgroup_format::keyed_value(events, "missing"), 0u);
  EXPECT_EQ(cgroup_format::keyed_value("oom_kill_disable 0\nunder_oom 0\noom_kill 7", "oom_kill"),
            7u);
}

TEST(CgroupFormat, FindsV1MountsInMountinfo) {
  std::string mi =
      "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:10 - cgroup cgroup rw,cpu,cpuacct\n"
      "31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:11 - cgroup cgroup rw,memory\n"
      "32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
  auto mounts = cgroup_format::v1_mounts(mi);
  auto find = [&](const std::string& c) -> std::string {
    for (const auto& [name, mp] : mounts) {
      if (name == c) return mp;
    }
    return "";
  };
  EXPECT_EQ(find("cpu"), "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_EQ(find("cpuacct"), "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_EQ(find("memory"), "/sys/fs/cgroup/memory");
  EXPECT_EQ(find("pids"), "");
}

}  // namespace
}  // namespace pitbox::sys
