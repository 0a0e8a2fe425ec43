// One HTTP exchange as the handlers see it: the request (head read, body on demand, streamed or
// whole), and the ways to answer (JSON, empty, an error, or a chunked stream).
#pragma once

// clang-format off
#include <utility>  // before Boost 1.74's asio, whose awaitable.hpp uses std::exchange without it
// clang-format on

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "control/store.h"
#include "sys/error.h"

namespace pitbox::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using nlohmann::json;

// JSON bodies larger than this are refused (413); file and tar uploads are streamed instead.
constexpr size_t kMaxJsonBody = 16u << 20;

int status_of(ErrorCode code);
// An error answered with a status of its own (405, 413, ...) rather than its code's.
Error http_error(int status, ErrorCode code, std::string message);
int http_status_of(const Error& e);

struct Request {
  Request(beast::tcp_stream& s, beast::flat_buffer& b, http::request_parser<http::empty_body>& p)
      : stream(s), buffer(b), head_parser(p), head(p.get()) {}

  beast::tcp_stream& stream;
  beast::flat_buffer& buffer;
  http::request_parser<http::empty_body>& head_parser;  // moved from once the body is read
  http::request<http::empty_body> head;                 // a copy that stays valid

  http::verb method() const { return head.method(); }
  std::string path;
  std::map<std::string, std::vector<std::string>> query;
  std::map<std::string, std::string> params;  // from the route: {"id": ...}
  std::string route;                          // the route's pattern, "/v1/sandboxes/{id}"
  std::optional<control::KeyRecord> key;
  std::string target;          // what the call acted on, for the audit log
  int status = 0;              // what was answered, for the log, metrics and audit
  std::string error_code;      // "" on success
  bool body_read = false;      // reading the body began
  bool body_complete = false;  // ... and reached its end: the connection can carry on
  bool headers_sent = false;   // a stream began: errors can no longer be answered
  bool close = false;          // the connection ends after this exchange

  // The value of query parameter `name`, or `fallback`.
  std::string query_value(const std::string& name, const std::string& fallback = "") const;
  bool query_flag(const std::string& name) const;
  // An integer query parameter, within [min, max], or `fallback`.
  int64_t query_int(const std::string& name, int64_t fallback, int64_t min, int64_t max) const;

  // The whole body (at most `limit` bytes, else invalid_argument with 413).
  asio::awaitable<std::string> read_body(size_t limit = kMaxJsonBody);
  // The body as JSON ({} when empty).
  asio::awaitable<json> read_json();
  // The body in pieces as it arrives: `sink` is called for each; unlimited in size.
  asio::awaitable<uint64_t> read_body_stream(
      std::function<asio::awaitable<void>(std::string_view)> sink);
  // Before answering: drops a small unread body so that the connection can carry on, or marks
  // the connection for closing when the body is large or was left half-read.
  asio::awaitable<void> finish_body();
};

asio::awaitable<void> send_json(Request& r, int status, const json& body);
asio::awaitable<void> send_empty(Request& r, int status);
asio::awaitable<void> send_error(Request& r, const Error& e);

// An answer sent as it is made: chunked transfer encoding.
class ChunkedResponse {
 public:
  ChunkedResponse(Request& r, int status, std::string content_type,
                  std::vector<std::pair<std::string, std::string>> headers = {});
  asio::awaitable<void> begin();
  asio::awaitable<void> write(std::string_view data);
  asio::awaitable<void> finish();

 private:
  Request& r_;
  int status_;
  std::string content_type_;
  std::vector<std::pair<std::string, std::string>> headers_;
  bool begun_ = false;
};

// Sets the headers every answer has (server, keep-alive).
template <typename Body>
void common_headers(http::response<Body>& res, const Request& r) {
  res.set(http::field::server, std::string("pitbox/") + PITBOX_VERSION);
  res.keep_alive(r.head.keep_alive() && !r.close);
}

// Resolves once the client has closed its side of the connection (or reset it) while an
// answer streams, or never when the client stays or sends more. cancel() ends the watch.
class HangupWatch {
 public:
  explicit HangupWatch(Request& r);
  ~HangupWatch() { cancel(); }
  // Calls `on_hangup` (on the connection's executor) if the client goes.
  void start(std::function<void()> on_hangup);
  void cancel();

 private:
  Request& r_;
  std::shared_ptr<bool> active_ = std::make_shared<bool>(false);
};

// A JSON error body: {"error": {"code", "message", "details"}}.
json error_body(const Error& e);

// What follows "Bearer " (any case) in the Authorization header; none without such a header.
std::optional<std::string_view> bearer_token(const http::request<http::empty_body>& head);

}  // namespace pitbox::api
