#include "init/files.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sys/error.h"
#include "sys/fs.h"

namespace pitbox::init {
namespace {

using nlohmann::json;

TEST(CleanPath, NormalisesAndStaysAtTheRoot) {
  EXPECT_EQ(clean_path("a//b/./c/../d"), "/a/b/d");
  EXPECT_EQ(clean_path("/../../etc"), "/etc");
  EXPECT_EQ(clean_path(""), "/");
  EXPECT_EQ(clean_path("/"), "/");
  EXPECT_EQ(clean_path("x/"), "/x");
}

class FilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pitbox-files-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    root_ = sys::UniqueFd(::open(dir_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  }
  void TearDown() override { sys::remove_tree(dir_); }
  json op(const std::string& name, json req) { return file_operation(root_.get(), name, req); }
  ErrorCode fails(const std::string& name, json req) {
    try {
      op(name, req);
    } catch (const Error& e) {
      return e.code();
    }
    ADD_FAILURE() << name << " " << req.dump() << " did not fail";
    return ErrorCode::internal;
  }

  std::string dir_;
  sys::UniqueFd root_;
};

TEST_F(FilesTest, MkdirStatListRenameChmodRemove) {
  op("mkdir", {{"path", "/a/b/c"}, {"parents", true}});
  EXPECT_EQ(op("mkdir", {{"path", "/a/b/c"}, {"parents", true}})["path"], "/a/b/c");  // idempotent
  EXPECT_EQ(fails("mkdir", {{"path", "/a/b/c"}}), ErrorCode::conflict);
  EXPECT_EQ(fails("mkdir", {{"path", "/x/y"}}), ErrorCode::not_found);
  sys::write_file(dir_ + "/a/f", "hello");
  json st = op("stat", {{"path", "/a/f"}});
  EXPECT_EQ(st["type"], "file");
  EXPECT_EQ(st["size"], 5);
  EXPECT_EQ(st["name"], "f");
  op("chmod", {{"path", "/a/f"}, {"mode", 0600}});
  struct stat s;
  ASSERT_EQ(::stat((dir_ + "/a/f").c_str(), &s), 0);
  EXPECT_EQ(s.st_mode & 07777, 0600u);
  ASSERT_EQ(::symlink("f", (dir_ + "/a/link").c_str()), 0);
  json list = op("list", {{"path", "/a"}});
  ASSERT_EQ(list["entries"].size(), 3u);
  EXPECT_EQ(list["entries"][0]["name"], "b");
  EXPECT_EQ(list["entries"][1]["name"], "f");
  EXPECT_EQ(list["entries"][2]["type"], "symlink");
  EXPECT_EQ(list["entries"][2]["target"], "f");
  EXPECT_TRUE(list["next"].is_null());
  json page = op("list", {{"path", "/a"}, {"limit", 1}});
  EXPECT_EQ(page["entries"].size(), 1u);
  EXPECT_EQ(page["next"], "b");
  EXPECT_EQ(op("list", {{"path", "/a"}, {"limit", 1}, {"after", "b"}})["entries"][0]["name"], "f");
  op("rename", {{"from", "/a/f"}, {"to", "/a/g"}});
  EXPECT_FALSE(sys::exists(dir_ + "/a/f"));
  EXPECT_EQ(sys::read_file(dir_ + "/a/g"), "hello");
  EXPECT_EQ(fails("remove", {{"path", "/a"}}), ErrorCode::conflict);
  op("remove", {{"path", "/a"}, {"recursive", true}});
  EXPECT_FALSE(sys::exists(dir_ + "/a"));
  EXPECT_EQ(fails("remove", {{"path", "/"}, {"recursive", true}}), ErrorCode::invalid_argument);
  EXPECT_EQ(fails("stat", {{"path", ""}}), ErrorCode::invalid_argument);
  EXPECT_EQ(fails("chmod", {{"path", "/nope"}, {"mode", 0644}}), ErrorCode::not_found);
  EXPECT_EQ(fails("chmod", {{"path", "/"}, {"mode", 077777}}), ErrorCode::invalid_argument);
}

TEST_F(FilesTest, SymlinksAndDotDotStayInsideTheRoot) {
  // A symlink pointing at the host's /etc must resolve to the root's own /etc.
  ASSERT_EQ(::symlink("/etc", (dir_ + "/evil").c_str()), 0);
  ASSERT_EQ(::symlink("../../../../../../etc/passwd", (dir_ + "/evil2").c_str()), 0);
  EXPECT_EQ(fails("stat", {{"path", "/evil/passwd"}, {"follow", true}}), ErrorCode::not_found);
  EXPECT_EQ(fails("stat", {{"path", "/evil2"}, {"follow", true}}), ErrorCode::not_found);
  EXPECT_EQ(fails("list", {{"path", "/../../../etc"}}), ErrorCode::not_found);
  // Writing through the symlink creates the file inside the root, not on the host.
  op("mkdir", {{"path", "/etc"}});
  json reply;
  sys::UniqueFd w = open_for_write(root_.get(), {{"path", "/evil/pitbox-test-file"}});
  ASSERT_TRUE(w.valid());
  EXPECT_TRUE(sys::exists(dir_ + "/etc/pitbox-test-file"));
  EXPECT_FALSE(sys::exists("/etc/pitbox-test-file"));
  // Removing a symlink removes the link, never what it points at.
  op("remove", {{"path", "/evil"}, {"recursive", true}});
  EXPECT_TRUE(sys::exists(dir_ + "/etc/pitbox-test-file"));
}

TEST_F(FilesTest, FindByNameAndType) {
  op("mkdir", {{"path", "/src/pkg"}, {"parents", true}});
  sys::write_file(dir_ + "/src/a.py", "x");
  sys::write_file(dir_ + "/src/pkg/b.py", "x");
  sys::write_file(dir_ + "/src/pkg/c.txt", "x");
  ASSERT_EQ(::symlink("/", (dir_ + "/src/loop").c_str()), 0);  // never followed
  json r = op("find", {{"path", "/src"}, {"name", "*.py"}});
  ASSERT_EQ(r["matches"].size(), 2u);
  EXPECT_EQ(r["matches"][0]["path"], "/src/a.py");
  EXPECT_EQ(r["matches"][1]["path"], "/src/pkg/b.py");
  EXPECT_FALSE(r["truncated"].get<bool>());
  EXPECT_EQ(op("find", {{"path", "/src"}, {"type", "dir"}})["matches"][0]["path"], "/src/pkg");
  EXPECT_EQ(op("find", {{"path", "/src"}, {"name", "*.py"}, {"max_depth", 1}})["matches"].size(),
            1u);
  json limited = op("find", {{"path", "/src"}, {"limit", 1}});
  EXPECT_EQ(limited["matches"].size(), 1u);
  EXPECT_TRUE(limited["truncated"].get<bool>());
}

TEST_F(FilesTest, GrepFixedAndRegex) {
  op("mkdir", {{"path", "/src"}});
  sys::write_file(dir_ + "/src/a.py", "import os\nprint('Hello')\n");
  sys::write_file(dir_ + "/src/b.txt", "hello world\n");
  sys::write_file(dir_ + "/src/bin", std::string("hello\0binary", 12));
  json r = op("grep", {{"path", "/src"}, {"pattern", "hello"}});
  ASSERT_EQ(r["matches"].size(), 1u);  // case-sensitive, binary skipped
  EXPECT_EQ(r["matches"][0]["path"], "/src/b.txt");
  EXPECT_EQ(r["matches"][0]["line"], 1);
  r = op("grep", {{"path", "/src"}, {"pattern", "hello"}, {"ignore_case", true}, {"glob", "*.py"}});
  ASSERT_EQ(r["matches"].size(), 1u);
  EXPECT_EQ(r["matches"][0]["line"], 2);
  r = op("grep", {{"path", "/src/a.py"}, {"pattern", "^imp.rt [a-z]+$"}, {"regex", true}});
  ASSERT_EQ(r["matches"].size(), 1u);
  EXPECT_EQ(r["matches"][0]["text"], "import os");
  EXPECT_EQ(fails("grep", {{"path", "/src"}, {"pattern", "(unclosed"}, {"regex", true}}),
            ErrorCode::invalid_argument);
}

TEST_F(FilesTest, SymlinkIsMadeInsideTheRoot) {
  op("symlink", {{"path", "/../link"}, {"target", "/etc/passwd"}});
  char target[64] = {};
  ASSERT_GT(::readlink((dir_ + "/link").c_str(), target, sizeof target - 1), 0);
  EXPECT_STREQ(target, "/etc/passwd");
  EXPECT_EQ(fails("symlink", {{"path", "/link"}, {"target", "x"}}), ErrorCode::conflict);
}

TEST_F(FilesTest, ReadRefusesDirectoriesAndFifos) {
  op("mkdir", {{"path", "/d"}});
  ASSERT_EQ(::mkfifo((dir_ + "/fifo").c_str(), 0644), 0);
  json reply;
  EXPECT_THROW(open_for_read(root_.get(), {{"path", "/d"}}, reply), Error);
  EXPECT_THROW(open_for_read(root_.get(), {{"path", "/fifo"}}, reply), Error);
  EXPECT_THROW(open_for_write(root_.get(), {{"path", "/fifo"}}), Error);  // must not hang
  EXPECT_THROW(open_for_write(root_.get(), {{"path", "/d"}}), Error);
}

}  // namespace
}  // namespace pitbox::init
