// A client of the pitbox API for the CLI: JSON calls, streamed downloads and uploads, and the
// terminal WebSocket, over one keep-alive connection. Synchronous: the CLI does one thing at
// a time.
#pragma once

// clang-format off
#include <utility>  // before Boost 1.74's asio, whose awaitable.hpp uses std::exchange without it
// clang-format on

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "sys/error.h"

namespace pitbox::client {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using nlohmann::json;

struct Config {
  std::string url = "http://127.0.0.1:7070";
  std::string key;
};

// PITBOX_API_URL and PITBOX_API_KEY, else the local daemon and the admin key it wrote under
// `state_dir` (when this user can read it).
Config config_from_env(const std::string& state_dir);

// An answer of the API that is an error: its HTTP status and the error of its body.
class ApiError : public Error {
 public:
  ApiError(int status, Error e) : Error(std::move(e)), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

// Escapes a query parameter's value.
std::string query_escape(std::string_view text);

class Client {
 public:
  explicit Client(Config config);
  ~Client();

  const Config& config() const { return config_; }

  // A call with an optional JSON body; the JSON answer (null for 204). Throws ApiError.
  json call(http::verb method, const std::string& target, const std::optional<json>& body = {});

  // A call whose answer is read as it comes: `on_data` gets each piece. Returns the answer's
  // headers. Throws ApiError for error answers.
  http::fields stream(http::verb method, const std::string& target, const std::optional<json>& body,
                      const std::function<void(std::string_view)>& on_data);

  // Uploads what `source` gives (it fills the buffer, returns 0 at the end); the JSON answer.
  json upload(http::verb method, const std::string& target, const std::string& content_type,
              const std::function<size_t(char*, size_t)>& source);

  // The terminal WebSocket: sends what `input` reads (it blocks; returns false at the end),
  // writes output to `output`. `resize` is polled before each input read for new sizes.
  // Returns the exit JSON the server sent.
  struct TerminalIo {
    int input_fd = 0;
    std::function<void(std::string_view)> output;
    // Called often; returns a new size when the terminal changed.
    std::function<std::optional<std::pair<uint16_t, uint16_t>>()> resized;
  };
  json terminal(const std::string& target, const TerminalIo& io);

  // Listens on `address`:`port` (0: any free port; `on_listening` gets the one taken) and relays
  // each connection to it through its own WebSocket at `target` (GET .../ports/{port}/forward).
  // Runs until the process ends; `on_error` hears of connections the daemon refused.
  void port_forward(const std::string& target, const std::string& address, uint16_t port,
                    const std::function<void(uint16_t)>& on_listening,
                    const std::function<void(const std::string&)>& on_error);

 private:
  void connect();
  void prepare(http::request<http::empty_body>& req);
  http::request<http::string_body> json_request(http::verb method, const std::string& target,
                                                const std::optional<json>& body);
  [[noreturn]] void fail_with(int status, const std::string& body);

  Config config_;
  std::string host_, port_;
  asio::io_context io_;
  std::unique_ptr<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
};

}  // namespace pitbox::client
