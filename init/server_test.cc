// pitbox-init end to end: the real static binary as a plain child process (no namespaces),
// driven over a socketpair with the box protocol.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <set>
#include <thread>

#include "proto/frame.h"
#include "proto/messages.h"
#include "sys/fs.h"

namespace pitbox::init {
namespace {

using nlohmann::json;
using proto::Frame;
using proto::FrameType;
using namespace std::chrono_literals;

class InitProcess {
 public:
  explicit InitProcess(const std::string& root) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(sv[1], 3);
      ::execl(PITBOX_INIT_PATH, "pitbox-init", "--root", root.c_str(), nullptr);
      ::_exit(127);
    }
    ::close(sv[1]);
    fd_ = sv[0];
  }
  ~InitProcess() {
    if (fd_ >= 0) ::close(fd_);
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }

  void send(FrameType t, uint32_t stream, std::string_view payload) {
    std::string f = proto::encode_frame(t, stream, payload);
    ASSERT_TRUE(sys::write_all(fd_, f));
  }
  void send_raw(const std::string& bytes) { ASSERT_TRUE(sys::write_all(fd_, bytes)); }

  // The node goes away (its end of the channel closes) and a new one takes the spare channel
  // from init with pidfd_getfd, as a restarted daemon does.
  void reconnect_through_spare() {
    ::close(fd_);
    decoder_ = proto::FrameDecoder();
    eof_ = false;
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    ASSERT_GE(pidfd, 0);
    fd_ = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, proto::kSpareChannelFd, 0));
    ::close(pidfd);
    ASSERT_GE(fd_, 0) << std::strerror(errno);
  }
  void request(uint32_t stream, const json& body) { send(FrameType::request, stream, body.dump()); }
  void hello() {
    send(FrameType::hello, 0, json(proto::Hello{proto::kVersion, "test", {}}).dump());
  }

  // The next frame, or nullopt on timeout or end of stream.
  std::optional<Frame> next(std::chrono::milliseconds timeout = 5000ms) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto f = decoder_.next()) return f;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
      char buf[65536];
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) {
        eof_ = true;
        return std::nullopt;
      }
      decoder_.feed(std::string_view(buf, static_cast<size_t>(n)));
    }
  }
  bool eof() const { return eof_; }

  // Reads frames until `stream` has exited; returns its output and frames in order.
  struct Result {
    std::string out, err;
    json response;
    std::optional<sys::ExitStatus> exit;
    std::vector<FrameType> order;
    uint64_t windows = 0;
  };
  Result run_until_exit(uint32_t stream, std::chrono::milliseconds timeout = 10000ms) {
    Result r;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!r.exit && std::chrono::steady_clock::now() < deadline) {
      auto f = next(100ms);
      if (!f) {
        if (eof_) break;
        continue;
      }
      if (f->stream != stream) {
        others_.push_back(*f);
        continue;
      }
      r.order.push_back(f->type);
      if (f->type == FrameType::stdout) r.out += f->payload;
      if (f->type == FrameType::stderr) r.err += f->payload;
      if (f->type == FrameType::response) {
        r.response = json::parse(f->payload);
        if (!r.response["ok"].get<bool>()) break;
      }
      if (f->type == FrameType::window) r.windows += *proto::decode_window(f->payload);
      if (f->type == FrameType::exit) r.exit = proto::exit_from_json(json::parse(f->payload));
    }
    return r;
  }
  json response(uint32_t stream) {
    for (;;) {
      auto f = next();
      if (!f) return nullptr;
      if (f->stream == stream && f->type == FrameType::response) return json::parse(f->payload);
      others_.push_back(*f);
    }
  }

 private:
  pid_t pid_;
  int fd_ = -1;
  proto::FrameDecoder decoder_;
  bool eof_ = false;
  std::deque<Frame> others_;
};

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pitbox-init-test-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    init_ = std::make_unique<InitProcess>(root_);
    auto hello = init_->next();
    ASSERT_TRUE(hello);
    ASSERT_EQ(hello->type, FrameType::hello);
    auto h = json::parse(hello->payload).get<proto::Hello>();
    EXPECT_EQ(h.version, proto::kVersion);
    init_->hello();
  }
  void TearDown() override {
    init_.reset();
    sys::remove_tree(root_);
  }
  json spawn(uint32_t stream, std::vector<std::string> argv, json extra = json::object()) {
    json req = extra;
    req["op"] = "spawn";
    req["argv"] = argv;
    init_->request(stream, req);
    return req;
  }

  std::string root_;
  std::unique_ptr<InitProcess> init_;
};

