// Real boxes (needs root): create, talk to init, destroy, and leave nothing behind.
#include "node/boxes.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "node/channel.h"
#include "sys/error.h"
#include "sys/fs.h"
#include "sys/netlink.h"

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

  // Runs argv in the box and returns {exit code, stdout}. With `hello`, init's hello is kept.
  std::pair<int, std::string> run(LocalBox& box, std::vector<std::string> argv,
                                  proto::Hello* hello = nullptr) {
    asio::io_context io;
    auto channel = std::make_shared<Channel>(io.get_executor(), box.box().take_channel());
    std::pair<int, std::string> result{-1, ""};
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          auto h = co_await channel->handshake();
          if (hello) *hello = h;
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

// Boxes with a network of the node's: a namespace made ahead by the host, eth0 and an address.
class NetworkedBoxesTest : public BoxesTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    char tmpl[] = "/tmp/pitbox-boxes-test-XXXXXX";
    state_ = ::mkdtemp(tmpl);
    Boxes::Options o{.state_dir = state_,
                     .init_path = PITBOX_INIT_PATH,
                     .run_dir = state_ + "/run",
                     .cgroup_parent = "pitbox-test"};
    o.network = net::NetworkOptions{.range = "10.232.0.0/16", .nft_helper = PITBOX_NFT_PATH};
    o.network_pool = 1;
    boxes_ = std::make_unique<Boxes>(o);
  }
  static bool host_has_link(const std::string& name) {
    return sys::Netlink().link_index(name) != 0;
  }
};

TEST_F(NetworkedBoxesTest, ABoxGetsItsAddressAndLeavesNoLink) {
  auto box = boxes_->create({.image = "busybox", .network = net::Policy{}});
  BoxLocation where = box->location();
  ASSERT_FALSE(where.address.empty());
  EXPECT_TRUE(
      boxes_->network()->range().contains(sys::Ipv4Net::parse(where.address, "address").addr));
  std::string link = boxes_->network()->link_name(where.id_slot);
  EXPECT_TRUE(host_has_link(link));
  // Its sysfs shows its own namespace; its root may listen below 1024 but not re-address eth0.
  auto [code, out] = run(*box, {"sh", "-c",
                                "ls /sys/class/net; ip -4 addr show eth0 | grep -o 'inet [0-9.]*'; "
                                "nc -l -p 80 & sleep 0.1; netstat -ltn | grep -c ':80 '; kill $!; "
                                "ip addr add 10.232.9.9/32 dev eth0 2>/dev/null || echo refused"});
  EXPECT_EQ(code, 0);
  EXPECT_EQ(out, "eth0\nlo\ninet " + where.address + "\n1\nrefused\n");
  box->stop();
  EXPECT_FALSE(host_has_link(link));
  box->start();  // a new namespace, perhaps another address
  EXPECT_EQ(run(*box, {"ls", "/sys/class/net/eth0"}).first, 0);
  link = boxes_->network()->link_name(box->location().id_slot);
  box->destroy();
  EXPECT_FALSE(host_has_link(link));
}

// A box whose init ended, and whose slot another box took before the stop: the stop leaves the
// other box's link and rules alone.
TEST_F(NetworkedBoxesTest, AStopLeavesTheNetworkOfWhoeverTookTheSlot) {
  auto box = boxes_->create({.image = "busybox", .network = net::Policy{}});
  BoxLocation where = box->location();
  uint32_t slot = where.id_slot;
  ::kill(where.init.pid, SIGKILL);
  for (int i = 0; i < 200 && where.init.alive(); ++i) ::usleep(10000);
  ASSERT_FALSE(where.init.alive());
  // Another box takes the slot: its lease, a namespace and rules of its own.
  IdLease taker = IdAllocator("/run/pitbox/ids").reclaim(slot, sys::ProcessRef::self());
  net::Network& network = *boxes_->network();
  net::Attachment theirs = network.prepare(slot);
  network.apply(slot, net::Policy::from_json("none"), "taker");
  box->stop();
  EXPECT_TRUE(host_has_link(network.link_name(slot)));
  auto rules = network.box_at(network.address_of(slot));
  ASSERT_TRUE(rules);
  EXPECT_EQ(rules->second.mode, net::Policy::Mode::none);
  network.release(slot);
  taker.release();
  box->destroy();
}

TEST_F(NetworkedBoxesTest, WithoutAPolicyOnlyLoopback) {
  auto box = boxes_->create({.image = "busybox"});
  EXPECT_TRUE(box->location().address.empty());
  EXPECT_EQ(run(*box, {"ls", "/sys/class/net"}).second, "lo\n");
  EXPECT_THROW(box->set_network(net::Policy{}), Error);  // conflict: runs without a network
  box->destroy();
}

TEST_F(BoxesTest, CreateRunDestroyLeavesNothing) {
  auto box = boxes_->create({.image = "busybox"});
  std::string dir = box->dir();
  EXPECT_EQ(dir, state_ + "/boxes/" + box->id());
  EXPECT_TRUE(sys::is_dir(dir));
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
  EXPECT_FALSE(sys::exists("/sys/fs/cgroup/memory/pitbox-test/" + id));
  EXPECT_FALSE(sys::exists("/sys/fs/cgroup/pids/pitbox-test/" + id));
}

