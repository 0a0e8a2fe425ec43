#include "build/dockerfile.h"

#include <gtest/gtest.h>

#include "sys/error.h"

namespace pitbox::build {
namespace {

using Strings = std::vector<std::string>;

// Checks that parsing `text` fails with "Dockerfile line <line>: ...<fragment>...".
void expect_error(std::string_view text, int line, std::string_view fragment) {
  try {
    parse_dockerfile(text);
    ADD_FAILURE() << "parsed:\n" << text;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    std::string prefix = "Dockerfile line " + std::to_string(line) + ": ";
    EXPECT_TRUE(e.message().starts_with(prefix)) << e.message() << "\nfor:\n" << text;
    EXPECT_NE(e.message().find(fragment), std::string::npos) << e.message();
    EXPECT_EQ(e.details()["line"], line) << text;
  }
}

// The message of the invalid_argument `f` throws, after checking the line in its details.
template <typename F>
std::string error_of(F f, int line) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_EQ(e.details()["line"], line);
    return e.message();
  }
  ADD_FAILURE() << "no error";
  return "";
}

const char* const kRealistic = R"(# syntax=docker/dockerfile:1
ARG BASE=debian:12
FROM ${BASE} AS app
LABEL org.opencontainers.image.title="my app" version=1.0 \
      "com.example.vendor"="ACME Inc"
ENV LANG=C.UTF-8 PATH="/opt/app/bin:$PATH"
ENV LEGACY some value  here
ARG VERSION
RUN apt-get update \
    # a comment inside the continuation
    && apt-get install -y \

        curl ca-certificates
COPY --chown=1000:1000 --chmod=755 ["src dir/", "/opt/app/"]
copy requirements.txt "my file.py" /opt/app/
WORKDIR /opt/app
USER app:app
EXPOSE 8080/tcp 9090
ENTRYPOINT ["/opt/app/bin/run", "--port", "8080"]
CMD exec serve --verbose
)";

TEST(Dockerfile, ParsesARealisticFile) {
  Dockerfile df = parse_dockerfile(kRealistic);
  EXPECT_EQ(df.escape, '\\');
  const auto& ins = df.instructions;
  ASSERT_EQ(ins.size(), 14u);

  EXPECT_EQ(ins[0].keyword, "ARG");
  EXPECT_EQ(ins[0].line, 2);
  EXPECT_EQ(ins[0].args, Strings{"BASE=debian:12"});

  EXPECT_EQ(ins[1].keyword, "FROM");
  EXPECT_EQ(ins[1].line, 3);
  EXPECT_EQ(ins[1].args, (Strings{"${BASE}", "AS", "app"}));
  EXPECT_EQ(ins[1].text, "FROM ${BASE} AS app");

  EXPECT_EQ(ins[2].keyword, "LABEL");
  EXPECT_EQ(ins[2].line, 4);
  EXPECT_EQ(ins[2].args, (Strings{"org.opencontainers.image.title=\"my app\"", "version=1.0",
                                  "\"com.example.vendor\"=\"ACME Inc\""}));

  EXPECT_EQ(ins[3].keyword, "ENV");
  EXPECT_EQ(ins[3].line, 6);
  EXPECT_EQ(ins[4].keyword, "ENV");
  EXPECT_EQ(ins[4].args, Strings{"LEGACY=some value  here"});
  EXPECT_EQ(ins[5].args, Strings{"VERSION"});

  const Instruction& run = ins[6];
  EXPECT_EQ(run.keyword, "RUN");
  EXPECT_EQ(run.line, 9);
  EXPECT_FALSE(run.json_form);
  // The continuation character goes, the comment and the blank line are skipped, and the
  // continued lines keep their indentation, as in BuildKit.
  EXPECT_EQ(run.args,
            Strings{"apt-get update     && apt-get install -y         curl ca-certificates"});
  EXPECT_EQ(run.text, "RUN apt-get update     && apt-get install -y         curl ca-certificates");

  const Instruction& copy = ins[7];
  EXPECT_EQ(copy.line, 14);
  EXPECT_TRUE(copy.json_form);
  EXPECT_EQ(copy.args, (Strings{"src dir/", "/opt/app/"}));
  EXPECT_EQ(copy.flags,
            (std::map<std::string, std::string>{{"chown", "1000:1000"}, {"chmod", "755"}}));

  EXPECT_EQ(ins[8].keyword, "COPY");
  EXPECT_FALSE(ins[8].json_form);
  EXPECT_TRUE(ins[8].flags.empty());
  EXPECT_EQ(ins[8].args, (Strings{"requirements.txt", "\"my file.py\"", "/opt/app/"}));
  EXPECT_EQ(ins[8].text, "copy requirements.txt \"my file.py\" /opt/app/");

  EXPECT_EQ(ins[9].keyword, "WORKDIR");
  EXPECT_EQ(ins[9].args, Strings{"/opt/app"});
  EXPECT_EQ(ins[10].args, Strings{"app:app"});
  EXPECT_EQ(ins[11].args, (Strings{"8080/tcp", "9090"}));

  EXPECT_EQ(ins[12].keyword, "ENTRYPOINT");
  EXPECT_TRUE(ins[12].json_form);
  EXPECT_EQ(ins[12].args, (Strings{"/opt/app/bin/run", "--port", "8080"}));

  EXPECT_EQ(ins[13].keyword, "CMD");
  EXPECT_FALSE(ins[13].json_form);
  EXPECT_EQ(ins[13].args, Strings{"exec serve --verbose"});
  EXPECT_EQ(ins[13].line, 20);
}

