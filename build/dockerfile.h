// The Dockerfile of the image builder: parsing, and Docker's variable substitution. Follows
// BuildKit's parser and shell lexer (moby/buildkit frontend/dockerfile) so a Dockerfile means
// the same here as under `docker build`, for the single-stage subset pitbox builds: anything
// outside it is refused at parse time with a message naming the line, not half-built.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pitbox::build {

struct Instruction {
  int line = 0;  // 1-based line where the instruction starts
  // Upper-cased: FROM RUN COPY ADD ENV ARG WORKDIR USER LABEL EXPOSE CMD ENTRYPOINT SHELL.
  std::string keyword;
  // "--chown=1000:1000" -> {"chown", "1000:1000"}, quotes removed as Docker does; only COPY and
  // ADD take flags (--chown, --chmod). Values may hold variables: pass them to expand().
  std::map<std::string, std::string> flags;
  bool json_form = false;  // exec form ["a", "b"] (RUN CMD ENTRYPOINT SHELL COPY ADD)
  // json_form: the array's strings. Shell form of RUN, CMD and ENTRYPOINT: one element, the
  // command as written (continuation lines joined), for the shell. COPY ADD EXPOSE FROM
  // WORKDIR USER: the words, split on whitespace outside quotes, as written (quotes and escapes
  // still in; expand() removes them). ENV LABEL ARG: one "key=value" per pair as written (the
  // legacy `ENV key some value` as "key=some value"; `ARG NAME` as "NAME"): use
  // parse_key_values().
  std::vector<std::string> args;
  // The instruction as written, continuation lines joined, for logs and cache keys.
  std::string text;
};

struct Dockerfile {
  std::vector<Instruction> instructions;  // instructions[0..] are ARGs, then the one FROM
  char escape = '\\';                     // from "# escape=`"
};

// Parses a Dockerfile: comments, the parser directives "# escape=" and "# syntax=" (ignored,
// as is "# check="), continuation lines (comment and blank lines inside one are skipped),
// keywords in any case. Refuses, with invalid_argument "Dockerfile line N: ..." and details
// {"line": N}: unknown or unsupported instructions, missing or miscounted arguments, a broken
// exec-form array, anything but ARG before FROM, a second FROM (no multi-stage builds), flags
// other than COPY/ADD --chown/--chmod (so FROM --platform, COPY --from, RUN --mount), ADD of a
// URL, heredocs.
Dockerfile parse_dockerfile(std::string_view text);

// Docker's processing of one word of COPY ADD ENV LABEL ARG EXPOSE FROM WORKDIR USER:
// $VAR, ${VAR}, ${VAR:-default} ${VAR-default} (unset), ${VAR:+alt} ${VAR+alt},
// ${VAR:?message} ${VAR?message} (an error when empty/unset), ${VAR#pat} ${VAR##pat}
// ${VAR%pat} ${VAR%%pat} ${VAR/pat/repl} ${VAR//pat/repl} (pat: * and ?); unset variables
// become "". Like a shell, quotes are removed: nothing is substituted in '...', and in "..."
// the escape character only escapes " $ and itself; outside quotes it escapes anything
// (so with the default escape `ENV P=C:\dir` gives "C:dir": that is what "# escape=`" is for).
// Throws invalid_argument "Dockerfile line N: ..." for an unterminated quote or ${, a bad
// substitution or a ${VAR:?} that fails.
std::string expand(std::string_view word, const std::map<std::string, std::string>& vars, int line,
                   char escape = '\\');

using KeyValues = std::vector<std::pair<std::string, std::string>>;

// The pairs of an ENV, LABEL or ARG instruction, in order, with quotes and escapes processed.
// With `vars` (the ARG and ENV values in effect before `in`), values and the names of ENV and
// LABEL are substituted as Docker does (an ARG's name is taken as written, as in BuildKit);
// without, "$" is left as it is. `has_value`, when given, gets one entry per pair: false for
// an `ARG NAME` without a default (its value is then ""). `escape` is the Dockerfile's. Don't
// pass the results through expand() again: quotes and escapes are already gone.
KeyValues parse_key_values(const Instruction& in,
                           const std::map<std::string, std::string>* vars = nullptr,
                           std::vector<bool>* has_value = nullptr, char escape = '\\');

// Whether an ADD source is a remote URL (http, https, git, ssh), which pitbox refuses. The
// parser checks the words as written; a builder checks them again after expand().
bool is_remote_url(std::string_view source);

}  // namespace pitbox::build
