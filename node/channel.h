// The node's side of the box protocol: one channel per box, many processes over it, every
// output stream flow-controlled so that a slow reader holds back only its own process.
// Everything runs on one executor (one thread, or a strand).
#pragma once

// clang-format off
#include <utility>  // before Boost 1.74's asio, whose awaitable.hpp uses std::exchange without it
// clang-format on

#include <boost/asio.hpp>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

#include "proto/frame.h"
#include "proto/messages.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/process.h"

namespace pitbox::node {

namespace asio = boost::asio;

// Wakes every coroutine waiting on it; they re-check their condition.
class Notifier {
 public:
  explicit Notifier(const asio::any_io_executor& ex)
      : timer_(ex, asio::steady_timer::time_point::max()) {}
  asio::awaitable<void> wait();
  void notify() { timer_.cancel(); }

 private:
  asio::steady_timer timer_;
};

struct ProcessEvent {
  enum class Kind { stdout, stderr, exit };
  Kind kind;
  std::string data;
  sys::ExitStatus status;
};

class Channel;

// A process started through a channel.
class Process {
 public:
  Process(std::shared_ptr<Channel> channel, uint32_t stream);
  uint32_t stream() const { return stream_; }
  int pid() const { return pid_; }

  // The next chunk of output (granting init room for more), or the exit, which comes last
  // (and again on every later call).
  asio::awaitable<ProcessEvent> next();
  // Waits for window from init when needed.
  asio::awaitable<void> write_stdin(std::string_view data);
  void close_stdin();
  asio::awaitable<void> signal(int sig, bool group = true);
  asio::awaitable<void> resize(uint16_t rows, uint16_t cols);

 private:
  friend class Channel;
  std::shared_ptr<Channel> channel_;
  uint32_t stream_;
  int pid_ = 0;
  uint32_t stdin_credit_ = 0;
  // Output init may still send before we grant more; more than this is a protocol breach.
  uint32_t output_allowed_ = 0;
  bool exited_ = false;
  sys::ExitStatus exit_status_;
  std::deque<ProcessEvent> events_;
  Notifier changed_;
};

// A file being read from the box, in chunks.
class FileReader {
 public:
  FileReader(std::shared_ptr<Channel> channel, uint32_t stream, uint32_t window);
  ~FileReader();
  const proto::FileInfo& info() const { return info_; }
  // The next chunk (granting init room for more), or nullopt at the end of the file.
  asio::awaitable<std::optional<std::string>> next();

 private:
  friend class Channel;
  std::shared_ptr<Channel> channel_;
  uint32_t stream_;
  proto::FileInfo info_;
  uint32_t allowed_;  // bytes init may still send
  std::deque<std::string> chunks_;
  bool ended_ = false;
  Notifier changed_;
};

// A file being written into the box.
class FileWriter {
 public:
  FileWriter(std::shared_ptr<Channel> channel, uint32_t stream);
  ~FileWriter();
  // Waits for window from init when needed; throws init's error if the write failed.
  asio::awaitable<void> write(std::string_view data);
  // Ends the file; returns the bytes written, or throws init's error.
  asio::awaitable<uint64_t> finish();

 private:
  friend class Channel;
  void end();  // the end marker, once: init forgets the stream only after it
  std::shared_ptr<Channel> channel_;
  uint32_t stream_;
  uint32_t credit_;
  bool ended_ = false;
  Notifier changed_;
};

class Channel : public std::enable_shared_from_this<Channel> {
 public:
  Channel(const asio::any_io_executor& ex, sys::UniqueFd fd);
  ~Channel();

  // Starts reading and says hello. Requests may follow at once: init reads them after the hello,
  // and if its own hello turns out incompatible the channel fails.
  void start();
  // start(), then waits for init's hello.
  asio::awaitable<proto::Hello> handshake();
  // A request with a JSON result; throws the Error init answered with.
  asio::awaitable<nlohmann::json> call(nlohmann::json request);
  asio::awaitable<std::shared_ptr<Process>> spawn(proto::SpawnRequest request);
  // A process that init already runs (listed in its hello after a reattach): its output flows
  // again from here on.
  std::shared_ptr<Process> adopt(const proto::ProcessInfo& info,
                                 uint32_t window = proto::kDefaultWindow);
  asio::awaitable<std::shared_ptr<FileReader>> read_file(const std::string& path,
                                                         uint64_t offset = 0, int64_t length = -1);
  asio::awaitable<std::shared_ptr<FileWriter>> write_file(const std::string& path,
                                                          std::optional<uint32_t> mode,
                                                          bool append = false);
  // Asks init to end every process (SIGKILL after `grace`) and then itself.
  asio::awaitable<void> shutdown(std::chrono::milliseconds grace);
  const std::optional<proto::Hello>& hello() const { return hello_; }
  void close();
  const std::optional<Error>& error() const { return error_; }

 private:
  friend class Process;
  friend class FileReader;
  friend class FileWriter;
  uint32_t next_stream();
  void send(proto::FrameType type, uint32_t stream, std::string_view payload);
  void start_write();
  asio::awaitable<void> read_loop();
  void dispatch(proto::Frame& frame);
  void fail(const Error& e);
  asio::awaitable<nlohmann::json> response(uint32_t stream);
  void check_open() const;

  asio::any_io_executor ex_;
  asio::posix::stream_descriptor socket_;
  proto::FrameDecoder decoder_;
  std::string outbox_, inflight_;
  bool writing_ = false;
  bool reading_ = false;
  std::optional<proto::Hello> hello_;
  std::map<uint32_t, nlohmann::json> responses_;
  std::set<uint32_t> pending_;  // requests sent and not answered: the only responses accepted
  std::map<uint32_t, std::weak_ptr<Process>> processes_;
  std::map<uint32_t, std::weak_ptr<FileReader>> readers_;
  std::map<uint32_t, std::weak_ptr<FileWriter>> writers_;
  std::optional<Error> error_;
  Notifier changed_;
  uint32_t last_stream_ = 0;
};

}  // namespace pitbox::node