TEST(Dockerfile, KeyValuesOfARealisticFile) {
  Dockerfile df = parse_dockerfile(kRealistic);
  const auto& ins = df.instructions;
  EXPECT_EQ(parse_key_values(ins[2]), (KeyValues{{"org.opencontainers.image.title", "my app"},
                                                 {"version", "1.0"},
                                                 {"com.example.vendor", "ACME Inc"}}));
  // Without variables "$" stays as written; with them, Docker's substitution.
  EXPECT_EQ(parse_key_values(ins[3]),
            (KeyValues{{"LANG", "C.UTF-8"}, {"PATH", "/opt/app/bin:$PATH"}}));
  std::map<std::string, std::string> vars = {{"PATH", "/usr/bin:/bin"}};
  EXPECT_EQ(parse_key_values(ins[3], &vars),
            (KeyValues{{"LANG", "C.UTF-8"}, {"PATH", "/opt/app/bin:/usr/bin:/bin"}}));
  EXPECT_EQ(parse_key_values(ins[4]), (KeyValues{{"LEGACY", "some value  here"}}));

  std::vector<bool> has_value;
  EXPECT_EQ(parse_key_values(ins[0], nullptr, &has_value), (KeyValues{{"BASE", "debian:12"}}));
  EXPECT_EQ(has_value, std::vector<bool>{true});
  EXPECT_EQ(parse_key_values(ins[5], nullptr, &has_value), (KeyValues{{"VERSION", ""}}));
  EXPECT_EQ(has_value, std::vector<bool>{false});
}

TEST(Dockerfile, EnvSubstitutesWithTheValuesBeforeTheInstruction) {
  Dockerfile df = parse_dockerfile(
      "FROM a\n"
      "ENV A=$HOME B=\"$A x\" C='$HOME' D=\\$HOME E=${UNSET:-dflt} F=\"a\\\"b\"\n"
      "ARG N1 N2= N3=\"\" N4=${HOME}/x $HOME=1\n"
      "LABEL \"$KEY\"=v\n");
  std::map<std::string, std::string> vars = {{"HOME", "/root"}, {"A", "old"}, {"KEY", "k"}};
  EXPECT_EQ(parse_key_values(df.instructions[1], &vars), (KeyValues{{"A", "/root"},
                                                                    {"B", "old x"},
                                                                    {"C", "$HOME"},
                                                                    {"D", "$HOME"},
                                                                    {"E", "dflt"},
                                                                    {"F", "a\"b"}}));
  std::vector<bool> has_value;
  EXPECT_EQ(parse_key_values(df.instructions[2], &vars, &has_value),
            (KeyValues{{"N1", ""}, {"N2", ""}, {"N3", ""}, {"N4", "/root/x"}, {"$HOME", "1"}}));
  EXPECT_EQ(has_value, (std::vector<bool>{false, true, true, true, true}));
  EXPECT_EQ(parse_key_values(df.instructions[3], &vars), (KeyValues{{"k", "v"}}));

  std::string msg = error_of([&] { parse_key_values(df.instructions[0]); }, 1);
  EXPECT_NE(msg.find("FROM has no key=value pairs"), std::string::npos) << msg;
}

