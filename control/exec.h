// Running commands in a sandbox: the request (argv or a shell line, env, cwd, user, stdin,
// timeout, output cap), and running it to completion with its output collected.
#pragma once

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "control/sandbox.h"
#include "node/channel.h"

namespace pitbox::control {

namespace asio = boost::asio;

struct ExecRequest {
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;
  std::string cwd;   // "" = the sandbox's workdir
  std::string user;  // "" = the sandbox's user
  std::optional<std::string> stdin_data;
  std::optional<int64_t> timeout_ms;
  size_t max_output = 1 << 20;  // bytes kept of each of stdout and stderr
  bool tty = false;
};

// `{"cmd": [...]}` or `{"shell": "..."}` with env, cwd, user, stdin or stdin_base64,
// timeout_ms, max_output (and tty where `allow_tty`). Names the field at fault.
ExecRequest parse_exec(const nlohmann::json& body, bool allow_tty);
// The spawn request for `sandbox`: its env under the request's, its workdir and user unless the
// request says otherwise.
proto::SpawnRequest spawn_request(const ExecRequest& request, const Sandbox& sandbox);

struct ExecResult {
  sys::ExitStatus status;
  std::string out, err;
  bool truncated = false;
  bool timed_out = false;
  int64_t duration_ms = 0;

  // {"exit_code", "signal", "stdout", "stderr", "duration_ms", "truncated", "timed_out",
  //  "encoding"}: base64 when either output is not UTF-8.
  nlohmann::json to_json() const;
};

// What runs beside a process started for a request: its stdin fed from the request, and its
// timeout, which kills its process group. Ends the timeout when it goes.
class ExecWatch {
 public:
  ExecWatch(const asio::any_io_executor& executor, std::shared_ptr<node::Process> process,
            const ExecRequest& request);
  ~ExecWatch();
  ExecWatch(const ExecWatch&) = delete;
  ExecWatch& operator=(const ExecWatch&) = delete;
  bool timed_out() const { return *timed_out_; }

 private:
  std::shared_ptr<asio::steady_timer> timer_;
  std::shared_ptr<bool> timed_out_ = std::make_shared<bool>(false);
};

// Spawns and waits for the process, keeping at most max_output bytes of each stream and killing
// its process group when the timeout passes.
asio::awaitable<ExecResult> run_to_completion(node::Channel& channel, proto::SpawnRequest spawn,
                                              const ExecRequest& request);

// Text for JSON: the bytes themselves when they are UTF-8, else base64 under a "_base64" key.
void put_output(nlohmann::json& j, const std::string& key, const std::string& data);

}  // namespace pitbox::control
