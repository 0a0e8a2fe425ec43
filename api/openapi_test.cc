// The built-in spec lists exactly the routes the server has.
#include <gtest/gtest.h>

#include "api/routes.h"
#include "api/server.h"
#include "control/sqlite_store.h"
#include "sys/fs.h"

namespace pitbox::api {
namespace {

class NoNode final : public node::NodeClient {
 public:
  storage::ImageStore& images() override { throw internal_error("no images here"); }
  asio::awaitable<storage::LayerDesc> commit(const std::string&) override {
    co_return storage::LayerDesc{};
  }
  asio::awaitable<json> create(const node::BoxConfig&) override { co_return json(); }
  asio::awaitable<json> start(const node::BoxConfig&) override { co_return json(); }
  asio::awaitable<void> reconfigure(const node::BoxConfig&) override { co_return; }
  asio::awaitable<void> set_network(const std::string&, const net::Policy&) override { co_return; }
  asio::awaitable<void> pause(const std::string&) override { co_return; }
  asio::awaitable<uint64_t> snapshot(const std::string&, const std::string&) override {
    co_return 0;
  }
  asio::awaitable<void> remove_snapshot(const std::string&) override { co_return; }
  asio::awaitable<void> restore(const std::string&, const std::string&) override { co_return; }
  asio::awaitable<uint64_t> archive(const std::string&) override { co_return 0; }
  asio::awaitable<void> resume(const std::string&) override { co_return; }
  asio::awaitable<void> stop(const std::string&, std::chrono::milliseconds) override { co_return; }
  asio::awaitable<void> destroy(const std::string&) override { co_return; }
  asio::awaitable<bool> recover(const node::BoxConfig&, const json&, bool) override {
    co_return false;
  }
  std::shared_ptr<node::Channel> channel(const std::string&) override { return nullptr; }
  sys::CgroupStats stats(const std::string&) override { return {}; }
  std::vector<int> listening_ports(const std::string&) override { return {}; }
  sys::UniqueFd box_socket(const std::string&) override { return {}; }
  void detach_all() override {}
};

TEST(OpenApi, SpecListsExactlyTheServersRoutes) {
  json spec = json::parse(openapi_json());
  EXPECT_EQ(spec["openapi"].get<std::string>().substr(0, 2), "3.");
  std::set<std::string> in_spec;
  for (const auto& [path, ops] : spec["paths"].items()) {
    for (const auto& [method, op] : ops.items()) {
      if (method == "parameters") continue;
      std::string m = method;
      for (auto& c : m) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      in_spec.insert(m + " " + path);
      EXPECT_TRUE(op.contains("operationId")) << m << " " << path;
    }
  }

  asio::io_context io;
  char dir[] = "/tmp/pitbox-openapi-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  std::string db = std::string(dir) + "/pitbox.db";
  auto store = control::SqliteStore::open(db);
  control::Keys keys(*store);
  control::Metrics metrics;
  NoNode node;
  control::Sandboxes sandboxes(io.get_executor(), *store, node, metrics, {});
  control::Images images(io.get_executor(), node, sandboxes, {.state_dir = dir});
  control::PreviewSigner previews("test key");
  Server server(io.get_executor(), {sandboxes, keys, *store, metrics, "/tmp", images, previews},
                {});
  std::set<std::string> served;
  for (const auto& route : server.router().routes()) {
    served.insert(std::string(http::to_string(route.method)) + " " + route.pattern);
    // Only health is open; keys and audit are the admin's.
    EXPECT_EQ(route.access == Access::open, route.pattern == "/v1/health") << route.pattern;
    if (route.pattern.rfind("/v1/keys", 0) == 0 || route.pattern == "/v1/audit") {
      EXPECT_EQ(route.access, Access::admin) << route.pattern;
    }
  }
  EXPECT_EQ(in_spec, served);
  // Health needs no key in the spec either.
  EXPECT_EQ(spec["paths"]["/v1/health"]["get"]["security"], json::array());
  store.reset();
  sys::remove_tree(dir);
}

}  // namespace
}  // namespace pitbox::api
