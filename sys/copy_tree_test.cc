#include "sys/copy_tree.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "sys/error.h"
#include "sys/fs.h"

namespace pitbox::sys {
namespace {

// Runs a system call's result through throw_errno, so a failed setup names what failed.
void ok(int rc, const std::string& what) {
  if (rc != 0) throw_errno(what);
}

struct stat lstat_of(const std::string& path) {
  struct stat st;
  ok(::lstat(path.c_str(), &st), "lstat " + path);
  return st;
}

std::string xattr_of(const std::string& path, const std::string& key) {
  char buf[256];
  ssize_t n = ::lgetxattr(path.c_str(), key.c_str(), buf, sizeof buf);
  return n < 0 ? "<none>" : std::string(buf, static_cast<size_t>(n));
}

void set_xattr(const std::string& path, const std::string& key, const std::string& value) {
  ok(::lsetxattr(path.c_str(), key.c_str(), value.data(), value.size(), 0), "set " + key);
}

void set_mtime(const std::string& path, time_t sec, long nsec) {
  const struct timespec times[2] = {{sec - 100, nsec / 2}, {sec, nsec}};
  ok(::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW), "utimensat " + path);
}

std::string read_noatime(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOATIME | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  return read_fd(fd.get());
}

// Everything copy_tree keeps, for each entry below `root`: type, mode, owner, device, size,
// times to the nanosecond (atimes but a symlink's), link count, extended attributes, symlink target
// and contents. Reads with O_NOATIME, so describing changes no atime but a symlink's.
void describe(const std::string& root, const std::string& rel,
              std::map<std::string, std::string>& out) {
  std::string path = rel.empty() ? root : root + "/" + rel;
  struct stat st = lstat_of(path);
  std::string d = std::to_string(st.st_mode) + " " + std::to_string(st.st_uid) + ":" +
                  std::to_string(st.st_gid) + " rdev=" + std::to_string(st.st_rdev) +
                  " mtime=" + std::to_string(st.st_mtim.tv_sec) + "." +
                  std::to_string(st.st_mtim.tv_nsec);
  // Reading a symlink sets its atime (there is no O_NOATIME for readlink), in the source too.
  if (!S_ISLNK(st.st_mode)) {
    d += " atime=" + std::to_string(st.st_atim.tv_sec) + "." + std::to_string(st.st_atim.tv_nsec);
  }
  // Directories' sizes and link counts differ between filesystems (btrfs counts no subdirs).
  if (!S_ISDIR(st.st_mode)) {
    d += " size=" + std::to_string(st.st_size) + " nlink=" + std::to_string(st.st_nlink);
  }
  char names[4096];
  ssize_t n = ::llistxattr(path.c_str(), names, sizeof names);
  for (ssize_t pos = 0; pos < n; pos += static_cast<ssize_t>(std::strlen(names + pos)) + 1) {
    d += " " + std::string(names + pos) + "=" + xattr_of(path, names + pos);
  }
  if (S_ISLNK(st.st_mode)) {
    char target[4096];
    ssize_t len = ::readlink(path.c_str(), target, sizeof target);
    d += " -> " + std::string(target, static_cast<size_t>(std::max<ssize_t>(len, 0)));
  } else if (S_ISREG(st.st_mode) && st.st_size < (1 << 20)) {
    d += " data#" + std::to_string(std::hash<std::string>()(read_noatime(path)));
  }
  out[rel.empty() ? "." : rel] = d;
  if (!S_ISDIR(st.st_mode)) return;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOATIME | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  for (const auto& entry : read_dir(fd.get())) {
    describe(root, rel.empty() ? entry.name : rel + "/" + entry.name, out);
  }
}

std::map<std::string, std::string> describe(const std::string& root) {
  std::map<std::string, std::string> out;
  describe(root, "", out);
  return out;
}

class CopyTreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pitbox-copy-tree-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    src_ = dir_ + "/src";
    dst_ = dir_ + "/dst";
    ok(::mkdir(src_.c_str(), 0755), "mkdir " + src_);
  }
  void TearDown() override {
    for (auto it = mounts_.rbegin(); it != mounts_.rend(); ++it) {
      if (::umount2(it->c_str(), 0) != 0) ::umount2(it->c_str(), MNT_DETACH);
    }
    remove_tree(dir_);
  }

  // Mounts a tmpfs at `path` (made if missing); false where this process may not mount.
  bool mount_tmpfs(const std::string& path, const std::string& options = "") {
    make_dirs(path);
    if (::mount("tmpfs", path.c_str(), "tmpfs", 0, options.c_str()) != 0) return false;
    mounts_.push_back(path);
    return true;
  }

  std::string dir_, src_, dst_;
  std::vector<std::string> mounts_;
};

