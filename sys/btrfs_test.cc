#include "sys/btrfs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <set>
#include <sstream>
#include <thread>

#include "sys/error.h"
#include "sys/fs.h"
#include "sys/loop.h"

namespace pitbox::sys {
namespace {

constexpr uint64_t kMiB = uint64_t{1024} * 1024;

// Why these tests cannot run here, or "" when they can.
std::string missing_loop_support() {
  if (::geteuid() != 0) return "needs root";
  if (!exists("/dev/loop-control")) return "needs /dev/loop-control";
  return "";
}

std::string missing_btrfs_support() {
  if (auto why = missing_loop_support(); !why.empty()) return why;
  if (read_file("/proc/filesystems").find("\tbtrfs\n") == std::string::npos) {
    return "needs a kernel with btrfs";
  }
  for (const char* mkfs : {"/usr/sbin/mkfs.btrfs", "/sbin/mkfs.btrfs"}) {
    if (::access(mkfs, X_OK) == 0) return "";
  }
  return "needs mkfs.btrfs (btrfs-progs)";
}

std::string make_temp_dir(const char* what) {
  std::string tmpl = std::string("/tmp/pitbox-") + what + "-test-XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw_errno("mkdtemp");
  return tmpl;
}

std::string real_path(const std::string& path) {
  char* real = ::realpath(path.c_str(), nullptr);
  if (!real) throw_errno("realpath " + path);
  std::string out(real);
  std::free(real);
  return out;
}

// Waits a little for something the kernel finishes after the call that started it.
template <typename Pred>
bool eventually(Pred pred) {
  for (int i = 0; i < 200; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

bool no_loop_device_for(const std::string& file) {
  return eventually([&] { return loop_devices_of(file).empty(); });
}

// How many mounts sit on `path` (its mountinfo field 5; test paths have no spaces).
int mounts_on(const std::string& path) {
  std::istringstream in(read_file("/proc/self/mountinfo"));
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, mountpoint;
    fields >> id >> parent >> dev >> root >> mountpoint;
    if (mountpoint == path) ++n;
  }
  return n;
}

// Writes `bytes` of data in 1 MiB pieces and syncs; returns 0 or the first errno.
int write_bytes(const std::string& path, uint64_t bytes) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return errno;
  std::string chunk(kMiB, 'x');
  for (uint64_t done = 0; done < bytes; done += chunk.size()) {
    if (!write_all(fd.get(), chunk)) return errno;
  }
  if (::fsync(fd.get()) != 0) return errno;
  return 0;
}

// errno of creating a file, or 0.
int create_error(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  return fd ? 0 : errno;
}

// A 256 MiB pool of its own in a temporary directory, always unmounted and removed after.
class BtrfsPool : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = missing_btrfs_support(); !why.empty()) GTEST_SKIP() << why;
    dir_ = make_temp_dir("btrfs");
    file_ = dir_ + "/pool.img";
    mnt_ = dir_ + "/mnt";
    btrfs::mount_pool({file_, 256 * kMiB, mnt_});
  }

  void TearDown() override {
    if (dir_.empty()) return;
    try {
      btrfs::unmount_pool(mnt_);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "unmount_pool: " << e.what();
      ::umount2(mnt_.c_str(), MNT_DETACH);
    }
    EXPECT_TRUE(no_loop_device_for(file_)) << "a loop device still holds " << file_;
    remove_tree(dir_);
  }

  std::string path(const std::string& name) const { return mnt_ + "/" + name; }

  std::string dir_, file_, mnt_;
};

TEST_F(BtrfsPool, MountsAFreshlyFormattedSparseFile) {
  EXPECT_TRUE(btrfs::is_btrfs(mnt_));
  EXPECT_EQ(mounts_on(mnt_), 1);
  EXPECT_EQ(btrfs::subvolume_id(mnt_), 5u);  // the top level
  EXPECT_EQ(loop_devices_of(file_).size(), 1u);
  struct stat st {};
  ASSERT_EQ(::stat(file_.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 256 * kMiB);
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 256 * kMiB);  // sparse
  EXPECT_EQ(read_dir(dir_).size(), 2u);                              // pool.img and mnt only
}

