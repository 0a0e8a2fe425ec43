#include "build/dockerfile.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "sys/error.h"

namespace pitbox::build {
namespace {

using Vars = std::map<std::string, std::string>;

Error at_line(int line, const std::string& message) {
  return invalid_argument("Dockerfile line " + std::to_string(line) + ": " + message,
                          {{"line", line}});
}

// Go's unicode.IsSpace over ASCII, which is what BuildKit splits on.
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::string_view trim_left(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  return s;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string in_quotes(std::string_view s) { return nlohmann::json(std::string(s)).dump(); }

// The shell patterns of ${VAR#pattern} and friends: "*", "?" and "\" escapes, as BuildKit's
// convertShellPatternToRegex reads them (always "\", whatever the escape character).
class ShellPattern {
 public:
  // nullopt for an escape of anything but * ? \ } /, which BuildKit refuses.
  static std::optional<ShellPattern> compile(std::string_view p) {
    ShellPattern out;
    for (size_t i = 0; i < p.size(); ++i) {
      char c = p[i];
      if (c == '*') {
        out.toks_.push_back({Kind::kStar, 0});
      } else if (c == '?') {
        out.toks_.push_back({Kind::kOne, 0});
      } else if (c == '\\') {
        // "\}" and "\/" kept "}" and "/" from ending the ${}: the "\" is not part of it.
        if (i + 1 < p.size() && (p[i + 1] == '}' || p[i + 1] == '/')) continue;
        if (i + 1 == p.size() || (p[i + 1] != '*' && p[i + 1] != '?' && p[i + 1] != '\\')) {
          return std::nullopt;
        }
        out.toks_.push_back({Kind::kChar, p[++i]});
      } else {
        out.toks_.push_back({Kind::kChar, c});
      }
    }
    return out;
  }

  // Whether all of `s` matches.
  bool matches(std::string_view s) const {
    std::vector<signed char> memo((toks_.size() + 1) * (s.size() + 1), -1);
    return match_at(0, 0, s, memo);
  }

 private:
  enum class Kind { kChar, kOne, kStar };
  struct Tok {
    Kind kind;
    char ch;
  };

  // "?" and "*" step over whole UTF-8 characters, as Go's regexp does.
  static size_t next_char(std::string_view s, size_t j) {
    auto b = static_cast<unsigned char>(s[j]);
    size_t len = b < 0xc0 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
    return std::min(s.size(), j + len);
  }

  bool match_at(size_t t, size_t j, std::string_view s, std::vector<signed char>& memo) const {
    signed char& m = memo[t * (s.size() + 1) + j];
    if (m >= 0) return m;
    bool r;
    if (t == toks_.size()) {
      r = j == s.size();
    } else if (toks_[t].kind == Kind::kStar) {
      r = match_at(t + 1, j, s, memo) || (j < s.size() && match_at(t, next_char(s, j), s, memo));
    } else if (j == s.size()) {
      r = false;
    } else if (toks_[t].kind == Kind::kOne) {
      r = match_at(t + 1, next_char(s, j), s, memo);
    } else {
      r = s[j] == toks_[t].ch && match_at(t + 1, j + 1, s, memo);
    }
    m = r;
    return r;
  }

  std::vector<Tok> toks_;
};

// Where a character starts in `s` (and its end), the only places a match may begin or end.
std::vector<size_t> boundaries(std::string_view s) {
  std::vector<size_t> out;
  for (size_t j = 0; j < s.size(); ++j) {
    if ((static_cast<unsigned char>(s[j]) & 0xc0) != 0x80) out.push_back(j);
  }
  out.push_back(s.size());
  return out;
}

// BuildKit's shell lexer (frontend/dockerfile/shell/lex.go) for one word: quotes, escapes and
// ${} substitutions. With no variables it checks the syntax and keeps every "$..." as written.
class Lexer {
 public:
  Lexer(std::string_view word, const Vars* vars, int line, char escape)
      : s_(word), vars_(vars), line_(line), escape_(escape) {}

  std::string process() { return until(0, false); }

 private:
  Error fail(const std::string& why) const { return at_line(line_, why + " in " + in_quotes(s_)); }

  bool at_end() const { return pos_ >= s_.size(); }

  // The word up to `stop` (consumed; 0: the end). raw_escapes keeps escape characters in, for
  // the patterns of ${VAR#...}.
  std::string until(char stop, bool raw_escapes) {
    bool saved = raw_escapes_;
    raw_escapes_ = raw_escapes;
    std::string out;
    while (!at_end()) {
      char c = s_[pos_];
      if (stop != 0 && c == stop) {
        ++pos_;
        raw_escapes_ = saved;
        return out;
      }
      if (c == '$') {
        out += dollar();
      } else if (c == '\'') {
        out += single_quoted();
      } else if (c == '"') {
        out += double_quoted();
      } else {
        ++pos_;
        if (c == escape_) {
          if (raw_escapes_) out += c;
          if (at_end()) break;  // a lone escape at the end is dropped
          c = s_[pos_++];
        }
        out += c;
      }
    }
    if (stop != 0) throw fail(stop == '}' ? "missing \"}\"" : "missing \"/\" in ${}");
    raw_escapes_ = saved;
    return out;
  }

  // Everything between single quotes is literal; there is no escaping a "'".
  std::string single_quoted() {
    size_t end = s_.find('\'', pos_ + 1);
    if (end == std::string_view::npos) throw fail("unterminated single quote");
    std::string out(s_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return out;
  }

  // Substitutes $ inside; the escape character escapes only '"', '$' and itself, as in sh.
  std::string double_quoted() {
    ++pos_;
    std::string out;
    while (true) {
      if (at_end()) throw fail("unterminated double quote");
      char c = s_[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c == '$') {
        out += dollar();
        continue;
      }
      ++pos_;
      if (c == escape_) {
        if (raw_escapes_) out += c;
        if (at_end()) continue;
        char next = s_[pos_];
        if (next == '"' || next == '$' || next == escape_) {
          c = next;
          ++pos_;
        }
      }
      out += c;
    }
  }

  // A name after "$": digits ($1), one special character ($@ $$ ...) or [A-Za-z0-9_]+.
  std::string name() {
    size_t start = pos_;
    if (!at_end() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
      while (!at_end() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    } else if (!at_end() && std::string_view("@*#?-$!").find(s_[pos_]) != std::string_view::npos) {
      ++pos_;
    } else {
      while (!at_end() && (std::isalnum(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_')) {
        ++pos_;
      }
    }
    return std::string(s_.substr(start, pos_ - start));
  }

  std::optional<std::string> lookup(const std::string& key) const {
    auto it = vars_->find(key);
    if (it == vars_->end()) return std::nullopt;
    return it->second;
  }

  std::string dollar() {
    size_t start = pos_++;
    auto as_written = [&]() { return std::string(s_.substr(start, pos_ - start)); };
    if (at_end() || s_[pos_] != '{') {
      std::string key = name();
      if (key.empty()) return "$";
      if (!vars_) return as_written();
      return lookup(key).value_or("");
    }
    ++pos_;
    if (at_end()) throw fail("missing \"}\"");
    if (s_[pos_] == '{' || s_[pos_] == '}' || s_[pos_] == ':') throw fail("bad substitution");
    std::string key = name();
    if (at_end()) throw fail("missing \"}\"");
    char op = s_[pos_++];
    if (op == '}') {
      if (!vars_) return as_written();
      return lookup(key).value_or("");
    }
    bool null_is_unset = false;
    if (op == ':') {
      if (at_end()) throw fail("missing \"}\"");
      null_is_unset = true;
      op = s_[pos_++];
      if (op != '-' && op != '+' && op != '?') {
        throw fail("unsupported modifier \":" + std::string(1, op) + "\" in ${}");
      }
    }
    if (op == '/') return replace(key, start);
    if (std::string_view("-+?#%").find(op) == std::string_view::npos) {
      throw fail("unsupported modifier \"" + std::string(1, op) + "\" in ${}");
    }
    std::string word = until('}', op == '#' || op == '%');
    if (!vars_) return as_written();
    std::optional<std::string> value = lookup(key);
    bool empty = !value || (null_is_unset && value->empty());
    switch (op) {
      case '-':
        return empty ? word : *value;
      case '+':
        return empty ? "" : word;
      case '?':
        if (empty) {
          throw fail(key + ": " +
                     (!word.empty() ? word
                      : value       ? std::string("is not allowed to be empty")
                                    : std::string("is not allowed to be unset")));
        }
        return *value;
      default:
        return trim_pattern(op, word, value.value_or(""));
    }
  }

  // ${VAR#p} ${VAR##p}: the shortest or longest prefix matching p removed; % for suffixes.
  std::string trim_pattern(char op, std::string word, const std::string& value) const {
    bool longest = !word.empty() && word[0] == op;
    if (longest) word.erase(0, 1);
    ShellPattern pattern = compile(word);
    std::vector<size_t> cuts = boundaries(value);
    // The removed part grows with the cut for a prefix and shrinks for a suffix.
    if ((op == '#') == longest) std::reverse(cuts.begin(), cuts.end());
    for (size_t cut : cuts) {
      if (op == '#' && pattern.matches(std::string_view(value).substr(0, cut))) {
        return value.substr(cut);
      }
      if (op == '%' && pattern.matches(std::string_view(value).substr(cut))) {
        return value.substr(0, cut);
      }
    }
    return value;
  }

  // ${VAR/p/r} ${VAR//p/r}: the first (every) leftmost-longest match of p replaced by r.
  std::string replace(const std::string& key, size_t start) {
    bool all = !at_end() && s_[pos_] == '/';
    if (all) ++pos_;
    std::string pat = until('/', true);
    std::string replacement = until('}', true);
    if (!vars_) return std::string(s_.substr(start, pos_ - start));
    std::string value = lookup(key).value_or("");
    ShellPattern pattern = compile(pat);
    std::vector<size_t> at = boundaries(value);  // indexes below are into `at`
    auto piece = [&](size_t from, size_t to) { return value.substr(at[from], at[to] - at[from]); };
    std::string out;
    size_t from = 0;
    size_t prev_end = std::string::npos;
    while (from < at.size()) {
      std::optional<std::pair<size_t, size_t>> hit;
      for (size_t b = from; b < at.size() && !hit; ++b) {
        for (size_t e = at.size(); e-- > b;) {
          if (pattern.matches(std::string_view(value).substr(at[b], at[e] - at[b]))) {
            hit = {b, e};
            break;
          }
        }
      }
      if (!hit) break;
      auto [b, e] = *hit;
      out += piece(from, b);
      // Like Go's regexp, an empty match right after the previous match does not count.
      if (b != e || b != prev_end) out += replacement;
      prev_end = e;
      if (b == e) {
        // An empty match: keep the character after it and go on from there.
        if (b + 1 < at.size()) out += piece(b, b + 1);
        from = b + 1;
      } else {
        from = e;
      }
      if (!all) break;
    }
    if (from < at.size()) out += value.substr(at[from]);
    return out;
  }

  ShellPattern compile(std::string_view p) const {
    std::optional<ShellPattern> pattern = ShellPattern::compile(p);
    if (!pattern) throw fail("invalid escape in the pattern " + in_quotes(p));
    return std::move(*pattern);
  }

  std::string_view s_;
  const Vars* vars_;
  int line_;
  char escape_;
  size_t pos_ = 0;
  bool raw_escapes_ = false;
};

std::string unquote(std::string_view word, int line, char escape) {
  return Lexer(word, nullptr, line, escape).process();
}

// BuildKit's parseWords: whitespace outside quotes splits; quotes and escapes are kept for the
// lexer, which removes them when the word is expanded.
std::vector<std::string> split_words(std::string_view rest, char escape) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (size_t i = 0; i < rest.size(); ++i) {
    char c = rest[i];
    if (quote != 0) {
      if (c == quote) {
        quote = 0;
      } else if (c == escape && quote != '\'') {
        if (i + 1 == rest.size()) continue;
        word += c;
        c = rest[++i];
      }
      word += c;
      continue;
    }
    if (is_space(c)) {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == escape) {
      if (i + 1 == rest.size()) continue;
      word += c;
      c = rest[++i];
    }
    word += c;
  }
  if (in_word) words.push_back(std::move(word));
  return words;
}

// BuildKit's extractBuilderFlags: the leading "--name[=value]" words (quotes removed), up to
// the first other word or a "--"; returns the rest of the line.
std::string_view extract_flags(std::string_view line, char escape,
                               std::vector<std::string>& flags) {
  size_t i = 0;
  while (true) {
    while (i < line.size() && is_space(line[i])) ++i;
    if (i + 1 >= line.size() || line[i] != '-' || line[i + 1] != '-') return line.substr(i);
    std::string word;
    char quote = 0;
    for (; i < line.size() && (quote != 0 || !is_space(line[i])); ++i) {
      char c = line[i];
      if (quote == 0 && (c == '\'' || c == '"')) {
        quote = c;
        continue;
      }
      if (quote != 0 && c == quote) {
        quote = 0;
        continue;
      }
      if (c == escape) {
        if (i + 1 == line.size()) continue;
        c = line[++i];
      }
      word += c;
    }
    if (word == "--") return line.substr(i);
    flags.push_back(std::move(word));
  }
}

// An exec-form array, or nullopt for the shell form. Docker runs anything that is not valid
// JSON as a shell command; a "[...]" with a comma outside double quotes was surely meant as an
// array (['a', 'b'] or a missing quote), so that is refused instead of handed to /bin/sh, while
// a test like `RUN [ -f /x ]` stays a command.
std::optional<std::vector<std::string>> parse_json_array(std::string_view rest,
                                                         const std::string& keyword, int line) {
  if (!rest.starts_with('[')) return std::nullopt;
  nlohmann::json j = nlohmann::json::parse(rest.begin(), rest.end(), nullptr, false);
  if (!j.is_discarded() && j.is_array()) {
    std::vector<std::string> out;
    for (const auto& e : j) {
      if (!e.is_string()) throw at_line(line, keyword + ": a JSON array must hold only strings");
    }
    for (const auto& e : j) out.push_back(e.get<std::string>());
    return out;
  }
  bool in_string = false;
  bool comma = false;
  for (size_t i = 0; i < rest.size(); ++i) {
    if (in_string && rest[i] == '\\') {
      ++i;
    } else if (rest[i] == '"') {
      in_string = !in_string;
    } else if (!in_string && rest[i] == ',') {
      comma = true;
    }
  }
  if (rest.ends_with(']') && comma) {
    throw at_line(line, keyword +
                            ": not a valid JSON array; the exec form takes double-quoted strings "
                            "separated by commas, like [\"/bin/sh\", \"-c\", \"echo hi\"]");
  }
  return std::nullopt;
}

// The continuation character ends the line (blanks after it allowed), unless it is itself
// escaped: BuildKit's `([^\\])\\[ \t]*$|^\\[ \t]*$`.
bool strip_continuation(std::string_view& line, char escape) {
  std::string_view s = line;
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  if (s.empty() || s.back() != escape) return false;
  if (s.size() >= 2 && s[s.size() - 2] == escape) return false;
  line = s.substr(0, s.size() - 1);
  return true;
}

bool is_comment(std::string_view line) {
  line = trim_left(line);
  return !line.empty() && line.front() == '#';
}

// Parser directives: "# name=value" lines at the very top; the first other line ends them.
class Directives {
 public:
  // Returns true when `line` (already left-trimmed) was a directive.
  bool take(std::string_view line, int line_no, Dockerfile& df) {
    if (done_) return false;
    if (!line.starts_with('#')) return end();
    line = trim_left(line.substr(1));
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) return end();
    std::string_view name = trim(line.substr(0, eq));
    std::string_view value = trim(line.substr(eq + 1));
    bool valid_name = !name.empty() && std::isalpha(static_cast<unsigned char>(name[0]));
    for (char c : name) valid_name = valid_name && std::isalnum(static_cast<unsigned char>(c));
    if (!valid_name || value.empty()) return end();
    std::string key = lower(name);
    if (key != "escape" && key != "syntax" && key != "check") return end();
    if (!seen_.insert(key).second) {
      throw at_line(line_no, "only one " + key + " parser directive can be used");
    }
    if (key == "escape") {
      if (value != "`" && value != "\\") {
        throw at_line(line_no, "invalid escape " + in_quotes(value) + " (it can be ` or \\)");
      }
      df.escape = value[0];
    }
    return true;
  }

 private:
  bool end() {
    done_ = true;
    return false;
  }

  bool done_ = false;
  std::set<std::string> seen_;
};

const std::set<std::string>& supported_keywords() {
  static const std::set<std::string> k = {"FROM", "RUN",        "COPY", "ADD",   "ENV",
                                          "ARG",  "WORKDIR",    "USER", "LABEL", "EXPOSE",
                                          "CMD",  "ENTRYPOINT", "SHELL"};
  return k;
}

// BuildKit's heredocs (RUN <<EOF ... EOF) would swallow the lines after the instruction; read
// as plain text they would turn into a confusing "unknown instruction", so they are refused.
// A word starting with [digits]<< followed by a name, or "<<" and then a name, as BuildKit
// detects them.
bool has_heredoc(const std::vector<std::string>& words) {
  for (size_t i = 0; i < words.size(); ++i) {
    std::string_view w = words[i];
    while (!w.empty() && std::isdigit(static_cast<unsigned char>(w.front()))) w.remove_prefix(1);
    if (!w.starts_with("<<") || w.starts_with("<<<")) continue;
    w.remove_prefix(2);
    if (w.starts_with('-')) w.remove_prefix(1);
    if (w.empty() && i + 1 < words.size()) w = words[i + 1];
    if (!w.empty() && w.find('<') == std::string_view::npos) return true;
  }
  return false;
}

void parse_flags(Instruction& in, const std::vector<std::string>& words) {
  const std::string& kw = in.keyword;
  for (const std::string& word : words) {
    size_t eq = word.find('=');
    std::string name = word.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    bool copy_like = kw == "COPY" || kw == "ADD";
    if (kw == "FROM" && name == "platform") {
      throw at_line(in.line,
                    "FROM --platform is not supported: pitbox builds for the platform it runs on");
    }
    if (kw == "COPY" && name == "from") {
      throw at_line(in.line,
                    "COPY --from is not supported: multi-stage builds are not supported, so "
                    "there is no other stage or image to copy from");
    }
    if (!copy_like || (name != "chown" && name != "chmod")) {
      throw at_line(in.line, kw + " --" + name + " is not supported" +
                                 (copy_like ? " (COPY and ADD take --chown and --chmod)"
                                            : " (only COPY and ADD take flags)"));
    }
    if (eq == std::string::npos || eq + 1 == word.size()) {
      throw at_line(in.line, kw + " --" + name + " needs a value, like --" + name + "=" +
                                 (name == "chown" ? "1000:1000" : "755"));
    }
    if (!in.flags.emplace(name, word.substr(eq + 1)).second) {
      throw at_line(in.line, kw + " --" + name + " is given twice");
    }
  }
}

// ENV and LABEL: `K=V K2="v 2"` or the legacy `K some value`, as BuildKit's parseNameVal.
void parse_name_values(Instruction& in, std::string_view rest, char escape) {
  std::vector<std::string> words = split_words(rest, escape);
  if (words[0].find('=') == std::string::npos) {
    size_t gap = rest.find_first_of(" \t\v\f\r");
    if (gap == std::string_view::npos) {
      throw at_line(in.line, in.keyword + " " + std::string(rest) + " has no value: write " +
                                 in.keyword + " " + std::string(rest) + "=value");
    }
    size_t value = rest.find_first_not_of(" \t\v\f\r", gap);
    in.args.push_back(std::string(rest.substr(0, gap)) + "=" + std::string(rest.substr(value)));
    return;
  }
  for (std::string& word : words) {
    size_t eq = word.find('=');
    if (eq == std::string::npos) {
      throw at_line(in.line, in.keyword + ": " + in_quotes(word) +
                                 " is not of the form name=value (quote values with spaces)");
    }
    if (eq == 0) throw at_line(in.line, in.keyword + " names can not be blank");
    in.args.push_back(std::move(word));
  }
}

void check_count(const Instruction& in, bool ok, const std::string& usage) {
  if (!ok) throw at_line(in.line, in.keyword + " " + usage);
}

Instruction parse_instruction(std::string_view logical, int line, char escape) {
  Instruction in;
  in.line = line;
  logical = trim(logical);
  in.text = std::string(logical);
  size_t gap = logical.find_first_of(" \t\v\f\r");
  std::string_view written = logical.substr(0, gap);
  in.keyword = upper(written);
  std::string_view rest =
      gap == std::string_view::npos ? std::string_view() : trim_left(logical.substr(gap));

  if (!supported_keywords().contains(in.keyword)) {
    static const std::set<std::string> docker_only = {"VOLUME", "STOPSIGNAL", "HEALTHCHECK",
                                                      "ONBUILD", "MAINTAINER"};
    if (in.keyword == "MAINTAINER") {
      throw at_line(line,
                    "MAINTAINER is not supported (it is deprecated in Docker too): use "
                    "LABEL maintainer=\"...\"");
    }
    if (docker_only.contains(in.keyword)) {
      throw at_line(line, in.keyword + " is not supported by pitbox builds");
    }
    throw at_line(line, "unknown instruction " + in_quotes(written));
  }

  std::vector<std::string> flag_words;
  rest = trim(extract_flags(rest, escape, flag_words));
  parse_flags(in, flag_words);
  if (rest.empty()) throw at_line(line, in.keyword + " needs arguments");

  const std::string& kw = in.keyword;
  if (kw == "RUN" || kw == "CMD" || kw == "ENTRYPOINT" || kw == "SHELL") {
    if (auto array = parse_json_array(rest, kw, line)) {
      in.json_form = true;
      in.args = std::move(*array);
      if (in.args.empty() && (kw == "RUN" || kw == "SHELL")) {
        throw at_line(line, kw + " needs a command: the array is empty");
      }
    } else {
      if (kw == "SHELL") {
        throw at_line(line, "SHELL takes a JSON array, like SHELL [\"/bin/bash\", \"-c\"]");
      }
      if (kw == "RUN" && has_heredoc(split_words(rest, escape))) {
        throw at_line(line,
                      "heredocs (<<EOF) are not supported: join the commands with && and "
                      "continuation lines instead");
      }
      in.args.emplace_back(rest);
    }
  } else if (kw == "COPY" || kw == "ADD") {
    if (auto array = parse_json_array(rest, kw, line)) {
      in.json_form = true;
      in.args = std::move(*array);
    } else {
      in.args = split_words(rest, escape);
      if (has_heredoc(in.args)) {
        throw at_line(line, "heredocs (<<EOF) are not supported: put the file in the context");
      }
    }
    check_count(in, in.args.size() >= 2, "needs at least one source and a destination");
    for (size_t i = 0; i + 1 < in.args.size(); ++i) {
      if (kw == "ADD" && is_remote_url(unquote(in.args[i], line, escape))) {
        throw at_line(line, "ADD from a URL (" + in.args[i] +
                                ") is not supported: builds have no network; put the file in "
                                "the build context and COPY it");
      }
    }
  } else if (kw == "ENV" || kw == "LABEL") {
    parse_name_values(in, rest, escape);
  } else {
    in.args = split_words(rest, escape);
    if (kw == "ARG") {
      for (const std::string& a : in.args) {
        if (a.starts_with('=')) throw at_line(line, "ARG names can not be blank");
      }
    } else if (kw == "FROM") {
      bool named = in.args.size() == 3 && lower(in.args[1]) == "as";
      check_count(in, in.args.size() == 1 || named,
                  "takes an image, optionally followed by AS name (FROM image AS name)");
      if (named) {
        std::string stage = lower(in.args[2]);
        bool ok = std::islower(static_cast<unsigned char>(stage[0]));
        for (char c : stage) {
          ok = ok &&
               (std::islower(static_cast<unsigned char>(c)) ||
                std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.');
        }
        if (!ok) {
          throw at_line(line, "invalid stage name " + in_quotes(in.args[2]) +
                                  ": it must start with a letter and hold only letters, digits, "
                                  "-, _ and .");
        }
      }
    } else if (kw == "WORKDIR") {
      check_count(in, in.args.size() == 1,
                  "takes exactly one path (quote a path with spaces: WORKDIR \"/my dir\")");
    } else if (kw == "USER") {
      check_count(in, in.args.size() == 1, "takes exactly one argument: USER user[:group]");
    }
  }

  // Unbalanced quotes and broken ${...} are syntax errors: report them now, with the line,
  // rather than when the step runs.
  if (kw == "ENV" || kw == "LABEL" || kw == "ARG") {
    parse_key_values(in, nullptr, nullptr, escape);
  } else if (kw != "RUN" && kw != "CMD" && kw != "ENTRYPOINT" && kw != "SHELL") {
    for (const std::string& a : in.args) unquote(a, line, escape);
  }
  return in;
}

}  // namespace

Dockerfile parse_dockerfile(std::string_view text) {
  Dockerfile df;
  std::vector<std::string_view> lines;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view l = text.substr(pos, end - pos);
    while (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    lines.push_back(l);
    pos = end + 1;
  }
  if (!lines.empty() && lines[0].starts_with("\xEF\xBB\xBF")) lines[0].remove_prefix(3);

  Directives directives;
  bool seen_from = false;
  size_t i = 0;
  while (i < lines.size()) {
    int start = static_cast<int>(i) + 1;
    std::string_view first = trim_left(lines[i++]);
    if (directives.take(first, start, df) || is_comment(first)) continue;
    bool more = strip_continuation(first, df.escape);
    if (!more && trim(first).empty()) continue;
    std::string logical(first);
    // As in BuildKit, comment lines and blank lines inside a continuation are skipped, and
    // continuation lines keep their leading blanks.
    while (more && i < lines.size()) {
      std::string_view next = lines[i++];
      if (is_comment(next) || trim(next).empty()) continue;
      more = strip_continuation(next, df.escape);
      logical += next;
    }
    if (trim(logical).empty()) continue;

    Instruction in = parse_instruction(logical, start, df.escape);
    if (in.keyword == "FROM") {
      if (seen_from) {
        throw at_line(start,
                      "a second FROM: multi-stage builds are not supported (one FROM per "
                      "Dockerfile)");
      }
      seen_from = true;
    } else if (!seen_from && in.keyword != "ARG") {
      throw at_line(start, in.keyword + " before FROM: only ARG may come before the FROM");
    }
    df.instructions.push_back(std::move(in));
  }
  if (!seen_from) {
    throw at_line(std::max<int>(1, static_cast<int>(lines.size())),
                  "no FROM instruction: a Dockerfile starts with FROM image (after optional ARGs)");
  }
  return df;
}

std::string expand(std::string_view word, const std::map<std::string, std::string>& vars, int line,
                   char escape) {
  return Lexer(word, &vars, line, escape).process();
}

KeyValues parse_key_values(const Instruction& in, const std::map<std::string, std::string>* vars,
                           std::vector<bool>* has_value, char escape) {
  if (in.keyword != "ENV" && in.keyword != "LABEL" && in.keyword != "ARG") {
    throw at_line(in.line, in.keyword + " has no key=value pairs");
  }
  KeyValues out;
  if (has_value) has_value->clear();
  for (const std::string& arg : in.args) {
    size_t eq = arg.find('=');
    std::string key = arg.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    // BuildKit substitutes in the names of ENV and LABEL, but takes an ARG's name as written.
    if (in.keyword != "ARG") key = Lexer(key, vars, in.line, escape).process();
    if (eq != std::string::npos) value = Lexer(value, vars, in.line, escape).process();
    out.emplace_back(std::move(key), std::move(value));
    if (has_value) has_value->push_back(eq != std::string::npos);
  }
  return out;
}

bool is_remote_url(std::string_view source) {
  std::string s = lower(source.substr(0, 8));
  return s.starts_with("http://") || s.starts_with("https://") || s.starts_with("git://") ||
         s.starts_with("ssh://") || s.starts_with("git@");
}

}  // namespace pitbox::build
