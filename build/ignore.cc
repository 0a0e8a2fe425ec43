#include "build/ignore.h"

#include "sys/error.h"

namespace pitbox::build {
namespace {

// Code points, so that "?" and classes take a whole UTF-8 character as Go does. A byte that
// is not valid UTF-8 stands for itself, mapped where no real character lives.
std::u32string decode_utf8(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    auto b = static_cast<unsigned char>(s[i]);
    size_t len = b < 0x80           ? 1
                 : (b >> 5) == 0x6  ? 2
                 : (b >> 4) == 0xe  ? 3
                 : (b >> 3) == 0x1e ? 4
                                    : 0;
    char32_t c = len == 1 ? b : len == 2 ? (b & 0x1f) : len == 3 ? (b & 0x0f) : (b & 0x07);
    bool ok = len != 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) {
      auto cont = static_cast<unsigned char>(s[i + k]);
      ok = (cont & 0xc0) == 0x80;
      c = (c << 6) | (cont & 0x3f);
    }
    if (ok) {
      out.push_back(c);
      i += len;
    } else {
      out.push_back(0xdc00 + b);
      ++i;
    }
  }
  return out;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// A relative, cleaned path, or "" for the context root itself.
std::string relative(std::string_view path) {
  std::string p = clean_path(path);
  if (p == ".") return "";
  size_t start = p.find_first_not_of('/');
  return start == std::string::npos ? "" : p.substr(start);
}

}  // namespace

std::string clean_path(std::string_view path) {
  if (path.empty()) return ".";
  bool rooted = path[0] == '/';
  size_t n = path.size();
  std::string out = rooted ? "/" : "";
  size_t r = rooted ? 1 : 0;
  // Where ".." can no longer remove an element: after the root or after leading ".."s.
  size_t dotdot = out.size();
  while (r < n) {
    if (path[r] == '/') {
      ++r;
    } else if (path[r] == '.' && (r + 1 == n || path[r + 1] == '/')) {
      ++r;
    } else if (path[r] == '.' && path[r + 1] == '.' && (r + 2 == n || path[r + 2] == '/')) {
      r += 2;
      if (out.size() > dotdot) {
        size_t w = out.size() - 1;
        while (w > dotdot && out[w] != '/') --w;
        out.resize(w);
      } else if (!rooted) {
        if (!out.empty()) out += '/';
        out += "..";
        dotdot = out.size();
      }
    } else {
      if (out.size() != (rooted ? 1 : 0)) out += '/';
      while (r < n && path[r] != '/') out += path[r++];
    }
  }
  return out.empty() ? "." : out;
}

PathPattern::PathPattern(std::string_view pattern) : text_(pattern) {
  auto bad = [&](const std::string& why) {
    return invalid_argument("bad pattern \"" + text_ + "\": " + why, {{"pattern", text_}});
  };
  std::u32string p = decode_utf8(pattern);
  size_t i = 0;
  // Mirrors patternmatcher's compile(): it falls back from a suffix test to its regexp as soon
  // as anything but plain text follows the leading "**".
  bool leading_doublestar = false;
  bool wildcards = false;
  while (i < p.size()) {
    char32_t c = p[i++];
    if (c == '*' && i < p.size() && p[i] == '*') {
      if (i == 1) {
        leading_doublestar = true;
      } else {
        wildcards = true;
      }
      ++i;
      if (i < p.size() && p[i] == '/') ++i;
      tokens_.push_back({.op = i == p.size() ? Op::kAny : Op::kAnyDirs});
    } else if (c == '*') {
      tokens_.push_back({.op = Op::kStar});
      wildcards = true;
    } else if (c == '?') {
      tokens_.push_back({.op = Op::kOne});
      wildcards = true;
    } else if (c == '\\') {
      if (i == p.size()) throw bad("it ends in a lone \\");
      tokens_.push_back({.op = Op::kLiteral, .ch = p[i++]});
      wildcards = true;
    } else if (c == '[') {
      // Go's filepath.Match: "[" "^"? (char | char "-" char)+ "]", "\" escaping inside.
      Token t{.op = Op::kClass};
      if (i < p.size() && p[i] == '^') {
        t.negated = true;
        ++i;
      }
      auto bound = [&]() {
        if (i == p.size() || p[i] == '-' || p[i] == ']') throw bad("malformed [] class");
        if (p[i] == '\\' && ++i == p.size()) throw bad("malformed [] class");
        char32_t b = p[i++];
        if (i == p.size()) throw bad("unclosed [");
        return b;
      };
      while (true) {
        if (i < p.size() && p[i] == ']' && !t.ranges.empty()) {
          ++i;
          break;
        }
        char32_t lo = bound();
        char32_t hi = lo;
        if (p[i] == '-') {
          ++i;
          hi = bound();
        }
        t.ranges.emplace_back(lo, hi);
      }
      tokens_.push_back(std::move(t));
      wildcards = true;
    } else {
      if (c == ']') wildcards = true;
      tokens_.push_back({.op = Op::kLiteral, .ch = c});
    }
  }
  suffix_only_ = leading_doublestar && !wildcards;
  literal_ = !leading_doublestar && !wildcards;
}

bool PathPattern::class_matches(const Token& t, char32_t c) const {
  bool in = false;
  for (auto [lo, hi] : t.ranges) in = in || (lo <= c && c <= hi);
  return in != t.negated;
}

// States 0..n: before token i (n: the whole pattern matched); n+1+i: inside the "(.*/)" of
// the "**/" at token i, which unlike state i may not skip to i+1 without a "/".
void PathPattern::add_closure(States& states, size_t i) const {
  while (!states[i]) {
    states[i] = true;
    if (i == tokens_.size()) return;
    Op op = tokens_[i].op;
    if (op != Op::kStar && op != Op::kAny && op != Op::kAnyDirs) return;
    ++i;
  }
}