TEST_F(BtrfsPool, SnapshotsAreIndependentCopies) {
  std::string src = path("src"), ro = path("ro"), rw = path("rw");
  btrfs::create_subvolume(src);
  write_file(src + "/f", "one");
  btrfs::snapshot(src, ro, /*read_only=*/true);
  btrfs::snapshot(src, rw, /*read_only=*/false);
  write_file(src + "/f", "two");
  write_file(src + "/later", "x");

  EXPECT_EQ(read_file(ro + "/f"), "one");
  EXPECT_EQ(read_file(rw + "/f"), "one");
  EXPECT_FALSE(exists(ro + "/later"));
  EXPECT_FALSE(exists(rw + "/later"));
  write_file(rw + "/f", "three");
  EXPECT_EQ(read_file(src + "/f"), "two");

  std::set<uint64_t> ids = {btrfs::subvolume_id(src), btrfs::subvolume_id(ro),
                            btrfs::subvolume_id(rw)};
  EXPECT_EQ(ids.size(), 3u);
  EXPECT_GE(*ids.begin(), 256u);
  EXPECT_EQ(btrfs::subvolume_id(src + "/f"), btrfs::subvolume_id(src));
  EXPECT_TRUE(btrfs::is_read_only(ro));
  EXPECT_FALSE(btrfs::is_read_only(rw));
}

TEST_F(BtrfsPool, ReadOnlySnapshotRefusesWrites) {
  std::string src = path("src"), ro = path("ro");
  btrfs::create_subvolume(src);
  write_file(src + "/f", "one");
  btrfs::snapshot(src, ro, true);

  EXPECT_EQ(create_error(ro + "/new"), EROFS);
  UniqueFd existing(::open((ro + "/f").c_str(), O_WRONLY | O_CLOEXEC));
  int open_error = existing ? 0 : errno;
  EXPECT_EQ(open_error, EROFS);
  EXPECT_NE(::unlink((ro + "/f").c_str()), 0);
  EXPECT_EQ(errno, EROFS);
  EXPECT_NE(::mkdir((ro + "/d").c_str(), 0755), 0);
  EXPECT_EQ(errno, EROFS);

  btrfs::set_read_only(ro, false);
  EXPECT_EQ(create_error(ro + "/new"), 0);
  btrfs::set_read_only(ro, true);
  EXPECT_EQ(create_error(ro + "/newer"), EROFS);
  btrfs::set_read_only(ro, true);  // already so: no-op
  EXPECT_TRUE(btrfs::is_read_only(ro));
}

TEST_F(BtrfsPool, DeletesSubvolumesAndSnapshotsOfBothKinds) {
  std::string src = path("src");
  btrfs::create_subvolume(src);
  make_dirs(src + "/a/b");
  write_file(src + "/a/b/f", "data");
  btrfs::snapshot(src, path("ro"), true);
  btrfs::snapshot(src, path("rw"), false);

  btrfs::delete_subvolume(path("ro"));
  btrfs::delete_subvolume(path("rw"));
  btrfs::delete_subvolume(src);  // not empty: fine
  EXPECT_FALSE(exists(path("ro")));
  EXPECT_FALSE(exists(path("rw")));
  EXPECT_FALSE(exists(src));

  btrfs::delete_subvolume(path("never-was"));         // missing: not an error
  btrfs::delete_subvolume(path("no-parent/either"));  // nor is a missing parent

  make_dirs(path("plain"));
  try {
    btrfs::delete_subvolume(path("plain"));
    FAIL() << "deleted a plain directory";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
  }
  EXPECT_TRUE(is_dir(path("plain")));
}

TEST_F(BtrfsPool, TellsSubvolumesFromDirectories) {
  btrfs::create_subvolume(path("sub"));
  make_dirs(path("sub/dir"));
  make_dirs(path("dir"));
  write_file(path("file"), "");
  btrfs::snapshot(path("sub"), path("snap"), true);

  EXPECT_TRUE(btrfs::is_subvolume(path("sub")));
  EXPECT_TRUE(btrfs::is_subvolume(path("snap")));
  EXPECT_TRUE(btrfs::is_subvolume(mnt_));  // the top level is one too
  EXPECT_FALSE(btrfs::is_subvolume(path("sub/dir")));
  EXPECT_FALSE(btrfs::is_subvolume(path("dir")));
  EXPECT_FALSE(btrfs::is_subvolume(path("file")));
  EXPECT_FALSE(btrfs::is_subvolume(path("missing")));
  EXPECT_FALSE(btrfs::is_btrfs(dir_));
  EXPECT_FALSE(btrfs::is_btrfs(path("missing")));
}

TEST_F(BtrfsPool, SnapshotRefusesADirectoryThatIsNoSubvolume) {
  make_dirs(path("dir"));
  EXPECT_THROW(btrfs::snapshot(path("dir"), path("snap"), false), Error);
  EXPECT_FALSE(exists(path("snap")));
  btrfs::create_subvolume(path("sub"));
  EXPECT_THROW(btrfs::create_subvolume(path("sub")), Error);  // EEXIST
  EXPECT_THROW(btrfs::snapshot(path("sub"), path("sub"), false), Error);
  try {
    btrfs::create_subvolume(dir_ + "/not-on-btrfs");
    FAIL() << "created a subvolume outside btrfs";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
  }
}

