#include "proto/messages.h"

#include <gtest/gtest.h>

namespace pitbox::proto {
namespace {

TEST(Messages, SpawnRoundTrips) {
  SpawnRequest r;
  r.argv = {"sh", "-c", "echo hi"};
  r.env = {"A=1"};
  r.cwd = "/work";
  r.user = "1000:1000";
  r.tty = true;
  r.rows = 40;
  r.cols = 120;
  r.stdin = true;
  r.window = 4096;
  nlohmann::json j = r;
  EXPECT_EQ(j["op"], "spawn");
  SpawnRequest back = j.get<SpawnRequest>();
  EXPECT_EQ(back.argv, r.argv);
  EXPECT_EQ(back.env, r.env);
  EXPECT_EQ(back.cwd, "/work");
  EXPECT_EQ(back.user, "1000:1000");
  EXPECT_TRUE(back.tty);
  EXPECT_EQ(back.rows, 40);
  EXPECT_EQ(back.cols, 120);
  EXPECT_TRUE(back.stdin);
  EXPECT_EQ(back.window, 4096u);
}

TEST(Messages, SpawnWithoutArgvIsRejected) {
  EXPECT_THROW(nlohmann::json({{"op", "spawn"}}).get<SpawnRequest>(), nlohmann::json::exception);
}

TEST(Messages, ExitStatus) {
  sys::ExitStatus killed{.code = 0, .signal = 9, .core_dumped = false};
  EXPECT_EQ(exit_from_json(exit_to_json(killed)).shell_code(), 137);
  EXPECT_EQ(exit_from_json(exit_to_json(sys::ExitStatus{.code = 3})).shell_code(), 3);
}

TEST(Messages, ResponsesCarryErrors) {
  EXPECT_EQ(unwrap_response(ok_response({{"pid", 5}}))["pid"], 5);
  try {
    unwrap_response(error_response(not_found("no such file: /x")));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::not_found);
    EXPECT_EQ(e.message(), "no such file: /x");
  }
  EXPECT_THROW(parse_payload("{not json", "a request"), Error);
}

}  // namespace
}  // namespace pitbox::proto