TEST(Dockerfile, BacktickEscape) {
  Dockerfile df = parse_dockerfile(
      "# escape=`\n"
      "\n"
      "FROM mcr.microsoft.com/windows/servercore\n"
      "COPY C:\\src\\app `\n"
      "     C:\\dst\\\n"
      "RUN dir C:\\ `\n"
      "  && echo done\n"
      "ENV P=C:\\dir Q=`$x\n");
  EXPECT_EQ(df.escape, '`');
  const auto& ins = df.instructions;
  ASSERT_EQ(ins.size(), 4u);
  // A trailing "\" is not a continuation any more: the RUN is its own instruction.
  EXPECT_EQ(ins[1].args, (Strings{"C:\\src\\app", "C:\\dst\\"}));
  EXPECT_EQ(ins[1].line, 4);
  EXPECT_EQ(ins[2].keyword, "RUN");
  EXPECT_EQ(ins[2].line, 6);
  EXPECT_EQ(ins[2].args, Strings{"dir C:\\   && echo done"});
  EXPECT_EQ(parse_key_values(ins[3], nullptr, nullptr, df.escape),
            (KeyValues{{"P", "C:\\dir"}, {"Q", "$x"}}));
  // With the default escape the same value loses its backslash, which is why "# escape=`".
  EXPECT_EQ(parse_key_values(ins[3]), (KeyValues{{"P", "C:dir"}, {"Q", "`$x"}}));
}

TEST(Dockerfile, DirectivesOnlyAtTheTop) {
  EXPECT_EQ(parse_dockerfile("  #  ESCAPE = `  \nFROM a\n").escape, '`');
  EXPECT_EQ(parse_dockerfile("# syntax=x\n# escape=`\nFROM a\n").escape, '`');
  // After a plain comment, a blank line, an unknown directive or an instruction, it is a
  // comment.
  EXPECT_EQ(parse_dockerfile("# hello\n# escape=`\nFROM a\n").escape, '\\');
  EXPECT_EQ(parse_dockerfile("\n# escape=`\nFROM a\n").escape, '\\');
  EXPECT_EQ(parse_dockerfile("# foo=bar\n# escape=`\nFROM a\n").escape, '\\');
  EXPECT_EQ(parse_dockerfile("# note: x=y\n# escape=`\nFROM a\n").escape, '\\');
  Dockerfile df = parse_dockerfile("FROM a\n# escape=`\nRUN a \\\n  b\n");
  EXPECT_EQ(df.escape, '\\');
  EXPECT_EQ(df.instructions[1].args, Strings{"a   b"});

  expect_error("# escape=x\nFROM a\n", 1, "invalid escape");
  expect_error("# escape=`\n# escape=\\\nFROM a\n", 2, "only one escape parser directive");
}

TEST(Dockerfile, KeywordsInAnyCase) {
  Dockerfile df = parse_dockerfile("from alpine\nRun echo hi\nworkDir /x\n");
  ASSERT_EQ(df.instructions.size(), 3u);
  EXPECT_EQ(df.instructions[0].keyword, "FROM");
  EXPECT_EQ(df.instructions[1].keyword, "RUN");
  EXPECT_EQ(df.instructions[1].text, "Run echo hi");
  EXPECT_EQ(df.instructions[2].keyword, "WORKDIR");
}

