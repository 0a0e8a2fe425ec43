#include "sys/cgroup.h"

#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sys/error.h"
#include "sys/fs.h"

// The file formats of both drivers; the v2 driver on a cgroup2 hierarchy when the machine has
// one (a hybrid machine's has no controllers: everything but limits); the v1 driver runs for
// real in the runtime and integration tests.
namespace pitbox::sys {
namespace {

std::string sys_read(const std::string& path) {
  try {
    return read_file(path);
  } catch (const Error&) {
    return "";
  }
}

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

// A cgroup2 hierarchy to test the v2 driver on, if there is one.
std::string cgroup2_root() {
  for (const char* p : {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
    struct statfs st;
    if (::statfs(p, &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC && ::access(p, W_OK) == 0) {
      return p;
    }
  }
  return "";
}

TEST(CgroupV2, CreatesJoinsKillsAndRemoves) {
  std::string root = cgroup2_root();
  if (root.empty() || ::geteuid() != 0) GTEST_SKIP() << "no writable cgroup2 hierarchy";
  auto cgroups = Cgroups::v2(root, "pitbox-unit-test");
  EXPECT_EQ(cgroups->version(), "v2");
  auto cg = cgroups->create("box1", {}, false);
  EXPECT_TRUE(cgroups->exists("box1"));
  EXPECT_EQ(cgroups->list(), std::vector<std::string>{"box1"});
  EXPECT_THROW(cgroups->create("box1", {}, false), Error);  // already there, and not ours
  EXPECT_TRUE(cgroups->exists("box1"));
  pid_t child = ::fork();
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  cg->add_process(child);
  EXPECT_EQ(cg->processes(), std::vector<pid_t>{child});
  cg->remove();  // kills what is inside first
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_FALSE(cgroups->exists("box1"));
  ::rmdir((root + "/pitbox-unit-test").c_str());
}

TEST(CgroupV2, MissingControllerIsAClearError) {
  std::string root = cgroup2_root();
  if (root.empty() || ::geteuid() != 0) GTEST_SKIP() << "no writable cgroup2 hierarchy";
  std::string available = sys_read(root + "/cgroup.controllers");
  if (available.find("pids") != std::string::npos) GTEST_SKIP() << "pids is available here";
  auto cgroups = Cgroups::v2(root, "pitbox-unit-test");
  try {
    cgroups->create("box2", {.pids = 10}, false);
    FAIL() << "created a pids limit without the pids controller";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unavailable);
    EXPECT_NE(e.message().find("pids"), std::string::npos) << e.message();
  }
  EXPECT_FALSE(cgroups->exists("box2"));
  ::rmdir((root + "/pitbox-unit-test").c_str());
}

}  // namespace
}  // namespace pitbox::sys