bool PathPattern::step(const States& states, char32_t c, States& next) const {
  size_t n = tokens_.size();
  next.assign(states.size(), 0);
  for (size_t i = 0; i < n; ++i) {
    bool before = states[i];
    bool inside = states[n + 1 + i];
    if (!before && !inside) continue;
    const Token& t = tokens_[i];
    switch (t.op) {
      case Op::kLiteral:
        if (before && t.ch == c) add_closure(next, i + 1);
        break;
      case Op::kOne:
        if (before && c != '/') add_closure(next, i + 1);
        break;
      case Op::kClass:
        if (before && class_matches(t, c)) add_closure(next, i + 1);
        break;
      case Op::kStar:
        if (before && c != '/') add_closure(next, i);
        break;
      case Op::kAny:
        if (before) add_closure(next, i);
        break;
      case Op::kAnyDirs:
        next[n + 1 + i] = true;
        if (c == '/') add_closure(next, i + 1);
        break;
    }
  }
  for (char s : next) {
    if (s) return true;
  }
  return false;
}

bool PathPattern::suffix_matches(std::string_view path) const {
  std::string_view suffix = std::string_view(text_).substr(2);
  if (path.ends_with(suffix)) return true;
  // "**/foo" matches "foo" itself.
  return suffix.starts_with('/') && path == suffix.substr(1);
}

bool PathPattern::matches(std::string_view path) const {
  if (literal_) return path == text_;
  if (suffix_only_) return suffix_matches(path);
  States states(2 * tokens_.size() + 1, 0);
  States next;
  add_closure(states, 0);
  for (char32_t c : decode_utf8(path)) {
    if (!step(states, c, next)) return false;
    states.swap(next);
  }
  return states[tokens_.size()];
}

bool PathPattern::matches_or_parent(std::string_view path) const {
  if (literal_) {
    return path.starts_with(text_) && (path.size() == text_.size() || path[text_.size()] == '/');
  }
  if (suffix_only_) {
    for (size_t slash = path.find('/'); slash != std::string_view::npos;
         slash = path.find('/', slash + 1)) {
      if (slash > 0 && suffix_matches(path.substr(0, slash))) return true;
    }
    return suffix_matches(path);
  }
  // One pass: the pattern matches a parent when it is fully matched just before a "/".
  size_t n = tokens_.size();
  States states(2 * n + 1, 0);
  States next;
  add_closure(states, 0);
  bool started = false;
  for (char32_t c : decode_utf8(path)) {
    if (c == '/' && started && states[n]) return true;
    if (!step(states, c, next)) return false;
    states.swap(next);
    started = true;
  }
  return states[n];
}

bool PathPattern::may_match_below(std::string_view dir) const {
  if (suffix_only_) return true;
  size_t n = tokens_.size();
  States states(2 * n + 1, 0);
  States next;
  add_closure(states, 0);
  for (char32_t c : decode_utf8(std::string(dir) + "/")) {
    if (!step(states, c, next)) return false;
    states.swap(next);
  }
  // Anything but "matched exactly dir/" can still go on to match a longer path.
  for (size_t i = 0; i < states.size(); ++i) {
    if (states[i] && i != n) return true;
  }
  return false;
}

bool path_match(std::string_view pattern, std::string_view path) {
  return PathPattern(pattern).matches(path);
}

IgnoreRules IgnoreRules::parse(std::string_view dockerignore) {
  IgnoreRules rules;
  int line_no = 0;
  size_t pos = 0;
  while (pos < dockerignore.size()) {
    size_t end = dockerignore.find('\n', pos);
    if (end == std::string_view::npos) end = dockerignore.size();
    std::string_view line = dockerignore.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line_no == 1 && line.starts_with("\xEF\xBB\xBF")) line.remove_prefix(3);
    // Docker takes "#" as a comment only in the first column: "  #x" is a pattern.
    if (line.starts_with('#')) continue;
    line = trim(line);
    if (line.empty()) continue;
    auto fail = [&](const std::string& why) {
      return invalid_argument(".dockerignore line " + std::to_string(line_no) + ": " + why,
                              {{"line", line_no}});
    };
    bool exception = line.front() == '!';
    if (exception) line = trim(line.substr(1));
    if (line.empty()) throw fail("\"!\" needs a pattern after it");
    std::string pattern = clean_path(line);
    if (pattern.size() > 1 && pattern.front() == '/') pattern.erase(0, 1);
    try {
      rules.rules_.push_back({PathPattern(pattern), exception});
    } catch (const Error& e) {
      throw fail(e.message());
    }
  }
  return rules;
}

int IgnoreRules::deciding_rule(std::string_view path) const {
  for (int i = static_cast<int>(rules_.size()) - 1; i >= 0; --i) {
    if (rules_[i].pattern.matches_or_parent(path)) return i;
  }
  return -1;
}

bool IgnoreRules::ignored(std::string_view rel_path) const {
  std::string path = relative(rel_path);
  if (path.empty()) return false;
  int i = deciding_rule(path);
  return i >= 0 && !rules_[i].exception;
}

bool IgnoreRules::can_skip_dir(std::string_view rel_dir) const {
  std::string dir = relative(rel_dir);
  if (dir.empty()) return false;
  int decided = deciding_rule(dir);
  if (decided < 0 || rules_[decided].exception) return false;
  // Every rule up to `decided` that matches something below dir loses to rule `decided`
  // (which matches a parent of it), so only later exceptions can bring a path back.
  for (size_t i = decided + 1; i < rules_.size(); ++i) {
    if (rules_[i].exception && rules_[i].pattern.may_match_below(dir)) return false;
  }
  return true;
}

}  // namespace pitbox::build