TEST_F(CopyTreeTest, CopiesEveryFileTypeWithOwnersModesTimesAndXattrs) {
  const std::string s = src_;
  write_file(s + "/file", "hello");
  ok(::chown((s + "/file").c_str(), 1234, 5678), "chown");
  ok(::chmod((s + "/file").c_str(), 04755), "chmod");  // after chown, which clears setuid
  set_xattr(s + "/file", "user.x", "1");
  make_dirs(s + "/dir/nested");
  write_file(s + "/dir/nested/deep", "deep");
  ok(::chown((s + "/dir").c_str(), 1234, 5678), "chown");
  ok(::chmod((s + "/dir").c_str(), 01777), "chmod");
  set_xattr(s + "/dir", "trusted.overlay.opaque", "y");
  ok(::mknod((s + "/whiteout").c_str(), S_IFCHR | 0, makedev(0, 0)), "mknod whiteout");
  ok(::mknod((s + "/loop").c_str(), S_IFBLK, makedev(7, 3)), "mknod block");
  ok(::chmod((s + "/loop").c_str(), 0660), "chmod");
  ok(::mkfifo((s + "/fifo").c_str(), 0620), "mkfifo");
  ok(::mknod((s + "/sock").c_str(), S_IFSOCK | 0755, 0), "mknod socket");
  ok(::symlink("../../etc", (s + "/link").c_str()), "symlink");
  ok(::lchown((s + "/link").c_str(), 1234, 5678), "lchown");
  // Not all filesystems keep trusted.* on symlinks and fifos; where they do, it is copied.
  bool link_xattr = ::lsetxattr((s + "/link").c_str(), "trusted.overlay.redirect", "x", 1, 0) == 0;
  bool fifo_xattr = ::lsetxattr((s + "/fifo").c_str(), "trusted.overlay.origin", "o", 1, 0) == 0;
  // File capabilities survive the chown that would clear them.
  write_file(s + "/cap", "binary");
  ok(::chown((s + "/cap").c_str(), 1234, 5678), "chown");
  vfs_cap_data cap{};
  cap.magic_etc = VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE;
  cap.data[0].permitted = 1u << CAP_NET_BIND_SERVICE;
  set_xattr(s + "/cap", "security.capability",
            std::string(reinterpret_cast<const char*>(&cap), XATTR_CAPS_SZ_2));
  // Nanosecond times, directories after their contents.
  set_mtime(s + "/file", 1'600'000'000, 123'456'789);
  set_mtime(s + "/link", 1'600'000'001, 987'654'321);
  set_mtime(s + "/whiteout", 1'600'000'002, 1);
  set_mtime(s + "/dir/nested", 1'600'000'003, 999'999'999);
  set_mtime(s + "/dir", 1'600'000'004, 500);
  set_mtime(s, 1'600'000'005, 42);
  auto before = describe(src_);

  CopyStats stats = copy_tree(src_, dst_);

  EXPECT_EQ(describe(dst_), before);
  EXPECT_EQ(describe(src_), before);  // the source is left as it was, atimes included
  EXPECT_EQ(stats.files, 8u);
  EXPECT_EQ(stats.bytes, 5u + 4u + 6u);
  EXPECT_FALSE(stats.reflinked);  // ext4 cannot reflink

  const std::string d = dst_;
  struct stat st = lstat_of(d + "/file");
  EXPECT_EQ(st.st_mode, S_IFREG | 04755);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'600'000'000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 123'456'789);
  EXPECT_EQ(xattr_of(d + "/file", "user.x"), "1");
  st = lstat_of(d + "/dir");
  EXPECT_EQ(st.st_mode, S_IFDIR | 01777);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_mtim.tv_nsec, 500);
  EXPECT_EQ(xattr_of(d + "/dir", "trusted.overlay.opaque"), "y");
  EXPECT_EQ(read_file(d + "/dir/nested/deep"), "deep");
  EXPECT_EQ(lstat_of(d + "/dir/nested").st_mtim.tv_nsec, 999'999'999);
  st = lstat_of(d + "/whiteout");
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(0, 0));
  st = lstat_of(d + "/loop");
  EXPECT_TRUE(S_ISBLK(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(7, 3));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_TRUE(S_ISFIFO(lstat_of(d + "/fifo").st_mode));
  EXPECT_TRUE(S_ISSOCK(lstat_of(d + "/sock").st_mode));
  st = lstat_of(d + "/link");
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'600'000'001);
  EXPECT_EQ(st.st_mtim.tv_nsec, 987'654'321);
  if (link_xattr) {
    EXPECT_EQ(xattr_of(d + "/link", "trusted.overlay.redirect"), "x");
  }
  if (fifo_xattr) {
    EXPECT_EQ(xattr_of(d + "/fifo", "trusted.overlay.origin"), "o");
  }
  EXPECT_EQ(xattr_of(d + "/cap", "security.capability"),
            xattr_of(s + "/cap", "security.capability"));
  st = lstat_of(d);
  EXPECT_EQ(st.st_mode, S_IFDIR | 0755);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'600'000'005);
  EXPECT_EQ(st.st_mtim.tv_nsec, 42);
}

TEST_F(CopyTreeTest, HardLinksStayHardLinks) {
  make_dirs(src_ + "/sub");
  write_file(src_ + "/a", "shared");
  ok(::link((src_ + "/a").c_str(), (src_ + "/sub/b").c_str()), "link");
  // Overlayfs links its whiteouts to one shared inode.
  ok(::mknod((src_ + "/w1").c_str(), S_IFCHR, makedev(0, 0)), "mknod");
  ok(::link((src_ + "/w1").c_str(), (src_ + "/sub/w2").c_str()), "link");
  // A name whose other link is outside the tree is an ordinary copy.
  write_file(dir_ + "/outside", "o");
  ok(::link((dir_ + "/outside").c_str(), (src_ + "/in").c_str()), "link");

  CopyStats stats = copy_tree(src_, dst_);

  struct stat a = lstat_of(dst_ + "/a"), b = lstat_of(dst_ + "/sub/b");
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_nlink, 2u);
  EXPECT_NE(a.st_ino, lstat_of(src_ + "/a").st_ino);
  struct stat w1 = lstat_of(dst_ + "/w1"), w2 = lstat_of(dst_ + "/sub/w2");
  EXPECT_EQ(w1.st_ino, w2.st_ino);
  EXPECT_TRUE(S_ISCHR(w2.st_mode));
  EXPECT_EQ(lstat_of(dst_ + "/in").st_nlink, 1u);
  EXPECT_EQ(read_file(dst_ + "/sub/b"), "shared");
  EXPECT_EQ(stats.files, 5u);
  EXPECT_EQ(stats.bytes, 6u + 1u);  // "shared" once
}

TEST_F(CopyTreeTest, SparseFilesStaySparse) {
  constexpr off_t kSize = off_t{1} << 30;
  constexpr off_t kAt = off_t{512} << 20;
  {
    UniqueFd fd(::open((src_ + "/sparse").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd);
    ok(::ftruncate(fd.get(), kSize), "ftruncate");
    std::string block(4096, 'x');
    ASSERT_EQ(::pwrite(fd.get(), block.data(), block.size(), kAt), 4096);
  }
  write_file(src_ + "/empty", "");

  CopyStats stats = copy_tree(src_, dst_);

  struct stat st = lstat_of(dst_ + "/sparse");
  EXPECT_EQ(st.st_size, kSize);
  EXPECT_LE(st.st_blocks * 512, 64 * 1024) << "the copy is not sparse";
  EXPECT_EQ(stats.bytes, static_cast<uint64_t>(kSize));
  UniqueFd fd(::open((dst_ + "/sparse").c_str(), O_RDONLY | O_CLOEXEC));
  char buf[4097];
  ASSERT_EQ(::pread(fd.get(), buf, sizeof buf, kAt - 1), 4097);
  EXPECT_EQ(buf[0], '\0');
  EXPECT_EQ(std::string(buf + 1, 4096), std::string(4096, 'x'));
  ASSERT_EQ(::pread(fd.get(), buf, 1, kSize - 1), 1);
  EXPECT_EQ(buf[0], '\0');
  EXPECT_EQ(lstat_of(dst_ + "/empty").st_size, 0);
}

TEST_F(CopyTreeTest, SymlinksAreCopiedNeverFollowed) {
  ok(::symlink("../../etc", (src_ + "/up").c_str()), "symlink");
  ok(::symlink("/etc", (src_ + "/abs").c_str()), "symlink");
  ok(::symlink("dangling/nowhere", (src_ + "/dangling").c_str()), "symlink");
  std::string long_target(3000, 'a');
  ok(::symlink(long_target.c_str(), (src_ + "/long").c_str()), "symlink");

  copy_tree(src_, dst_);

  for (const char* name : {"up", "abs", "dangling", "long"}) {
    EXPECT_TRUE(S_ISLNK(lstat_of(dst_ + "/" + name).st_mode)) << name;
  }
  char buf[4096];
  ssize_t n = ::readlink((dst_ + "/up").c_str(), buf, sizeof buf);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), "../../etc");
  n = ::readlink((dst_ + "/long").c_str(), buf, sizeof buf);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), long_target);
}

TEST_F(CopyTreeTest, RefusesAnExistingDest) {
  make_dirs(dst_);
  write_file(dst_ + "/keep", "k");
  write_file(src_ + "/f", "f");
  try {
    copy_tree(src_, dst_);
    FAIL() << "copied over an existing directory";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::conflict);
    EXPECT_NE(e.message().find(dst_), std::string::npos) << e.message();
  }
  EXPECT_EQ(read_file(dst_ + "/keep"), "k");
  EXPECT_FALSE(exists(dst_ + "/f"));
}