TEST_F(BtrfsPool, SizeLimitStopsWritesWithEDQUOT) {
  std::string limited = path("limited"), free = path("free");
  btrfs::create_subvolume(free);  // made before quota was on: the rescan counts it
  btrfs::enable_quota(mnt_);
  btrfs::enable_quota(mnt_);  // again: no-op
  btrfs::create_subvolume(limited);
  btrfs::set_size_limit(limited, 10 * kMiB);

  EXPECT_EQ(write_bytes(limited + "/big", 20 * kMiB), EDQUOT);
  uint64_t used = btrfs::referenced_bytes(limited);
  EXPECT_LE(used, 10 * kMiB);
  EXPECT_GT(used, 0u);
  EXPECT_EQ(write_bytes(free + "/big", 20 * kMiB), 0);  // a sibling has no limit
  EXPECT_GE(btrfs::referenced_bytes(free), 20 * kMiB);

  btrfs::set_size_limit(limited, 0);  // no limit
  EXPECT_EQ(write_bytes(limited + "/big", 20 * kMiB), 0);
  EXPECT_GE(btrfs::referenced_bytes(limited), 20 * kMiB);
}

TEST_F(BtrfsPool, QuotaCallsWithoutQuotaSaySo) {
  btrfs::create_subvolume(path("sub"));
  for (auto call : {+[](const std::string& p) { btrfs::set_size_limit(p, kMiB); },
                    +[](const std::string& p) { btrfs::referenced_bytes(p); }}) {
    try {
      call(path("sub"));
      FAIL() << "worked without quota";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::unavailable) << e.what();
      EXPECT_NE(e.message().find("quota is not enabled"), std::string::npos) << e.what();
    }
  }
}

TEST_F(BtrfsPool, MountingAgainIsANoOp) {
  write_file(path("marker"), "here");
  btrfs::mount_pool({file_, 256 * kMiB, mnt_});
  EXPECT_EQ(mounts_on(mnt_), 1);
  EXPECT_EQ(loop_devices_of(file_).size(), 1u);
  EXPECT_EQ(read_file(path("marker")), "here");
}

TEST_F(BtrfsPool, UnmountFreesTheLoopDeviceAndTheFileMountsAgain) {
  write_file(path("marker"), "kept");
  btrfs::unmount_pool(mnt_);
  EXPECT_EQ(mounts_on(mnt_), 0);
  EXPECT_TRUE(no_loop_device_for(file_));
  for (const auto& entry : read_dir("/sys/block")) {
    if (entry.name.rfind("loop", 0) == 0) {
      EXPECT_NE(loop_backing_file(entry.name), real_path(file_)) << entry.name;
    }
  }
  btrfs::unmount_pool(mnt_);  // nothing mounted: no-op

  btrfs::mount_pool({file_, 256 * kMiB, mnt_});  // the existing image, not a new one
  EXPECT_EQ(read_file(path("marker")), "kept");
  EXPECT_EQ(loop_devices_of(file_).size(), 1u);
}

TEST_F(BtrfsPool, MountsTheLoopDeviceAlreadyOnTheFile) {
  btrfs::unmount_pool(mnt_);
  ASSERT_TRUE(no_loop_device_for(file_));
  {
    LoopDevice held = LoopDevice::attach(file_);
    btrfs::mount_pool({file_, 256 * kMiB, mnt_});
    EXPECT_EQ(loop_devices_of(file_), std::vector<std::string>{held.path()});
  }
  EXPECT_TRUE(btrfs::is_btrfs(mnt_));  // the mount keeps the device after `held` closes
  EXPECT_EQ(loop_devices_of(file_).size(), 1u);
}

// Pools whose setup is the test.
class BtrfsPoolSetup : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = missing_btrfs_support(); !why.empty()) GTEST_SKIP() << why;
    dir_ = make_temp_dir("btrfs-setup");
    file_ = dir_ + "/pool.img";
    mnt_ = dir_ + "/mnt";
  }
  void TearDown() override {
    if (dir_.empty()) return;
    ::umount2(mnt_.c_str(), MNT_DETACH);
    for (const auto& dev : loop_devices_of(file_)) {
      ADD_FAILURE() << dev << " left attached to " << file_;
    }
    remove_tree(dir_);
  }

  // Only what the test itself put there: no image, no half-written temporary file.
  void expect_nothing_left(const std::set<std::string>& expected) {
    std::set<std::string> names;
    for (const auto& entry : read_dir(dir_)) names.insert(entry.name);
    EXPECT_EQ(names, expected);
    EXPECT_EQ(mounts_on(mnt_), 0);
    EXPECT_TRUE(no_loop_device_for(file_));
  }

  std::string dir_, file_, mnt_;
};