TEST(Dockerfile, Continuations) {
  // An escaped escape at the end of a line does not continue it.
  Dockerfile df = parse_dockerfile("FROM a\nRUN echo a\\\\\nRUN echo b\n");
  ASSERT_EQ(df.instructions.size(), 3u);
  EXPECT_EQ(df.instructions[1].args, Strings{"echo a\\\\"});

  // Blanks after the continuation character, CRLF line ends, a continuation at the end.
  df = parse_dockerfile("FROM a\r\nRUN echo hi \\  \r\n  there\r\nRUN last \\");
  ASSERT_EQ(df.instructions.size(), 3u);
  EXPECT_EQ(df.instructions[1].text, "RUN echo hi   there");
  EXPECT_EQ(df.instructions[2].args, Strings{"last"});

  // The line of an instruction is where it starts; later lines count every physical line.
  df = parse_dockerfile("FROM a\nRUN one \\\n\n  # c\n  two\n\nRUN three\n");
  EXPECT_EQ(df.instructions[1].line, 2);
  EXPECT_EQ(df.instructions[1].args, Strings{"one   two"});
  EXPECT_EQ(df.instructions[2].line, 7);
  expect_error("FROM a\nRUN echo \\\n  one \\\n  two\nBOGUS x\n", 5, "unknown instruction");
  expect_error("FROM a\nCOPY \\\n  onlyone\n", 2, "COPY needs at least one source");
}

TEST(Dockerfile, JsonAndShellForms) {
  Dockerfile df = parse_dockerfile(
      "FROM a\n"
      "CMD []\n"
      "RUN [\"echo\", \"a b\", \"\\\"q\\\"\"]\n"
      "SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\n"
      "RUN [ -f /etc/passwd ] && echo yes\n"
      "RUN [ -d /tmp ]\n"
      "ENTRYPOINT   [ \"x\" ]  \n"
      "ADD [\"a.tar\", \"/\"]\n");
  const auto& ins = df.instructions;
  EXPECT_TRUE(ins[1].json_form);
  EXPECT_TRUE(ins[1].args.empty());
  EXPECT_TRUE(ins[2].json_form);
  EXPECT_EQ(ins[2].args, (Strings{"echo", "a b", "\"q\""}));
  EXPECT_TRUE(ins[3].json_form);
  EXPECT_EQ(ins[3].args, (Strings{"/bin/bash", "-o", "pipefail", "-c"}));
  // A shell test is not an array.
  EXPECT_FALSE(ins[4].json_form);
  EXPECT_EQ(ins[4].args, Strings{"[ -f /etc/passwd ] && echo yes"});
  EXPECT_FALSE(ins[5].json_form);
  EXPECT_EQ(ins[5].args, Strings{"[ -d /tmp ]"});
  EXPECT_TRUE(ins[6].json_form);
  EXPECT_EQ(ins[6].args, Strings{"x"});
  EXPECT_TRUE(ins[7].json_form);
  EXPECT_EQ(ins[7].args, (Strings{"a.tar", "/"}));

  expect_error("FROM a\nCMD ['run', 'it']\n", 2, "not a valid JSON array");
  expect_error("FROM a\n\nRUN [\"a\", \"b]\n", 3, "not a valid JSON array");
  expect_error("FROM a\nENTRYPOINT [\"a\", 1]\n", 2, "must hold only strings");
  expect_error("FROM a\nRUN []\n", 2, "RUN needs a command");
  expect_error("FROM a\nSHELL /bin/bash -c\n", 2, "SHELL takes a JSON array");
  expect_error("FROM a\nSHELL []\n", 2, "SHELL needs a command");
}

TEST(Dockerfile, Flags) {
  Dockerfile df = parse_dockerfile(
      "FROM a\nCOPY --chown=\"1000:1000\" a b\nADD --chmod=644 x y\nCOPY -- --odd /dst\n");
  EXPECT_EQ(df.instructions[1].flags.at("chown"), "1000:1000");
  EXPECT_EQ(df.instructions[1].args, (Strings{"a", "b"}));
  EXPECT_EQ(df.instructions[2].flags.at("chmod"), "644");
  EXPECT_TRUE(df.instructions[3].flags.empty());
  EXPECT_EQ(df.instructions[3].args, (Strings{"--odd", "/dst"}));

  expect_error("FROM --platform=linux/arm64 a\n", 1, "FROM --platform is not supported");
  expect_error("FROM a\nCOPY --from=builder /x /y\n", 2, "COPY --from is not supported");
  expect_error("FROM a\nCOPY --from=builder /x /y\n", 2, "multi-stage");
  expect_error("FROM a\nCOPY --link a b\n", 2, "COPY --link is not supported");
  expect_error("FROM a\nRUN --mount=type=cache,target=/x make\n", 2,
               "RUN --mount is not supported");
  expect_error("FROM a\nCOPY --chown a b\n", 2, "--chown needs a value");
  expect_error("FROM a\nCOPY --chmod= a b\n", 2, "--chmod needs a value");
  expect_error("FROM a\nCOPY --chown=1 --chown=2 a b\n", 2, "given twice");
}

