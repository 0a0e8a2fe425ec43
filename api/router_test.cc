#include "api/router.h"

#include <gtest/gtest.h>

namespace pitbox::api {
namespace {

Handler nothing() {
  return [](Request&) -> asio::awaitable<void> { co_return; };
}

TEST(Router, MatchesPatternsAndFillsParameters) {
  Router router;
  router.add(http::verb::get, "/v1/sandboxes", Access::user, nothing());
  router.add(http::verb::get, "/v1/sandboxes/{id}", Access::user, nothing());
  router.add(http::verb::post, "/v1/sandboxes/{id}/sessions/{sid}/kill", Access::user, nothing());
  std::map<std::string, std::string> params;
  EXPECT_EQ(router.match(http::verb::get, "/v1/sandboxes", params).pattern, "/v1/sandboxes");
  EXPECT_TRUE(params.empty());
  EXPECT_EQ(router.match(http::verb::get, "/v1/sandboxes/demo%2Dbox", params).pattern,
            "/v1/sandboxes/{id}");
  EXPECT_EQ(params.at("id"), "demo-box");
  router.match(http::verb::post, "/v1/sandboxes/sb-1/sessions/se-2/kill", params);
  EXPECT_EQ(params.at("id"), "sb-1");
  EXPECT_EQ(params.at("sid"), "se-2");
}

TEST(Router, UnknownPathIsNotFoundAndWrongMethodIs405) {
  Router router;
  router.add(http::verb::get, "/v1/sandboxes/{id}", Access::user, nothing());
  std::map<std::string, std::string> params;
  try {
    router.match(http::verb::get, "/v1/nothing/here", params);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::not_found);
  }
  try {
    router.match(http::verb::put, "/v1/sandboxes/x", params);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(http_status_of(e), 405);
  }
  // An empty segment does not match a parameter.
  EXPECT_THROW(router.match(http::verb::get, "/v1/sandboxes/", params), Error);
}

TEST(Router, ParsesTargetsWithEscapes) {
  std::string path;
  std::map<std::string, std::vector<std::string>> query;
  parse_target("/v1/sandboxes/x/files?path=%2Ftmp%2Fa+b&label=a%3Db&label=c=d&flag", path, query);
  EXPECT_EQ(path, "/v1/sandboxes/x/files");
  EXPECT_EQ(query["path"], std::vector<std::string>{"/tmp/a b"});
  EXPECT_EQ(query["label"], (std::vector<std::string>{"a=b", "c=d"}));
  EXPECT_EQ(query["flag"], std::vector<std::string>{""});
  EXPECT_THROW(parse_target("/x?path=%zz", path, query), Error);
  EXPECT_THROW(parse_target("/x?path=%2", path, query), Error);
}

}  // namespace
}  // namespace pitbox::api
