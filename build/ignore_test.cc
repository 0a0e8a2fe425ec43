#include "build/ignore.h"

#include <gtest/gtest.h>

#include "sys/error.h"

namespace pitbox::build {
namespace {

TEST(PathMatch, StarAndQuestionMarkStayInOneSegment) {
  EXPECT_TRUE(path_match("*.go", "main.go"));
  EXPECT_FALSE(path_match("*.go", "cmd/main.go"));
  EXPECT_FALSE(path_match("*.go", "main.go.bak"));
  EXPECT_TRUE(path_match("cmd/*/main.go", "cmd/tool/main.go"));
  EXPECT_FALSE(path_match("cmd/*/main.go", "cmd/a/b/main.go"));
  EXPECT_TRUE(path_match("?.txt", "a.txt"));
  EXPECT_FALSE(path_match("?.txt", "ab.txt"));
  EXPECT_FALSE(path_match("?.txt", ".txt"));
  EXPECT_FALSE(path_match("a?b", "a/b"));
  // "?" takes a whole UTF-8 character, not a byte.
  EXPECT_TRUE(path_match("?.txt", "\xc3\xa9.txt"));
  EXPECT_TRUE(path_match("*", ".hidden"));
  EXPECT_TRUE(path_match("exact/path.txt", "exact/path.txt"));
  EXPECT_FALSE(path_match("exact/path.txt", "exact/path.txt2"));
}

TEST(PathMatch, Classes) {
  EXPECT_TRUE(path_match("[a-c].txt", "b.txt"));
  EXPECT_FALSE(path_match("[a-c].txt", "d.txt"));
  EXPECT_TRUE(path_match("[^a-c].txt", "d.txt"));
  EXPECT_FALSE(path_match("[^a-c].txt", "a.txt"));
  EXPECT_TRUE(path_match("file[0-9x].log", "file7.log"));
  EXPECT_TRUE(path_match("file[0-9x].log", "filex.log"));
  EXPECT_FALSE(path_match("file[0-9x].log", "filey.log"));
  EXPECT_TRUE(path_match("[\\]]", "]"));
  EXPECT_TRUE(path_match("a]b", "a]b"));
}

TEST(PathMatch, Escapes) {
  EXPECT_TRUE(path_match("\\*.txt", "*.txt"));
  EXPECT_FALSE(path_match("\\*.txt", "a.txt"));
  EXPECT_TRUE(path_match("what\\?", "what?"));
  EXPECT_FALSE(path_match("what\\?", "whatX"));
}

TEST(PathMatch, DoubleStar) {
  EXPECT_TRUE(path_match("**/*.pyc", "a.pyc"));
  EXPECT_TRUE(path_match("**/*.pyc", "x/y/a.pyc"));
  EXPECT_FALSE(path_match("**/*.pyc", "x/a.pyc.txt"));
  EXPECT_TRUE(path_match("a/**/b", "a/b"));
  EXPECT_TRUE(path_match("a/**/b", "a/x/y/b"));
  EXPECT_FALSE(path_match("a/**/b", "a/xb"));
  EXPECT_FALSE(path_match("a/**/b", "b"));
  // A trailing "**" matches everything below, but not the directory itself (Docker's prefix).
  EXPECT_TRUE(path_match("foo/**", "foo/a/b"));
  EXPECT_FALSE(path_match("foo/**", "foo"));
  EXPECT_TRUE(path_match("**", "any/thing/at/all"));
  EXPECT_TRUE(path_match("**/foo", "foo"));
  EXPECT_TRUE(path_match("**/foo", "a/b/foo"));
  EXPECT_FALSE(path_match("**/foo", "afoo"));
  EXPECT_FALSE(path_match("**/foo", "foo/bar"));
  // As in Docker, a leading "**" before plain text is a suffix test, across directories.
  EXPECT_TRUE(path_match("**.pyc", "a/b.pyc"));
  EXPECT_TRUE(path_match("**.pyc", "b.pyc"));
  EXPECT_FALSE(path_match("**.pyc", "b.py"));
}

TEST(PathMatch, MalformedPatternsAreRefused) {
  for (const char* bad : {"[a", "[]", "[^]", "a\\", "[-a]", "[a-]", "x[\\"}) {
    try {
      path_match(bad, "a");
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << bad;
      EXPECT_NE(e.message().find("bad pattern"), std::string::npos) << e.message();
    }
  }
}

TEST(CleanPath, LikeGo) {
  EXPECT_EQ(clean_path("./a//b/"), "a/b");
  EXPECT_EQ(clean_path("a/../b"), "b");
  EXPECT_EQ(clean_path("a/b/../.."), ".");
  EXPECT_EQ(clean_path("../a"), "../a");
  EXPECT_EQ(clean_path("a/../../b"), "../b");
  EXPECT_EQ(clean_path("/../a/"), "/a");
  EXPECT_EQ(clean_path("/"), "/");
  EXPECT_EQ(clean_path(""), ".");
  EXPECT_EQ(clean_path("./"), ".");
}

TEST(IgnoreRules, ARealisticFile) {
  auto rules = IgnoreRules::parse(
      "# build outputs\n"
      "node_modules\n"
      "/build/\n"
      "*.log\n"
      "!important.log\n"
      "**/__pycache__\n"
      "\n"
      "   docs/*.md   \n"
      "!docs/README.md\n"
      "./tmp//cache/\n");
  EXPECT_FALSE(rules.empty());
  EXPECT_TRUE(rules.ignored("node_modules"));
  EXPECT_TRUE(rules.ignored("node_modules/left-pad/index.js"));  // a parent matches
  EXPECT_FALSE(rules.ignored("src/node_modules_helper.js"));
  EXPECT_TRUE(rules.ignored("build/out.o"));
  EXPECT_FALSE(rules.ignored("src/build.c"));
  EXPECT_TRUE(rules.ignored("app.log"));
  EXPECT_FALSE(rules.ignored("important.log"));
  EXPECT_FALSE(rules.ignored("sub/app.log"));  // "*" does not cross a "/"
  EXPECT_TRUE(rules.ignored("__pycache__/a.pyc"));
  EXPECT_TRUE(rules.ignored("src/pkg/__pycache__/a.pyc"));
  EXPECT_TRUE(rules.ignored("docs/guide.md"));
  EXPECT_FALSE(rules.ignored("docs/README.md"));
  EXPECT_FALSE(rules.ignored("docs/sub/guide.md"));
  EXPECT_TRUE(rules.ignored("tmp/cache/x"));
  EXPECT_FALSE(rules.ignored("tmp/other"));
  EXPECT_FALSE(rules.ignored("Dockerfile"));
  EXPECT_FALSE(rules.ignored("# build outputs"));
  // The path is cleaned the same way.
  EXPECT_TRUE(rules.ignored("./node_modules//x"));
  EXPECT_TRUE(rules.ignored("/app.log"));
}

TEST(IgnoreRules, ExceptionsReincludeBelowAnExcludedParent) {
  auto all_but_src = IgnoreRules::parse("*\n!src\n!Dockerfile\n");
  EXPECT_TRUE(all_but_src.ignored("README.md"));
  EXPECT_TRUE(all_but_src.ignored("docs/x.md"));
  EXPECT_FALSE(all_but_src.ignored("src"));
  EXPECT_FALSE(all_but_src.ignored("src/main.c"));
  EXPECT_FALSE(all_but_src.ignored("src/a/b/c.h"));
  EXPECT_FALSE(all_but_src.ignored("Dockerfile"));

  auto keep_one = IgnoreRules::parse("node_modules\n!node_modules/keep/x.js\n");
  EXPECT_FALSE(keep_one.ignored("node_modules/keep/x.js"));
  EXPECT_TRUE(keep_one.ignored("node_modules/keep/y.js"));
  EXPECT_TRUE(keep_one.ignored("node_modules/other/x.js"));
}

TEST(IgnoreRules, TheLastMatchingRuleWins) {
  auto again = IgnoreRules::parse("*.txt\n!a.txt\na.txt\n");
  EXPECT_TRUE(again.ignored("a.txt"));
  auto parent_later = IgnoreRules::parse("!dir/keep\ndir\n");
  EXPECT_TRUE(parent_later.ignored("dir/keep"));
  auto exception_later = IgnoreRules::parse("dir\n!dir/keep\n");
  EXPECT_FALSE(exception_later.ignored("dir/keep"));
  EXPECT_FALSE(exception_later.ignored("dir/keep/inner"));
  EXPECT_TRUE(exception_later.ignored("dir/other"));
}

TEST(IgnoreRules, TheRootIsNeverIgnored) {
  auto rules = IgnoreRules::parse("*\n**\n");
  EXPECT_FALSE(rules.ignored(""));
  EXPECT_FALSE(rules.ignored("."));
  EXPECT_FALSE(rules.ignored("./"));
  EXPECT_TRUE(rules.ignored("x"));
}

TEST(IgnoreRules, CommentsOnlyInTheFirstColumn) {
  auto rules = IgnoreRules::parse("#secret\n  #hash\n");
  EXPECT_FALSE(rules.ignored("#secret"));
  EXPECT_TRUE(rules.ignored("#hash"));
}

TEST(IgnoreRules, WhitespaceBomAndCrlf) {
  auto rules = IgnoreRules::parse(
      "\xEF\xBB\xBF"
      "foo\r\n\tbar  \r\n*\r\n!  keep.txt\r\n");
  EXPECT_TRUE(rules.ignored("foo"));
  EXPECT_TRUE(rules.ignored("bar"));
  EXPECT_TRUE(rules.ignored("other"));
  EXPECT_FALSE(rules.ignored("keep.txt"));
}

TEST(IgnoreRules, Empty) {
  EXPECT_TRUE(IgnoreRules::parse("").empty());
  EXPECT_TRUE(IgnoreRules::parse("# only a comment\n\n   \n").empty());
  EXPECT_FALSE(IgnoreRules::parse("a").empty());
  EXPECT_FALSE(IgnoreRules::parse("").ignored("anything"));
}

TEST(IgnoreRules, ErrorsNameTheLine) {
  for (auto [text, line] : {std::pair<const char*, int>{"ok\n!\n", 2},
                            {"ok\n\n[z\n", 3},
                            {"!   \n", 1},
                            {"a\\\n", 1}}) {
    try {
      IgnoreRules::parse(text);
      ADD_FAILURE() << "accepted " << text;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_TRUE(e.message().starts_with(".dockerignore line " + std::to_string(line) + ": "))
          << e.message();
      EXPECT_EQ(e.details()["line"], line);
    }
  }
}

TEST(IgnoreRules, SkippingWholeDirectories) {
  auto rules = IgnoreRules::parse("node_modules\n!node_modules/keep/x.js\n.git\n");
  EXPECT_TRUE(rules.can_skip_dir(".git"));
  EXPECT_FALSE(rules.can_skip_dir("node_modules"));  // keep/x.js is inside
  EXPECT_FALSE(rules.can_skip_dir("node_modules/keep"));
  EXPECT_TRUE(rules.can_skip_dir("node_modules/other"));
  EXPECT_FALSE(rules.can_skip_dir("src"));  // not ignored at all
  EXPECT_FALSE(rules.can_skip_dir(""));

  // An exception with wildcards may match anywhere below.
  auto go_only = IgnoreRules::parse("*\n!**/*.go\n");
  EXPECT_FALSE(go_only.can_skip_dir("vendor"));
  auto suffix = IgnoreRules::parse("*\n!**.go\n");
  EXPECT_FALSE(suffix.can_skip_dir("vendor"));

  // An exception before the rule that excludes the directory loses to it.
  auto earlier = IgnoreRules::parse("!build/keep\nbuild\n");
  EXPECT_TRUE(earlier.can_skip_dir("build"));

  auto star = IgnoreRules::parse("build\n!build/*/keep\n");
  EXPECT_FALSE(star.can_skip_dir("build"));
  EXPECT_FALSE(star.can_skip_dir("build/a"));
  EXPECT_TRUE(star.can_skip_dir("build/a/b"));
}

}  // namespace
}  // namespace pitbox::build
