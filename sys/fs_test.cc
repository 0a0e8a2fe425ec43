#include "sys/fs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "sys/error.h"

namespace pitbox::sys {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/pitbox-fs-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { remove_tree(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(RemoveTree, RemovesDeepTreesButNeverFollowsSymlinks) {
  TempDir outside, t;
  write_file(outside.path() + "/keep", "precious");
  make_dirs(t.path() + "/a/b/c");
  write_file(t.path() + "/a/b/c/f", "x");
  ASSERT_EQ(::symlink(outside.path().c_str(), (t.path() + "/a/link").c_str()), 0);
  ASSERT_EQ(::chmod((t.path() + "/a/b").c_str(), 0), 0);  // like overlayfs's work/work
  remove_tree(t.path() + "/a");
  EXPECT_FALSE(exists(t.path() + "/a"));
  EXPECT_EQ(read_file(outside.path() + "/keep"), "precious");
  remove_tree(t.path() + "/does-not-exist");  // not an error
}

TEST(RemoveTree, RemovesTreesDeeperThanTheFdLimit) {
  TempDir t;
  // 3000 levels: a recursive removal holding one fd per level would need more fds than the
  // child below may open.
  UniqueFd dir(::open(t.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  for (int i = 0; i < 3000; ++i) {
    ASSERT_EQ(::mkdirat(dir.get(), "d", 0755), 0);
    dir = UniqueFd(::openat(dir.get(), "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(dir.valid());
  }
  dir.reset();
  pid_t pid = ::fork();
  if (pid == 0) {
    rlimit few{64, 64};
    ::setrlimit(RLIMIT_NOFILE, &few);
    try {
      remove_tree(t.path() + "/d");
    } catch (...) {
      ::_exit(1);
    }
    ::_exit(exists(t.path() + "/d") ? 2 : 0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(OpenInRoot, NeverLeavesTheRoot) {
  TempDir root;
  make_dirs(root.path() + "/etc");
  write_file(root.path() + "/etc/passwd", "inside");
  ASSERT_EQ(::symlink("/etc/passwd", (root.path() + "/abs").c_str()), 0);
  ASSERT_EQ(::symlink("../../../../etc/passwd", (root.path() + "/rel").c_str()), 0);
  UniqueFd rootfd(::open(root.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  for (const char* p : {"/etc/passwd", "../../etc/passwd", "abs", "rel", "/../etc/./passwd"}) {
    UniqueFd fd = open_in_root(rootfd.get(), p, O_RDONLY);
    ASSERT_TRUE(fd.valid()) << p;
    EXPECT_EQ(read_fd(fd.get()), "inside") << p;
  }
  UniqueFd magic = open_in_root(rootfd.get(), "/proc/self/root/etc/passwd", O_RDONLY);
  EXPECT_FALSE(magic.valid());
}

TEST(SplitParent, SplitsTheLastComponent) {
  EXPECT_EQ(split_parent("/a/b/c"), std::make_pair(std::string("/a/b"), std::string("c")));
  EXPECT_EQ(split_parent("/a"), std::make_pair(std::string("/"), std::string("a")));
  EXPECT_EQ(split_parent("a"), std::make_pair(std::string("."), std::string("a")));
  EXPECT_EQ(split_parent("/a/b/"), std::make_pair(std::string("/a"), std::string("b")));
  EXPECT_EQ(join_path("/a/", "/b"), "/a/b");
}

TEST(WriteFileAtomic, ReplacesWholeFiles) {
  TempDir t;
  write_file_atomic(t.path() + "/f", "one");
  write_file_atomic(t.path() + "/f", "two");
  EXPECT_EQ(read_file(t.path() + "/f"), "two");
}

}  // namespace
}  // namespace pitbox::sys