TEST_F(ServerTest, SpawnDeliversOutputThenExitCode) {
  spawn(1, {"sh", "-c", "echo out; echo err >&2; exit 3"});
  auto r = init_->run_until_exit(1);
  EXPECT_TRUE(r.response["ok"].get<bool>());
  EXPECT_GT(r.response["pid"].get<int>(), 0);
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  ASSERT_TRUE(r.exit);
  EXPECT_EQ(r.exit->code, 3);
  // The exit frame comes last, after both output streams ended.
  ASSERT_FALSE(r.order.empty());
  EXPECT_EQ(r.order.front(), FrameType::response);
  EXPECT_EQ(r.order.back(), FrameType::exit);
}

TEST_F(ServerTest, MissingCommandIsNotFound) {
  spawn(1, {"definitely-not-a-command"});
  json resp = init_->response(1);
  EXPECT_FALSE(resp["ok"].get<bool>());
  EXPECT_EQ(resp["error"]["code"], "not_found");
  EXPECT_NE(resp["error"]["message"].get<std::string>().find("definitely-not-a-command"),
            std::string::npos);
  spawn(2, {"true"}, {{"cwd", "/no/such/dir"}});
  resp = init_->response(2);
  EXPECT_EQ(resp["error"]["code"], "not_found");
  EXPECT_NE(resp["error"]["message"].get<std::string>().find("/no/such/dir"), std::string::npos);
}

TEST_F(ServerTest, ManyConcurrentProcessesOnOneChannel) {
  constexpr int kCount = 20;
  for (int i = 1; i <= kCount; ++i) {
    spawn(i, {"sh", "-c",
              "sleep 0.0" + std::to_string(i % 10) + "; echo " + std::to_string(i) + "; exit " +
                  std::to_string(i)});
  }
  std::map<uint32_t, std::string> out;
  std::map<uint32_t, int> codes;
  while (codes.size() < kCount) {
    auto f = init_->next();
    ASSERT_TRUE(f) << "only " << codes.size() << " exited";
    if (f->type == FrameType::stdout) out[f->stream] += f->payload;
    if (f->type == FrameType::exit)
      codes[f->stream] = proto::exit_from_json(json::parse(f->payload)).code;
  }
  for (int i = 1; i <= kCount; ++i) {
    EXPECT_EQ(out[i], std::to_string(i) + "\n");
    EXPECT_EQ(codes[i], i);
  }
}

TEST_F(ServerTest, StdinIsDeliveredAndAcknowledged) {
  spawn(1, {"cat"}, {{"stdin", true}});
  ASSERT_TRUE(init_->response(1)["ok"].get<bool>());
  init_->send(FrameType::stdin, 1, "hello ");
  init_->send(FrameType::stdin, 1, "world");
  init_->send(FrameType::stdin, 1, "");
  auto r = init_->run_until_exit(1);
  EXPECT_EQ(r.out, "hello world");
  EXPECT_EQ(r.windows, 11u);
  ASSERT_TRUE(r.exit);
  EXPECT_EQ(r.exit->code, 0);
}

TEST_F(ServerTest, OutputStopsAtTheWindowAndResumesWhenGranted) {
  spawn(1, {"head", "-c", "300000", "/dev/zero"}, {{"window", 1000}});
  size_t got = 0;
  for (;;) {
    auto f = init_->next(300ms);
    if (!f) break;
    if (f->type == FrameType::stdout) got += f->payload.size();
    ASSERT_NE(f->type, FrameType::exit) << "exited without being granted a window";
  }
  EXPECT_EQ(got, 1000u);
  init_->send(FrameType::window, 1, proto::encode_window(1000000));
  auto r = init_->run_until_exit(1);
  EXPECT_EQ(got + r.out.size(), 300000u);
  ASSERT_TRUE(r.exit);
  EXPECT_EQ(r.exit->code, 0);
}

TEST_F(ServerTest, SignalsReachTheProcessGroup) {
  spawn(1, {"sh", "-c", "sleep 100 & wait"});
  ASSERT_TRUE(init_->response(1)["ok"].get<bool>());
  init_->request(2, {{"op", "signal"}, {"target", 1}, {"signal", SIGTERM}});
  auto r = init_->run_until_exit(1);
  ASSERT_TRUE(r.exit);
  EXPECT_EQ(r.exit->signal, SIGTERM);
  init_->request(3, {{"op", "signal"}, {"target", 99}, {"signal", SIGTERM}});
  EXPECT_EQ(init_->response(3)["error"]["code"], "not_found");
}