TEST(Dockerfile, OrderOfInstructions) {
  Dockerfile df = parse_dockerfile("ARG A=1\nARG B\n# c\nFROM x:$A\nARG C\n");
  ASSERT_EQ(df.instructions.size(), 4u);
  EXPECT_EQ(df.instructions[2].keyword, "FROM");
  EXPECT_EQ(df.instructions[2].line, 4);

  expect_error("ARG X\nRUN echo\nFROM a\n", 2, "RUN before FROM");
  expect_error("LABEL a=b\n", 1, "LABEL before FROM");
  expect_error("FROM a\nRUN x\nFROM b\n", 3, "multi-stage builds are not supported");
  expect_error("# only a comment\nARG A\n", 2, "no FROM");
  expect_error("", 1, "no FROM");
}

TEST(Dockerfile, UnknownAndUnsupportedInstructions) {
  expect_error("FROM a\nFOO bar\n", 2, "unknown instruction \"FOO\"");
  expect_error("FROM a\nRUN ok\n  frobnicate\n", 3, "unknown instruction \"frobnicate\"");
  expect_error("FROM a\nVOLUME /data\n", 2, "VOLUME is not supported");
  expect_error("FROM a\nHEALTHCHECK CMD true\n", 2, "HEALTHCHECK is not supported");
  expect_error("FROM a\nONBUILD RUN x\n", 2, "ONBUILD is not supported");
  expect_error("FROM a\nMAINTAINER me\n", 2, "LABEL maintainer");
}

TEST(Dockerfile, ArgumentCounts) {
  expect_error("FROM\n", 1, "FROM needs arguments");
  expect_error("FROM a\n\nRUN\n", 3, "RUN needs arguments");
  expect_error("FROM a\nEXPOSE \n", 2, "EXPOSE needs arguments");
  expect_error("FROM a b\n", 1, "FROM takes an image");
  expect_error("FROM a AS\n", 1, "FROM takes an image");
  expect_error("FROM a BS b\n", 1, "FROM takes an image");
  expect_error("FROM a AS 1st\n", 1, "invalid stage name");
  expect_error("FROM a\nCOPY onlyone\n", 2, "COPY needs at least one source and a destination");
  expect_error("FROM a\nADD [\"x\"]\n", 2, "ADD needs at least one source");
  expect_error("FROM a\nWORKDIR /a b\n", 2, "WORKDIR takes exactly one");
  expect_error("FROM a\nUSER a b\n", 2, "USER takes exactly one");
  expect_error("FROM a\nENV FOO\n", 2, "ENV FOO has no value");
  expect_error("FROM a\nLABEL a=1 b\n", 2, "\"b\" is not of the form name=value");
  expect_error("FROM a\nENV =x\n", 2, "ENV names can not be blank");
  expect_error("FROM a\nARG =x\n", 2, "ARG names can not be blank");

  Dockerfile df = parse_dockerfile("FROM a As Build-1.x\nWORKDIR \"/my dir\"\nUSER 0:0\n");
  EXPECT_EQ(df.instructions[0].args, (Strings{"a", "As", "Build-1.x"}));
  EXPECT_EQ(df.instructions[1].args, Strings{"\"/my dir\""});
}

