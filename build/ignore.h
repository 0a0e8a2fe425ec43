// Path patterns of the image builder: .dockerignore rules and COPY source globs, matched the
// way Docker's moby/patternmatcher matches them, so a context sends the same files to pitbox as
// it would to `docker build`.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pitbox::build {

// A pattern compiled once, for matching many paths. Syntax: Go's filepath.Match ("*" and "?"
// never match "/"; "[a-z]" and "[^...]" classes; "\" escapes the next character)
// plus "**": "**/" (or "**" before other text) matches any number of leading directories,
// zero included, and a trailing "**" matches anything, "/" included. As in Docker, a pattern
// that starts with "**" and has no other wildcard matches every path ending in the rest
// ("**.pyc" matches "a/b.pyc"). Throws invalid_argument for a malformed pattern (an unclosed
// "[", an empty class, a trailing "\"), as Go's filepath.Match refuses them.
class PathPattern {
 public:
  explicit PathPattern(std::string_view pattern);

  // Whether the whole of `path` ("dir/file", no leading "/") matches.
  bool matches(std::string_view path) const;
  // Whether `path` or one of its parent directories matches ("a/b" for "a/b/c").
  bool matches_or_parent(std::string_view path) const;
  // Whether some path below directory `dir` could match: false means a walk can skip `dir`
  // as far as this pattern is concerned. Errs towards true.
  bool may_match_below(std::string_view dir) const;
  const std::string& text() const { return text_; }

 private:
  enum class Op { kLiteral, kOne, kClass, kStar, kAny, kAnyDirs };
  struct Token {
    Op op;
    char32_t ch = 0;                                    // kLiteral
    bool negated = false;                               // kClass
    std::vector<std::pair<char32_t, char32_t>> ranges;  // kClass
  };
  using States = std::vector<char>;

  void add_closure(States& states, size_t i) const;
  // Whether any state is left: a dead pattern can stop reading.
  bool step(const States& states, char32_t c, States& next) const;
  bool class_matches(const Token& t, char32_t c) const;
  bool suffix_matches(std::string_view path) const;

  std::string text_;
  std::vector<Token> tokens_;
  // Docker matches "**" followed by plain text with a suffix test, not with its regexp.
  bool suffix_only_ = false;
  // No wildcard at all: string comparison is enough.
  bool literal_ = false;
};

// Docker's path matching for COPY sources and .dockerignore lines; see PathPattern.
bool path_match(std::string_view pattern, std::string_view path);

// The rules of a .dockerignore file.
class IgnoreRules {
 public:
  // Reads a .dockerignore as Docker does: a line starting with "#" (in its first column) is a
  // comment; blank lines are skipped; whitespace around a pattern is trimmed; "!" makes an
  // exception (a path the rules before it excluded is sent after all); patterns are cleaned
  // like Go's filepath.Clean ("./a//b/" is "a/b", "a/../b" is "b") and a leading "/" is
  // dropped. Throws invalid_argument naming the line for a malformed pattern or a bare "!".
  static IgnoreRules parse(std::string_view dockerignore);

  // Whether `rel_path` ("dir/file", relative to the context root) is left out of the
  // context. The last rule that matches the path or one of its parent directories decides,
  // so "node_modules" excludes "node_modules/x/y" and "!docs" after "*" brings back
  // "docs/a.md". The context root itself is never ignored.
  bool ignored(std::string_view rel_path) const;
  // Whether a walk of the context can skip directory `rel_dir` without looking inside: it is
  // ignored and no later exception could bring back anything below it.
  bool can_skip_dir(std::string_view rel_dir) const;
  bool empty() const { return rules_.empty(); }

 private:
  struct Rule {
    PathPattern pattern;
    bool exception;
  };
  // The index of the rule that decides `path` (cleaned), or -1 when none matches.
  int deciding_rule(std::string_view path) const;

  std::vector<Rule> rules_;
};

// Go's filepath.Clean for "/" paths: no "." elements, ".." resolved where it can be, no
// doubled or trailing "/"; "" becomes ".".
std::string clean_path(std::string_view path);

}  // namespace pitbox::build