TEST_F(ServerTest, ExitIsNotHeldBackByABackgroundChildHoldingStdout) {
  auto start = std::chrono::steady_clock::now();
  spawn(1, {"sh", "-c", "sleep 30 & echo done"});
  auto r = init_->run_until_exit(1, 10000ms);
  ASSERT_TRUE(r.exit);
  EXPECT_EQ(r.out, "done\n");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST_F(ServerTest, TerminalHasTheRequestedSize) {
  spawn(1, {"sh", "-c", "tty; stty size"}, {{"tty", true}, {"rows", 33}, {"cols", 77}});
  auto r = init_->run_until_exit(1);
  EXPECT_NE(r.out.find("/dev/pts/"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("33 77"), std::string::npos) << r.out;
  ASSERT_TRUE(r.exit);
  EXPECT_EQ(r.exit->code, 0);
}

TEST_F(ServerTest, BadRequestsGetErrorsAndTheChannelStaysUp) {
  init_->send(FrameType::request, 1, "{not json");
  EXPECT_EQ(init_->response(1)["error"]["code"], "invalid_argument");
  init_->request(2, {{"op", "frobnicate"}});
  EXPECT_EQ(init_->response(2)["error"]["code"], "invalid_argument");
  init_->request(3, {{"op", "spawn"}});  // no argv
  EXPECT_EQ(init_->response(3)["error"]["code"], "invalid_argument");
  init_->request(4, {{"op", "ping"}});
  EXPECT_TRUE(init_->response(4)["ok"].get<bool>());
}

TEST_F(ServerTest, OversizedFrameClosesTheChannel) {
  std::string header = proto::encode_frame(FrameType::request, 1, "").substr(0, proto::kHeaderSize);
  header[0] = 0x7f;  // a length of about 2 GiB
  init_->send_raw(header);
  EXPECT_FALSE(init_->next(5000ms));
  EXPECT_TRUE(init_->eof());
}

TEST_F(ServerTest, UnknownFrameTypeClosesTheChannel) {
  std::string frame = proto::encode_frame(FrameType::request, 1, "{}");
  frame[4] = 77;
  init_->send_raw(frame);
  EXPECT_FALSE(init_->next(5000ms));
  EXPECT_TRUE(init_->eof());
}

TEST_F(ServerTest, OrphansAreReaped) {
  spawn(1, {"sh", "-c", "sleep 0.2 & exit 0"});
  auto r = init_->run_until_exit(1);
  ASSERT_TRUE(r.exit);
  std::this_thread::sleep_for(600ms);
  // No zombie may be left among init's children.
  std::string children = sys::read_file("/proc/" + std::to_string(init_->pid()) + "/task/" +
                                        std::to_string(init_->pid()) + "/children");
  EXPECT_EQ(children, "");
}

TEST_F(ServerTest, ANewNodeTakesOverThroughTheSpareChannel) {
  spawn(7, {"sh", "-c", "echo before; read x; echo after $x; exit 4"}, {{"stdin", true}});
  ASSERT_TRUE(init_->response(7)["ok"].get<bool>());
  init_->reconnect_through_spare();
  init_->hello();
  auto hello = init_->next();
  ASSERT_TRUE(hello);
  ASSERT_EQ(hello->type, FrameType::hello);
  auto h = json::parse(hello->payload).get<proto::Hello>();
  ASSERT_EQ(h.processes.size(), 1u);
  EXPECT_EQ(h.processes[0].stream, 7u);
  EXPECT_EQ(h.processes[0].argv[0], "sh");
  EXPECT_FALSE(h.processes[0].exited);
  // The process kept running; its output waited for the new node's window.
  init_->send(FrameType::window, 7, proto::encode_window(65536));
  init_->send(FrameType::stdin, 7, "again\n");
  auto r = init_->run_until_exit(7);
  EXPECT_NE(r.out.find("after again"), std::string::npos) << r.out;
  ASSERT_TRUE(r.exit);
  EXPECT_EQ(r.exit->code, 4);
  // And there is a new spare for the next time.
  init_->reconnect_through_spare();
  init_->hello();
  auto again = init_->next();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->type, FrameType::hello);
}

TEST_F(ServerTest, AFifoPlantedInTheBoxDoesNotBlockInit) {
  sys::make_dirs(root_ + "/etc");
  ASSERT_EQ(::mkfifo((root_ + "/etc/passwd").c_str(), 0644), 0);
  spawn(1, {"true"}, {{"user", "nobody"}});
  json resp = init_->response(1);  // no user database: "nobody" is unknown, but init answers
  EXPECT_EQ(resp["error"]["code"], "not_found");
  init_->request(2, {{"op", "ping"}});
  EXPECT_TRUE(init_->response(2)["ok"].get<bool>());
}

TEST_F(ServerTest, LargeListingsArePagedWithinTheFrameLimit) {
  sys::make_dirs(root_ + "/many");
  std::string pad(200, 'n');
  for (int i = 0; i < 6000; ++i) sys::write_file(root_ + "/many/" + pad + std::to_string(i), "");
  std::set<std::string> seen;
  std::string after;
  for (int page = 0; page < 100; ++page) {
    json req = {{"op", "list"}, {"path", "/many"}, {"limit", 10000}};
    if (!after.empty()) req["after"] = after;
    init_->request(100 + page, req);
    json resp = init_->response(100 + page);
    ASSERT_TRUE(resp["ok"].get<bool>()) << resp.dump().substr(0, 200);
    for (const auto& e : resp["entries"]) seen.insert(e["name"].get<std::string>());
    if (resp["next"].is_null()) break;
    after = resp["next"].get<std::string>();
  }
  EXPECT_EQ(seen.size(), 6000u);
  init_->request(30, {{"op", "find"}, {"path", "/many"}, {"limit", 100000}});
  json found = init_->response(30);
  ASSERT_TRUE(found["ok"].get<bool>()) << found.dump();
  EXPECT_TRUE(found["truncated"].get<bool>());
  EXPECT_FALSE(init_->eof());
}

TEST_F(ServerTest, ShutdownTermsThenKillsThenExits) {
  // One process ends on SIGTERM, one ignores it and is killed after the grace period.
  spawn(1, {"sleep", "60"});
  spawn(2, {"sh", "-c", "trap '' TERM; echo ready; sleep 60 & wait; sleep 60"});
  ASSERT_TRUE(init_->response(1)["ok"].get<bool>());
  ASSERT_TRUE(init_->response(2)["ok"].get<bool>());
  for (;;) {  // the trap must be set before the shutdown comes
    auto f = init_->next();
    ASSERT_TRUE(f);
    if (f->type == FrameType::stdout && f->stream == 2 && f->payload == "ready\n") break;
  }
  auto started = std::chrono::steady_clock::now();
  init_->request(3, {{"op", "shutdown"}, {"grace_ms", 300}});
  std::map<uint32_t, sys::ExitStatus> exits;
  while (exits.size() < 2) {
    auto f = init_->next();
    ASSERT_TRUE(f) << "init ended before reporting both exits";
    if (f->type == FrameType::exit)
      exits[f->stream] = proto::exit_from_json(json::parse(f->payload));
  }
  EXPECT_EQ(exits[1].signal, SIGTERM);
  EXPECT_EQ(exits[2].signal, SIGKILL);
  EXPECT_GE(std::chrono::steady_clock::now() - started, 300ms);
  int status = 0;
  for (int i = 0; i < 100 && ::waitpid(init_->pid(), &status, WNOHANG) == 0; ++i) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST_F(ServerTest, FilesWriteReadAndStayInTheRoot) {
  std::string content(200000, 'z');
  init_->request(1, {{"op", "write"}, {"path", "/sub/../data.bin"}, {"mode", 0640}});
  for (size_t off = 0; off < content.size(); off += proto::kDataChunk) {
    init_->send(FrameType::data, 1, std::string_view(content).substr(off, proto::kDataChunk));
  }
  init_->send(FrameType::data, 1, "");
  json resp = init_->response(1);
  ASSERT_TRUE(resp["ok"].get<bool>()) << resp.dump();
  EXPECT_EQ(resp["written"], content.size());
  EXPECT_EQ(sys::read_file(root_ + "/data.bin"), content);

  init_->request(2, {{"op", "read"}, {"path", "/data.bin"}});
  std::string got;
  json info;
  for (;;) {
    auto f = init_->next();
    ASSERT_TRUE(f);
    if (f->type == FrameType::response) info = json::parse(f->payload);
    if (f->type == FrameType::window) continue;
    if (f->type != FrameType::data) continue;
    if (f->payload.empty()) break;
    got += f->payload;
    init_->send(FrameType::window, 2,
                proto::encode_window(static_cast<uint32_t>(f->payload.size())));
  }
  EXPECT_EQ(info["size"], content.size());
  EXPECT_EQ(info["mode"], 0640);
  EXPECT_EQ(got, content);

  init_->request(3, {{"op", "read"}, {"path", "/../../../../etc/hostname"}});
  EXPECT_EQ(init_->response(3)["error"]["code"], "not_found");
  // A write that fails to open reports at once and its data is ignored.
  init_->request(4, {{"op", "write"}, {"path", "/no/such/dir/f"}});
  init_->send(FrameType::data, 4, "ignored");
  init_->send(FrameType::data, 4, "");
  EXPECT_EQ(init_->response(4)["error"]["code"], "not_found");
  init_->request(5, {{"op", "stat"}, {"path", "/data.bin"}});
  EXPECT_EQ(init_->response(5)["size"], content.size());
}

}  // namespace
}  // namespace pitbox::init