TEST_F(CopyTreeTest, AMissingSourceOrParentIsAnErrorNamingIt) {
  try {
    copy_tree(dir_ + "/missing", dst_);
    FAIL() << "copied a missing source";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::not_found);
    EXPECT_NE(e.message().find(dir_ + "/missing"), std::string::npos) << e.message();
  }
  EXPECT_FALSE(exists(dst_));
  EXPECT_THROW(copy_tree(src_, dir_ + "/no/parent"), Error);
  EXPECT_FALSE(exists(dir_ + "/no"));
}

TEST_F(CopyTreeTest, AnErrorMidwayLeavesNothingBehind) {
  // A tmpfs with room for a few inodes: the copy runs out of them halfway.
  if (!mount_tmpfs(dir_ + "/small", "nr_inodes=8")) GTEST_SKIP() << "cannot mount tmpfs";
  make_dirs(src_ + "/a/b");
  for (int i = 0; i < 20; ++i) write_file(src_ + "/a/b/f" + std::to_string(i), "data");
  const std::string dest = dir_ + "/small/copy";
  try {
    copy_tree(src_, dest);
    FAIL() << "copied 23 inodes onto a filesystem with room for 8";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find(dest + "/a/b/f"), std::string::npos) << e.message();
  }
  EXPECT_FALSE(exists(dest));
  EXPECT_TRUE(read_dir(dir_ + "/small").empty());
}