TEST(Dockerfile, AddOfAUrlIsRefused) {
  expect_error("FROM a\nADD https://example.com/x.tgz /x\n", 2, "ADD from a URL");
  expect_error("FROM a\nADD local.txt \"http://example.com/y\" /x\n", 2, "not supported");
  expect_error("FROM a\nADD [\"HTTPS://example.com/x\", \"/x\"]\n", 2, "ADD from a URL");
  expect_error("FROM a\nADD git@github.com:o/r.git /src\n", 2, "ADD from a URL");
  // The destination is a path in the image, whatever it looks like.
  parse_dockerfile("FROM a\nADD x.tar http://odd-but-local\n");
  EXPECT_TRUE(is_remote_url("https://x"));
  EXPECT_TRUE(is_remote_url("Http://x"));
  EXPECT_TRUE(is_remote_url("git://x"));
  EXPECT_FALSE(is_remote_url("http.txt"));
  EXPECT_FALSE(is_remote_url("./https://x"));
}

TEST(Dockerfile, HeredocsAreRefused) {
  expect_error("FROM a\nRUN <<EOF\necho hi\nEOF\n", 2, "heredocs");
  expect_error("FROM a\nRUN cat <<-'END' > /x\nhi\nEND\n", 2, "heredocs");
  expect_error("FROM a\nRUN python3 << EOF\nEOF\n", 2, "heredocs");
  expect_error("FROM a\nCOPY <<EOF /x\nhi\nEOF\n", 2, "heredocs");
  // Not heredocs: quoted, a here-string, a shift inside a word.
  parse_dockerfile("FROM a\nRUN echo \"<<EOF\" && cat <<< hi && echo $((1<<2))\n");
}

TEST(Dockerfile, SyntaxErrorsInWordsAreFoundAtParseTime) {
  expect_error("FROM a\nCOPY a \"b /x\n", 2, "unterminated double quote");
  expect_error("FROM a\n\nENV A=${B\n", 3, "missing \"}\"");
  expect_error("FROM a\nLABEL a='x\n", 2, "unterminated single quote");
  expect_error("FROM a\nWORKDIR ${}\n", 2, "bad substitution");
  // RUN is the shell's business.
  parse_dockerfile("FROM a\nRUN echo \"unbalanced ${\n");
}

TEST(Expand, Variables) {
  std::map<std::string, std::string> v = {{"A", "a"}, {"EMPTY", ""}, {"P", "/usr/bin"}};
  EXPECT_EQ(expand("$A", v, 1), "a");
  EXPECT_EQ(expand("${A}b", v, 1), "ab");
  EXPECT_EQ(expand("$Ab", v, 1), "");  // the name is "Ab"
  EXPECT_EQ(expand("x$A-y", v, 1), "xa-y");
  EXPECT_EQ(expand("$UNSET", v, 1), "");
  EXPECT_EQ(expand("${P}:/bin", v, 1), "/usr/bin:/bin");
  EXPECT_EQ(expand("${UNSET:-def}", v, 1), "def");
  EXPECT_EQ(expand("${EMPTY:-def}", v, 1), "def");
  EXPECT_EQ(expand("${EMPTY-def}", v, 1), "");
  EXPECT_EQ(expand("${UNSET-def}", v, 1), "def");
  EXPECT_EQ(expand("${A:-def}", v, 1), "a");
  EXPECT_EQ(expand("${A:+alt}", v, 1), "alt");
  EXPECT_EQ(expand("${EMPTY:+alt}", v, 1), "");
  EXPECT_EQ(expand("${EMPTY+alt}", v, 1), "alt");
  EXPECT_EQ(expand("${UNSET:+alt}", v, 1), "");
  EXPECT_EQ(expand("${UNSET:-$A/x}", v, 1), "a/x");
  EXPECT_EQ(expand("${UNSET:-\"x y\"}", v, 1), "x y");
  EXPECT_EQ(expand("${A:?must be set}", v, 1), "a");
  // A "$" that starts no name is literal; special parameters and $1 are unset.
  EXPECT_EQ(expand("$", v, 1), "$");
  EXPECT_EQ(expand("a$", v, 1), "a$");
  EXPECT_EQ(expand("$/x", v, 1), "$/x");
  EXPECT_EQ(expand("$1$$", v, 1), "");
}

