// Background commands ("sessions") of the sandboxes: started, watched and talked to through
// the API while they run. The daemon keeps the last 8 MiB of each one's output.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "node/channel.h"

namespace pitbox::control {

namespace asio = boost::asio;

class Sessions {
 public:
  explicit Sessions(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  // Follows `process` as a session of `box` (a new one when `id` is ""); returns the session.
  nlohmann::json add(const std::string& box, std::shared_ptr<node::Process> process,
                     std::vector<std::string> command, bool tty, std::string id = "",
                     int64_t started_at = 0);
  nlohmann::json get(const std::string& box, const std::string& id) const;
  nlohmann::json list(const std::string& box, size_t limit, const std::string& cursor) const;

  struct Output {
    std::string data;
    uint64_t next_offset = 0;
    bool ended = false;  // the session has exited and `data` reaches its end
  };
  // Output from byte `offset` (bytes before what is kept start at the oldest kept byte).
  Output output(const std::string& box, const std::string& id, uint64_t offset) const;
  // Waits until output past `offset` exists or the session ends.
  asio::awaitable<void> wait_output(const std::string& box, const std::string& id, uint64_t offset);

  asio::awaitable<void> input(const std::string& box, const std::string& id, std::string data,
                              bool eof);
  asio::awaitable<void> signal(const std::string& box, const std::string& id, int sig);
  // Kills the session if it runs and forgets it.
  void remove(const std::string& box, const std::string& id);
  // The box stopped or went: its sessions go with it.
  void forget_box(const std::string& box);

  static constexpr size_t kKeptOutput = 8u << 20;

 private:
  struct Session {
    std::string id;
    std::vector<std::string> command;
    bool tty = false;
    std::shared_ptr<node::Process> process;
    bool exited = false;
    sys::ExitStatus status;
    int64_t started_at = 0, ended_at = 0;
    std::string log;         // the last kKeptOutput bytes
    uint64_t log_start = 0;  // the offset of log[0] in all output
    std::unique_ptr<node::Notifier> changed;
  };
  Session& find(const std::string& box, const std::string& id);
  const Session& find(const std::string& box, const std::string& id) const;
  static nlohmann::json to_api(const Session& s);
  asio::awaitable<void> pump(std::string box, std::string id);

  asio::any_io_executor executor_;
  std::map<std::string, std::map<std::string, std::shared_ptr<Session>>> boxes_;
};

}  // namespace pitbox::control