TEST_F(CopyTreeTest, RefusesToCopyIntoItself) {
  write_file(src_ + "/f", "f");
  EXPECT_THROW(copy_tree(src_, src_ + "/inner"), Error);
  EXPECT_FALSE(exists(src_ + "/inner"));
}

TEST_F(CopyTreeTest, DoesNotCrossIntoOtherMounts) {
  write_file(src_ + "/kept", "k");
  if (!mount_tmpfs(src_ + "/tmp")) GTEST_SKIP() << "cannot mount tmpfs";
  write_file(src_ + "/tmp/other-fs", "x");
  // A bind mount of the same filesystem: same device, another mount.
  make_dirs(src_ + "/bound");
  make_dirs(dir_ + "/elsewhere");
  write_file(dir_ + "/elsewhere/secret", "s");
  ok(::mount((dir_ + "/elsewhere").c_str(), (src_ + "/bound").c_str(), nullptr, MS_BIND, nullptr),
     "bind mount");
  mounts_.push_back(src_ + "/bound");

  CopyStats stats = copy_tree(src_, dst_);

  EXPECT_EQ(read_file(dst_ + "/kept"), "k");
  EXPECT_FALSE(exists(dst_ + "/tmp"));
  EXPECT_FALSE(exists(dst_ + "/bound"));
  EXPECT_EQ(stats.files, 1u);
}