TEST(Expand, QuotesAndEscapes) {
  std::map<std::string, std::string> v = {{"A", "a"}};
  EXPECT_EQ(expand("\\$A", v, 1), "$A");
  EXPECT_EQ(expand("'$A'", v, 1), "$A");
  EXPECT_EQ(expand("\"$A b\"", v, 1), "a b");
  EXPECT_EQ(expand("\"\\$A\"", v, 1), "$A");
  EXPECT_EQ(expand("\"\\n\"", v, 1), "\\n");  // in "...", "\" escapes only " $ and "\"
  EXPECT_EQ(expand("\\n", v, 1), "n");        // outside, it escapes anything
  EXPECT_EQ(expand("'\\n'", v, 1), "\\n");
  EXPECT_EQ(expand("a\\ b", v, 1), "a b");
  EXPECT_EQ(expand("\"it's\"", v, 1), "it's");
  EXPECT_EQ(expand("end\\", v, 1), "end");
  EXPECT_EQ(expand("`$A", v, 1, '`'), "$A");
  EXPECT_EQ(expand("C:\\$A", v, 1, '`'), "C:\\a");
}

TEST(Expand, Patterns) {
  std::map<std::string, std::string> v = {{"V", "v1.2.3"}, {"F", "archive.tar.gz"}};
  EXPECT_EQ(expand("${V#v}", v, 1), "1.2.3");
  EXPECT_EQ(expand("${F#*.}", v, 1), "tar.gz");
  EXPECT_EQ(expand("${F##*.}", v, 1), "gz");
  EXPECT_EQ(expand("${F%.*}", v, 1), "archive.tar");
  EXPECT_EQ(expand("${F%%.*}", v, 1), "archive");
  EXPECT_EQ(expand("${F%.zip}", v, 1), "archive.tar.gz");
  EXPECT_EQ(expand("${F/a/A}", v, 1), "Archive.tar.gz");
  EXPECT_EQ(expand("${F//a/A}", v, 1), "Archive.tAr.gz");
  EXPECT_EQ(expand("${F/.*/}", v, 1), "archive");
  EXPECT_EQ(expand("${V//./-}", v, 1), "v1-2-3");
  EXPECT_EQ(expand("${V/?/x}", v, 1), "x1.2.3");
}

TEST(Expand, ErrorsNameTheLine) {
  std::map<std::string, std::string> v = {{"EMPTY", ""}};
  std::string msg = error_of([&] { expand("${A", v, 7); }, 7);
  EXPECT_TRUE(msg.starts_with("Dockerfile line 7: ")) << msg;
  EXPECT_NE(msg.find("missing \"}\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("${A"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { expand("${", v, 3); }, 3).find("missing"), std::string::npos);
  EXPECT_NE(error_of([&] { expand("${}", v, 3); }, 3).find("bad substitution"), std::string::npos);
  EXPECT_NE(error_of([&] { expand("${A:-x", v, 3); }, 3).find("missing"), std::string::npos);
  EXPECT_NE(error_of([&] { expand("'abc", v, 4); }, 4).find("unterminated single quote"),
            std::string::npos);
  EXPECT_NE(error_of([&] { expand("\"abc", v, 4); }, 4).find("unterminated double quote"),
            std::string::npos);
  EXPECT_NE(error_of([&] { expand("${U:?must be set}", v, 5); }, 5).find("U: must be set"),
            std::string::npos);
  EXPECT_NE(error_of([&] { expand("${EMPTY:?}", v, 5); }, 5).find("not allowed to be empty"),
            std::string::npos);
  EXPECT_NE(error_of([&] { expand("${U?}", v, 5); }, 5).find("not allowed to be unset"),
            std::string::npos);
  EXPECT_EQ(expand("${EMPTY?}", v, 5), "");
  EXPECT_NE(error_of([&] { expand("${A:x}", v, 6); }, 6).find("unsupported modifier"),
            std::string::npos);
  EXPECT_NE(error_of([&] { expand("${A:#x}", v, 6); }, 6).find("unsupported modifier"),
            std::string::npos);
}

}  // namespace
}  // namespace pitbox::build
