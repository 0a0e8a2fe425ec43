// The node's side of the box protocol against a hostile init: it must not queue what it did not
// ask for, nor more output than it allowed.
#include "node/channel.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <thread>

#include "sys/fs.h"

namespace pitbox::node {
namespace {

using nlohmann::json;
using proto::FrameType;

class FakeInit {
 public:
  FakeInit() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    node_end_ = sys::UniqueFd(sv[0]);
    init_end_ = sys::UniqueFd(sv[1]);
  }
  sys::UniqueFd take_node_end() { return std::move(node_end_); }
  void send(FrameType t, uint32_t stream, std::string_view payload) {
    ASSERT_TRUE(sys::write_all(init_end_.get(), proto::encode_frame(t, stream, payload)));
  }
  void hello() {
    send(FrameType::hello, 0, json(proto::Hello{proto::kVersion, "fake", {}, {}}).dump());
  }

  // Like init, answers only after the node's request has arrived: sends `frames` once a
  // request frame was read.
  void after_request(std::vector<proto::Frame> frames) {
    thread_ = std::thread([this, frames = std::move(frames)] {
      proto::FrameDecoder d;
      char buf[4096];
      for (;;) {
        ssize_t n = ::read(init_end_.get(), buf, sizeof buf);
        if (n <= 0) return;
        d.feed(std::string_view(buf, static_cast<size_t>(n)));
        while (auto f = d.next()) {
          if (f->type != FrameType::request) continue;
          for (const auto& out : frames) send(out.type, out.stream, out.payload);
          return;
        }
      }
    });
  }
  ~FakeInit() {
    if (thread_.joinable()) {
      ::shutdown(init_end_.get(), SHUT_RDWR);
      thread_.join();
    }
  }

 private:
  sys::UniqueFd node_end_, init_end_;
  std::thread thread_;
};

// Runs `body` against a channel until it completes; returns the channel's error, if any.
std::optional<Error> drive(FakeInit& init, std::function<asio::awaitable<void>(Channel&)> body) {
  asio::io_context io;
  auto channel = std::make_shared<Channel>(io.get_executor(), init.take_node_end());
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        try {
          co_await body(*channel);
        } catch (const Error&) {
        }
        channel->close();
      },
      asio::detached);
  io.run_for(std::chrono::seconds(10));
  return channel->error();
}

TEST(Channel, AResponseNobodyAskedForBreaksTheChannel) {
  FakeInit init;
  init.hello();
  for (uint32_t s = 1000; s < 1010; ++s) init.send(FrameType::response, s, R"({"ok":true})");
  json ping = {{"op", "ping"}};  // (GCC 12 cannot keep a braced JSON literal in a coroutine)
  auto err = drive(init, [&](Channel& c) -> asio::awaitable<void> {
    co_await c.handshake();
    co_await c.call(ping);  // never answered: the channel fails first
  });
  ASSERT_TRUE(err);
  EXPECT_NE(err->message().find("no request waiting"), std::string::npos) << err->message();
}

TEST(Channel, OutputBeyondTheWindowBreaksTheChannel) {
  FakeInit init;
  init.hello();
  init.after_request({{FrameType::response, 1, R"({"ok":true,"pid":5,"stdin_window":0})"},
                      {FrameType::stdout, 1, std::string(100, 'x')},  // window is 100: fine
                      {FrameType::stdout, 1, "y"}});                  // one byte too many
  std::string got;
  auto err = drive(init, [&](Channel& c) -> asio::awaitable<void> {
    co_await c.handshake();
    proto::SpawnRequest req;
    req.argv = {"x"};
    req.window = 100;
    auto p = co_await c.spawn(req);
    for (;;) got += (co_await p->next()).data;
  });
  ASSERT_TRUE(err);
  EXPECT_NE(err->message().find("beyond the window"), std::string::npos) << err->message();
}

TEST(Channel, OutputWithinTheWindowFlows) {
  FakeInit init;
  init.hello();
  init.after_request({{FrameType::response, 1, R"({"ok":true,"pid":5,"stdin_window":0})"},
                      {FrameType::stdout, 1, "hello "},
                      {FrameType::stderr, 1, "world"},
                      {FrameType::exit, 1, R"({"code":3})"}});
  std::string out;
  int code = -1;
  drive(init, [&](Channel& c) -> asio::awaitable<void> {
    co_await c.handshake();
    proto::SpawnRequest req;
    req.argv = {"x"};
    auto p = co_await c.spawn(req);
    for (;;) {
      auto ev = co_await p->next();
      if (ev.kind == ProcessEvent::Kind::exit) {
        code = ev.status.code;
        break;
      }
      out += ev.data;
    }
  });
  EXPECT_EQ(out, "hello world");
  EXPECT_EQ(code, 3);
}

}  // namespace
}  // namespace pitbox::node