TEST_F(CopyTreeTest, DropsAclsInheritedFromDestsParentButCopiesTheSources) {
  // A default ACL (user 1234 rwx) on the parent of dest would be inherited by everything made
  // below it.
  auto acl = [](uint32_t user) {
    struct __attribute__((packed)) AclEntry {
      uint16_t tag, perm;
      uint32_t id;
    };
    std::vector<AclEntry> entries = {
        {0x01, 7, ~0u}, {0x02, 7, user}, {0x04, 5, ~0u}, {0x10, 7, ~0u}, {0x20, 5, ~0u}};
    uint32_t version = 2;
    std::string value(reinterpret_cast<const char*>(&version), sizeof version);
    value.append(reinterpret_cast<const char*>(entries.data()), entries.size() * sizeof(AclEntry));
    return value;
  };
  const std::string parent = dir_ + "/out";
  make_dirs(parent);
  if (::setxattr(parent.c_str(), "system.posix_acl_default", acl(1234).data(), acl(1234).size(),
                 0) != 0) {
    GTEST_SKIP() << "no POSIX ACLs here: " << std::strerror(errno);
  }
  make_dirs(src_ + "/withacl");
  write_file(src_ + "/withacl/f", "f");
  write_file(src_ + "/plain", "p");
  set_xattr(src_ + "/withacl", "system.posix_acl_default", acl(4321));
  auto before = describe(src_);

  copy_tree(src_, parent + "/copy");

  EXPECT_EQ(describe(parent + "/copy"), before);
  EXPECT_EQ(xattr_of(parent + "/copy", "system.posix_acl_default"), "<none>");
  EXPECT_EQ(xattr_of(parent + "/copy/plain", "system.posix_acl_access"), "<none>");
  EXPECT_EQ(xattr_of(parent + "/copy/withacl", "system.posix_acl_default"), acl(4321));
  EXPECT_EQ(xattr_of(parent + "/copy/withacl/f", "system.posix_acl_access"), "<none>");
}

TEST_F(CopyTreeTest, ReflinksWhereTheFilesystemCan) {
  if (::system("command -v mkfs.btrfs >/dev/null") != 0) GTEST_SKIP() << "no mkfs.btrfs";
  const std::string image = dir_ + "/btrfs.img", mnt = dir_ + "/btrfs";
  make_dirs(mnt);
  std::string cmd = "truncate -s 128M " + image + " && mkfs.btrfs -q -f " + image +
                    " >/dev/null 2>&1 && mount -o loop " + image + " " + mnt;
  if (::system(cmd.c_str()) != 0) GTEST_SKIP() << "cannot mount a btrfs image";
  mounts_.push_back(mnt);
  make_dirs(mnt + "/src/d");
  std::string data;
  for (int i = 0; i < 100000; ++i) data += std::to_string(i);
  write_file(mnt + "/src/d/big", data);
  write_file(mnt + "/src/small", "s");
  auto before = describe(mnt + "/src");

  CopyStats stats = copy_tree(mnt + "/src", mnt + "/dst");

  EXPECT_TRUE(stats.reflinked);
  EXPECT_EQ(stats.bytes, data.size() + 1);
  EXPECT_EQ(describe(mnt + "/dst"), before);

  // Across filesystems there is nothing to share: the data is copied.
  stats = copy_tree(mnt + "/src", dst_);
  EXPECT_FALSE(stats.reflinked);
  EXPECT_EQ(describe(dst_), before);
}

TEST_F(CopyTreeTest, TreeSizeCountsFileBlocksOnceAndStaysOnOneMount) {
  write_file(src_ + "/a", std::string(10000, 'a'));
  make_dirs(src_ + "/d/e");
  write_file(src_ + "/d/e/b", std::string(100000, 'b'));
  ok(::link((src_ + "/a").c_str(), (src_ + "/d/a2").c_str()), "link");
  ok(::symlink("/usr", (src_ + "/usr").c_str()), "symlink");
  {
    UniqueFd fd(::open((src_ + "/sparse").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    ok(::ftruncate(fd.get(), off_t{1} << 30), "ftruncate");
  }
  ok(::fsync(UniqueFd(::open((src_ + "/d/e/b").c_str(), O_RDONLY)).get()), "fsync");
  uint64_t expected = 0;
  for (const char* name : {"/a", "/d/e/b", "/sparse"}) {
    expected += static_cast<uint64_t>(lstat_of(src_ + name).st_blocks) * 512;
  }
  EXPECT_GE(expected, 110000u);
  EXPECT_LT(expected, 200000u);
  if (mount_tmpfs(src_ + "/mnt")) write_file(src_ + "/mnt/big", std::string(1 << 20, 'm'));

  EXPECT_EQ(tree_size(src_), expected);
  EXPECT_EQ(tree_size(src_ + "/a"), static_cast<uint64_t>(lstat_of(src_ + "/a").st_blocks) * 512);
  EXPECT_THROW(tree_size(dir_ + "/missing"), Error);
}

}  // namespace
}  // namespace pitbox::sys
