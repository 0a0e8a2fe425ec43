// Real boxes (needs root): create, talk to init, destroy, and leave nothing behind.
#include "node/boxes.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node/channel.h"
#include "sys/error.h"
#include "sys/fs.h"

namespace pitbox::node {
namespace {

class BoxesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    char tmpl[] = "/tmp/pitbox-boxes-test-XXXXXX";
    state_ = ::mkdtemp(tmpl);
    boxes_ = std::make_unique<Boxes>(Boxes::Options{.state_dir = state_,
                                                    .init_path = PITBOX_INIT_PATH,
                                                    .run_dir = state_ + "/run",
                                                    .cgroup_parent = "pitbox-test"});
  }
  void TearDown() override {
    boxes_.reset();
    if (!state_.empty()) sys::remove_tree(state_);
  }

  // Runs argv in the box and returns {exit code, stdout}.
  std::pair<int, std::string> run(LocalBox& box, std::vector<std::string> argv) {
    asio::io_context io;
    auto channel = std::make_shared<Channel>(io.get_executor(), box.box().take_channel());
    std::pair<int, std::string> result{-1, ""};
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          co_await channel->handshake();
          proto::SpawnRequest req;
          req.argv = argv;
          auto p = co_await channel->spawn(req);
          for (;;) {
            auto ev = co_await p->next();
            if (ev.kind == ProcessEvent::Kind::stdout) result.second += ev.data;
            if (ev.kind == ProcessEvent::Kind::exit) {
              result.first = ev.status.shell_code();
              break;
            }
          }
          channel->close();
        },
        [](std::exception_ptr e) {
          if (e) std::rethrow_exception(e);
        });
    io.run();
    return result;
  }

  std::string state_;
  std::unique_ptr<Boxes> boxes_;
};

TEST_F(BoxesTest, CreateRunDestroyLeavesNothing) {
  auto box = boxes_->create({.image = "busybox"});
  std::string dir = box->dir();
  EXPECT_EQ(dir, state_ + "/boxes/" + box->id());
  EXPECT_TRUE(sys::is_dir(dir));
  EXPECT_TRUE(sys::exists(state_ + "/run/boxes/" + box->id() + "/lock"));
  // /etc/hosts went into the writable layer, stored with in-box ids (root = 0 on disk).
  struct stat st;
  ASSERT_EQ(::stat((dir + "/upper/etc/hosts").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  auto [code, out] = run(
      *box, {"sh", "-c", "echo hello from $(hostname); grep -c $(hostname) /etc/hosts; exit 7"});
  EXPECT_EQ(code, 7);
  EXPECT_EQ(out, "hello from " + box->id() + "\n1\n");
  std::string id = box->id();
  box->destroy();
  EXPECT_FALSE(sys::exists(dir));
  EXPECT_FALSE(sys::exists(state_ + "/run/boxes/" + id));
  EXPECT_FALSE(sys::exists("/sys/fs/cgroup/memory/pitbox-test/" + id));
  EXPECT_FALSE(sys::exists("/sys/fs/cgroup/pids/pitbox-test/" + id));
}

TEST_F(BoxesTest, RefusedLimitLeavesNothing) {
  sys::CgroupLimits limits;
  limits.millicpus = 1;  // 100 us of quota per 100 ms: below the kernel's minimum of 1 ms
  try {
    boxes_->create({.image = "busybox", .limits = limits});
    FAIL() << "the kernel accepted a 0.001 cpu quota";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(e.message().find("cpu"), std::string::npos) << e.message();
  }
  EXPECT_EQ(boxes_->sweep(), 0);
  EXPECT_TRUE(sys::read_dir(state_ + "/boxes").empty());
  EXPECT_TRUE(sys::read_dir(state_ + "/run/boxes").empty());
  EXPECT_FALSE(sys::exists("/sys/fs/cgroup/cpu/pitbox-test/" + std::string("x")));
  auto left = sys::read_file("/proc/self/mountinfo");
  EXPECT_EQ(left.find(state_), std::string::npos);
}

TEST_F(BoxesTest, UnknownImageIsNotFound) {
  try {
    boxes_->create({.image = "nope"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::not_found);
  }
}

}  // namespace
}  // namespace pitbox::node