TEST_F(BoxesTest, StopKeepsTheFilesAndStartRunsAgain) {
  auto box = boxes_->create({.image = "busybox"});
  EXPECT_EQ(run(*box, {"sh", "-c", "echo kept > /root/note"}).first, 0);
  box->stop();
  EXPECT_FALSE(box->running());
  box->start();
  auto [code, out] = run(*box, {"cat", "/root/note"});
  EXPECT_EQ(code, 0);
  EXPECT_EQ(out, "kept\n");
  box->destroy();
}

TEST_F(BoxesTest, ABoxOutlivesItsNodeAndIsFoundAgain) {
  auto box = boxes_->create({.image = "busybox", .hostname = "survivor"});
  BoxRequest request = box->request();
  BoxLocation where = box->location();
  pid_t init = box->box().init_pid();
  box->detach();  // the daemon goes away; the box keeps running
  box.reset();
  ASSERT_TRUE(where.init.alive());
  // Nobody else gets its host ids meanwhile.
  IdAllocator other("/run/pitbox/ids");
  EXPECT_THROW(other.reclaim(where.id_slot, sys::ProcessRef::self()), Error);

  auto again = boxes_->reattach(request, where);
  ASSERT_TRUE(again->running());
  EXPECT_EQ(again->box().init_pid(), init);
  proto::Hello hello;
  auto [code, out] = run(*again, {"hostname"}, &hello);
  EXPECT_EQ(code, 0);
  EXPECT_EQ(out, "survivor\n");
  again->destroy();
  EXPECT_FALSE(where.init.alive());
}

TEST(IdLeaseTest, TakeBackOnlyWhatIsStillOurs) {
  IdAllocator ids("/run/pitbox/ids");
  // Leased to a process that ends: the lease is free for anyone from then on.
  pid_t child = ::fork();
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  sys::ProcessRef gone = sys::ProcessRef::of(child);
  IdLease lease = ids.acquire(sys::ProcessRef::self());
  lease.transfer(gone);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  // Nobody took it yet: it is ours again, and nobody else gets it now.
  EXPECT_TRUE(lease.take_back(sys::ProcessRef::self()));
  EXPECT_THROW(ids.reclaim(lease.slot(), gone), Error);
  // Another took it after its owner ended: not ours, and our release leaves it to them.
  lease.transfer(gone);
  IdLease taker = ids.reclaim(lease.slot(), sys::ProcessRef::self());
  uint32_t slot = lease.slot();
  EXPECT_FALSE(lease.take_back(sys::ProcessRef::self()));
  EXPECT_FALSE(lease.valid());
  lease.release();
  IdAllocator third("/run/pitbox/ids");
  EXPECT_THROW(third.reclaim(slot, sys::ProcessRef::of(1)), Error);  // still the taker's
  taker.release();
}

TEST_F(BoxesTest, ABoxThatDiedMeanwhileComesBackStopped) {
  auto box = boxes_->create({.image = "busybox"});
  BoxRequest request = box->request();
  BoxLocation where = box->location();
  box->detach();
  box.reset();
  ::kill(where.init.pid, SIGKILL);
  for (int i = 0; i < 200 && where.init.alive(); ++i) ::usleep(10000);
  auto again = boxes_->reattach(request, where);
  EXPECT_FALSE(again->running());
  again->start();
  EXPECT_EQ(run(*again, {"true"}).first, 0);
  again->destroy();
}

TEST_F(BoxesTest, FilesGoInAndComeOut) {
  auto box = boxes_->create({.image = "busybox"});
  asio::io_context io;
  auto channel = std::make_shared<Channel>(io.get_executor(), box->box().take_channel());
  std::string content;
  for (int i = 0; i < 300000; ++i) content += static_cast<char>('a' + i % 26);
  std::string back, error;
  uint64_t written = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await channel->handshake();
        auto w = co_await channel->write_file("/root/data", 0600u);
        for (size_t off = 0; off < content.size(); off += 100000) {
          co_await w->write(std::string_view(content).substr(off, 100000));
        }
        written = co_await w->finish();
        auto r = co_await channel->read_file("/root/data");
        EXPECT_EQ(r->info().size, content.size());
        EXPECT_EQ(r->info().mode, 0600u);
        while (auto chunk = co_await r->next()) back += *chunk;
        try {
          auto bad = co_await channel->write_file("/no/such/dir/f", std::nullopt);
          co_await bad->write("x");
          co_await bad->finish();
        } catch (const Error& e) {
          error = e.message();
        }
        channel->close();
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  EXPECT_EQ(written, content.size());
  EXPECT_EQ(back, content);
  EXPECT_NE(error.find("/no/such/dir"), std::string::npos) << error;
  box->destroy();
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
  EXPECT_TRUE(sys::read_dir(state_ + "/run/one-shot").empty());
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
