// pitbox-init's side of the box protocol: one channel to the node, many processes and file
// transfers multiplexed over it, each stream flow-controlled by window frames.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "init/loop.h"
#include "init/process.h"
#include "proto/frame.h"
#include "sys/fd.h"

namespace pitbox::init {

class Server {
 public:
  struct Options {
    int rootfd = -1;   // where file operations are confined ("/" in a box)
    int devnull = -1;  // /dev/null and the devpts directory, opened at start
    int devpts = -1;
  };

  Server(Loop& loop, sys::UniqueFd channel, Options options);
  void start();
  // A child was reaped (ours or an orphan that ended up with us).
  void child_exited(pid_t pid, const sys::ExitStatus& status);
  // Passes a signal that init received on to every process group it started.
  void forward_signal(int sig);
  // After children were reaped: when shutting down and none is left, init exits.
  void after_reaping();
  // Also where a restarted node finds processes again (see proto::kSpareChannelFd).

 private:
  struct Read {
    sys::UniqueFd fd;
    uint32_t credit = 0;
    uint64_t left = 0;
  };
  struct Write {
    sys::UniqueFd fd;
    uint64_t written = 0;
    bool failed = false;
  };

  void make_spare();
  void on_spare(uint32_t events);
  void say_hello();
  void on_channel(uint32_t events);
  void flush();
  void channel_lost(const std::string& why);
  void send(proto::FrameType type, uint32_t stream, std::string_view payload);
  void send_json(proto::FrameType type, uint32_t stream, const nlohmann::json& body);

  void handle(proto::Frame& frame);
  void handle_request(uint32_t stream, const nlohmann::json& request);
  nlohmann::json run_request(uint32_t stream, const std::string& op, const nlohmann::json& request);
  bool stream_in_use(uint32_t stream) const;

  void spawn(uint32_t stream, const nlohmann::json& request, nlohmann::json& reply);
  void on_process_fd(uint32_t stream, int fd, uint32_t events);
  void read_output(Process& p, bool errors);
  void write_input(Process& p);
  void close_output(Process& p, bool errors);
  void update_interest(Process& p);
  void maybe_finish(Process& p);

  void on_data(uint32_t stream, std::string& bytes);
  bool pump_reads();
  void begin_shutdown(int grace_ms);
  void signal_everyone(int sig);

  Loop& loop_;
  sys::UniqueFd channel_;
  // The spare channel: the node's end at proto::kSpareChannelFd, ours watched for a takeover.
  sys::UniqueFd spare_node_;
  sys::UniqueFd spare_init_;
  Options options_;
  proto::FrameDecoder decoder_;
  std::string out_;
  size_t out_pos_ = 0;
  bool channel_up_ = true;
  bool hello_received_ = false;
  bool throttled_ = false;  // output paused because the node is slow to read
  bool shutting_down_ = false;
  sys::UniqueFd shutdown_timer_;
  std::map<uint32_t, std::unique_ptr<Process>> processes_;
  std::map<pid_t, uint32_t> pids_;
  std::map<uint32_t, Read> reads_;
  std::map<uint32_t, Write> writes_;
};

}  // namespace pitbox::init
