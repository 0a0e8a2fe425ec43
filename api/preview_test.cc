#include "api/preview.h"

#include <gtest/gtest.h>

namespace pitbox::api {
namespace {

TEST(PreviewTarget, ByHost) {
  auto t = preview_target("8000-sb-ab12.localhost:7070", "/index.html?x=1", "localhost");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->box, "sb-ab12");
  EXPECT_EQ(t->port, 8000);
  EXPECT_EQ(t->prefix, "");
  EXPECT_EQ(t->upstream_target, "/index.html?x=1");
  // Any case, no port, another domain.
  t = preview_target("3000-My-Box.Preview.Example.COM", "/", "preview.example.com");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->box, "my-box");
  EXPECT_EQ(t->port, 3000);
}

TEST(PreviewTarget, HostsThatAreNotPreviews) {
  for (const char* host :
       {"localhost:7070", "8000.localhost", "-sb.localhost", "8000-.localhost", "8000--x.localhost",
        "123456-sb.localhost", "80a-sb.localhost", "8000-sb_x.localhost", "8000-sb.localhost.evil",
        "8000-sb.otherhost", "x.8000-sb.localhost"}) {
    EXPECT_FALSE(preview_target(host, "/", "localhost")) << host;
  }
}

TEST(PreviewTarget, ByPath) {
  auto t = preview_target("127.0.0.1:7070", "/v1/sandboxes/sb-1/ports/8000/proxy/a/b?c=d", "x");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->box, "sb-1");
  EXPECT_EQ(t->port, 8000);
  EXPECT_EQ(t->prefix, "/v1/sandboxes/sb-1/ports/8000/proxy");
  EXPECT_EQ(t->upstream_target, "/a/b?c=d");
  t = preview_target("h", "/v1/sandboxes/web/ports/80/proxy", "x");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->upstream_target, "/");
  t = preview_target("h", "/v1/sandboxes/web/ports/80/proxy?q=1", "x");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->upstream_target, "/?q=1");
}

TEST(PreviewTarget, PathsThatAreNotPreviews) {
  for (const char* target :
       {"/v1/sandboxes/sb-1/ports", "/v1/sandboxes/sb-1/ports/8000",
        "/v1/sandboxes//ports/80/proxy", "/v1/sandboxes/sb-1/ports/8000/proxyx",
        "/v1/sandboxes/sb-1/ports/123456/proxy", "/v1/sandboxes/sb-1/ports/x/proxy",
        "/v1/sandboxes/sb-1/ports/8000/preview-url", "/v1/sandboxes/a/b/ports/80/proxy",
        "/v2/sandboxes/sb-1/ports/80/proxy"}) {
    EXPECT_FALSE(preview_target("127.0.0.1", target, "localhost")) << target;
  }
}

}  // namespace
}  // namespace pitbox::api
