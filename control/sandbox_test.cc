#include "control/sandbox.h"

#include <gtest/gtest.h>

#include "control/exec.h"

namespace pitbox::control {
namespace {

using nlohmann::json;

Capabilities caps() {
  Capabilities c;
  c.resolve_image = [](const std::string& ref) -> std::string {
    if (ref == "host" || ref == "busybox") return "id-of-" + ref;
    throw not_found("image \"" + ref + "\" not found");
  };
  c.online_cpus = 2;
  return c;
}

// The field the error names.
std::string field_of(const json& body) {
  try {
    parse_create(body, caps());
  } catch (const Error& e) {
    EXPECT_EQ(e.code() == ErrorCode::not_found ? "image" : std::string(to_string(e.code())),
              e.code() == ErrorCode::not_found ? "image" : "invalid_argument");
    return e.details().is_object() ? e.details().value("field", "") : "";
  }
  ADD_FAILURE() << "accepted " << body.dump();
  return "";
}

TEST(ParseCreate, Defaults) {
  SandboxSpec s = parse_create(json::object(), caps());
  EXPECT_EQ(s.image, "host");
  EXPECT_EQ(s.runtime, "container");
  EXPECT_FALSE(s.memory);
  EXPECT_FALSE(s.ephemeral);
}

TEST(ParseCreate, EverythingGiven) {
  SandboxSpec s = parse_create({{"image", "busybox"},
                                {"name", "demo-1"},
                                {"labels", {{"team", "search"}}},
                                {"env", {{"LANG", "C.UTF-8"}}},
                                {"cpus", 1.5},
                                {"memory", "512m"},
                                {"pids", 100},
                                {"workdir", "/work"},
                                {"user", "nobody"},
                                {"auto_stop_minutes", 0.5},
                                {"auto_delete_minutes", 60},
                                {"ephemeral", true}},
                               caps());
  EXPECT_EQ(s.image, "busybox");
  EXPECT_EQ(s.image_id, "id-of-busybox");
  EXPECT_EQ(s.name, "demo-1");
  EXPECT_EQ(s.labels.at("team"), "search");
  EXPECT_EQ(*s.millicpus, 1500u);
  EXPECT_EQ(*s.memory, 512u << 20);
  EXPECT_EQ(*s.pids, 100u);
  EXPECT_DOUBLE_EQ(*s.auto_stop_minutes, 0.5);
  EXPECT_TRUE(s.ephemeral);
}

TEST(ParseCreate, BadInputNamesTheField) {
  EXPECT_EQ(field_of({{"imagee", "host"}}), "imagee");
  EXPECT_EQ(field_of({{"image", "ubuntu"}}), "image");
  EXPECT_EQ(field_of({{"name", "Bad Name"}}), "name");
  EXPECT_EQ(field_of({{"name", "sb-abcdefghijkl"}}), "name");
  EXPECT_EQ(field_of({{"name", 7}}), "name");
  EXPECT_EQ(field_of({{"labels", {{"k", 1}}}}), "labels.k");
  EXPECT_EQ(field_of({{"labels", "x"}}), "labels");
  EXPECT_EQ(field_of({{"env", {{"1BAD", "x"}}}}), "env.1BAD");
  EXPECT_EQ(field_of({{"cpus", -1}}), "cpus");
  EXPECT_EQ(field_of({{"cpus", 64}}), "cpus");
  EXPECT_EQ(field_of({{"memory", "12x"}}), "memory");
  EXPECT_EQ(field_of({{"memory", 1024}}), "memory");
  EXPECT_EQ(field_of({{"pids", 1}}), "pids");
  EXPECT_EQ(field_of({{"pids", "many"}}), "pids");
  EXPECT_EQ(field_of({{"disk", "10g"}}), "disk");
  EXPECT_EQ(field_of({{"workdir", "rel"}}), "workdir");
  EXPECT_EQ(field_of({{"runtime", "vm"}}), "runtime");
  EXPECT_EQ(field_of({{"auto_stop_minutes", "soon"}}), "auto_stop_minutes");
  EXPECT_EQ(field_of({{"ephemeral", "yes"}}), "ephemeral");
  EXPECT_THROW(parse_create("not an object", caps()), Error);
}

TEST(Sandbox, DocumentRoundTrip) {
  Sandbox s;
  s.id = "sb-aaaaaaaaaaaa";
  s.spec = parse_create({{"name", "n"}, {"memory", 100 << 20}, {"auto_stop_minutes", 2}}, caps());
  s.state = State::stopped;
  s.created_at = 1000;
  s.stopped_at = 2000;
  s.error = Error(ErrorCode::unavailable, "why");
  s.location = {{"init_pid", 5}};
  s.preview_generation = 3;
  s.public_ports = {80, 8000};
  Sandbox back = Sandbox::from_doc(s.id, s.to_doc());
  EXPECT_EQ(back.to_api(), s.to_api());
  EXPECT_EQ(back.location, s.location);
  EXPECT_EQ(back.preview_generation, 3u);
  EXPECT_EQ(back.public_ports, (std::set<int>{80, 8000}));
}

TEST(ParseExec, CmdOrShellAndTheRest) {
  ExecRequest r =
      parse_exec({{"cmd", {"ls", "-l"}}, {"env", {{"A", "1"}}}, {"timeout_ms", 500}}, false);
  EXPECT_EQ(r.argv, (std::vector<std::string>{"ls", "-l"}));
  EXPECT_EQ(*r.timeout_ms, 500);
  EXPECT_EQ(parse_exec({{"shell", "echo hi"}}, false).argv,
            (std::vector<std::string>{"/bin/sh", "-c", "echo hi"}));
  EXPECT_EQ(*parse_exec({{"shell", "cat"}, {"stdin_base64", "aGk="}}, false).stdin_data, "hi");
  for (json bad :
       {json::object(), json{{"cmd", {"a"}}, {"shell", "b"}}, json{{"cmd", json::array()}},
        json{{"cmd", "ls"}}, json{{"shell", "x"}, {"tty", true}},
        json{{"shell", "x"}, {"timeout_ms", -1}}, json{{"shell", "x"}, {"cwd", "rel"}},
        json{{"shell", "x"}, {"stdin_base64", "!!"}}, json{{"shell", "x"}, {"what", 1}}}) {
    EXPECT_THROW(parse_exec(bad, false), Error) << bad.dump();
  }
}

TEST(ExecResult, BinaryOutputIsBase64) {
  ExecResult r;
  r.out = "ok";
  EXPECT_EQ(r.to_json()["encoding"], "utf-8");
  r.err = std::string("\xff\xfe", 2);
  json j = r.to_json();
  EXPECT_EQ(j["encoding"], "base64");
  EXPECT_EQ(j["stdout"], "b2s=");
}

}  // namespace
}  // namespace pitbox::control