TEST_F(BtrfsPoolSetup, TooSmallForMkfsThrowsAndLeavesNothing) {
  try {
    btrfs::mount_pool({file_, 1, mnt_});
    FAIL() << "mounted a 1 byte pool";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("mkfs.btrfs"), std::string::npos) << e.what();
  }
  expect_nothing_left({"mnt"});
  EXPECT_THROW(btrfs::mount_pool({file_, 0, mnt_}), Error);
  expect_nothing_left({"mnt"});
}

TEST_F(BtrfsPoolSetup, RefusesAFileThatHoldsNoBtrfs) {
  write_file(file_, std::string(kMiB, 'z'));
  try {
    btrfs::mount_pool({file_, 256 * kMiB, mnt_});
    FAIL() << "mounted a file of z";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
  }
  expect_nothing_left({"mnt", "pool.img"});  // not ours to remove
}

TEST_F(BtrfsPoolSetup, RefusesAMountpointWithAnotherFilesystem) {
  make_dirs(mnt_);
  ASSERT_EQ(::mount("tmpfs", mnt_.c_str(), "tmpfs", 0, "size=1m"), 0);
  try {
    btrfs::mount_pool({file_, 256 * kMiB, mnt_});
    FAIL() << "mounted over a tmpfs";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::conflict) << e.what();
  }
  EXPECT_THROW(btrfs::unmount_pool(mnt_), Error);  // not a pool: left alone
  EXPECT_EQ(mounts_on(mnt_), 1);
  ASSERT_EQ(::umount2(mnt_.c_str(), 0), 0);
  expect_nothing_left({"mnt"});
}

class LoopDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = missing_loop_support(); !why.empty()) GTEST_SKIP() << why;
    dir_ = make_temp_dir("loop");
  }
  void TearDown() override {
    if (dir_.empty()) return;
    for (const auto& entry : read_dir(dir_)) {
      EXPECT_TRUE(no_loop_device_for(dir_ + "/" + entry.name)) << entry.name;
    }
    remove_tree(dir_);
  }

  std::string make_file(const std::string& name) {
    std::string file = dir_ + "/" + name;
    write_file(file, std::string(kMiB, '\0'));
    return file;
  }

  std::string dir_;
};

TEST_F(LoopDeviceTest, AttachesAndDetaches) {
  std::string file = make_file("a.img");
  LoopDevice loop = LoopDevice::attach(file);
  ASSERT_TRUE(loop.valid());
  EXPECT_EQ(loop.path().rfind("/dev/loop", 0), 0u) << loop.path();
  EXPECT_EQ(loop_backing_file(loop.path()), real_path(file));
  EXPECT_EQ(loop_devices_of(file), std::vector<std::string>{loop.path()});
  std::string dev = loop.path();
  loop.detach();
  EXPECT_FALSE(loop.valid());
  EXPECT_TRUE(eventually([&] { return loop_backing_file(dev).empty(); }));
  loop.detach();  // twice: no-op
}

TEST_F(LoopDeviceTest, ClosingTheLastFdFreesIt) {
  std::string file = make_file("a.img");
  std::string dev;
  {
    LoopDevice loop = LoopDevice::attach(file);
    dev = loop.path();
    LoopDevice moved = std::move(loop);
    // NOLINTNEXTLINE(bugprone-use-after-move,clang-analyzer-cplusplus.Move): checks the move
    EXPECT_FALSE(loop.valid());
    EXPECT_TRUE(moved.valid());
    EXPECT_EQ(moved.path(), dev);
    EXPECT_EQ(loop_backing_file(dev), real_path(file));
  }
  EXPECT_TRUE(no_loop_device_for(file));
}

TEST_F(LoopDeviceTest, RacingAttachesGetDevicesOfTheirOwn) {
  constexpr int kThreads = 6;
  std::vector<std::string> files, paths(kThreads), errors(kThreads);
  for (int i = 0; i < kThreads; ++i) files.push_back(make_file(std::to_string(i) + ".img"));
  std::vector<LoopDevice> loops(kThreads);
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      try {
        loops[i] = LoopDevice::attach(files[i]);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> devices;
  for (int i = 0; i < kThreads; ++i) {
    EXPECT_EQ(errors[i], "");
    if (!loops[i].valid()) continue;
    devices.insert(loops[i].path());
    EXPECT_EQ(loop_backing_file(loops[i].path()), real_path(files[i]));
  }
  EXPECT_EQ(devices.size(), static_cast<size_t>(kThreads));
}

TEST_F(LoopDeviceTest, MissingFileIsNotFound) {
  try {
    LoopDevice::attach(dir_ + "/missing");
    FAIL() << "attached a missing file";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::not_found) << e.what();
  }
  EXPECT_EQ(loop_backing_file("loop999999"), "");
  EXPECT_THROW(loop_backing_file("/dev/.."), Error);
}

}  // namespace
}  // namespace pitbox::sys
