#include "sys/fs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
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
