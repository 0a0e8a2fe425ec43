#include "api/http.h"

#include <sys/socket.h>

#include <boost/asio/redirect_error.hpp>
#include <cerrno>
#include <charconv>
#include <limits>

namespace pitbox::api {

int status_of(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument:
      return 400;
    case ErrorCode::unauthenticated:
      return 401;
    case ErrorCode::permission_denied:
      return 403;
    case ErrorCode::not_found:
      return 404;
    case ErrorCode::conflict:
      return 409;
    case ErrorCode::resource_exhausted:
      return 429;
    case ErrorCode::unavailable:
      return 503;
    case ErrorCode::internal:
      return 500;
  }
  return 500;
}

std::string Request::query_value(const std::string& name, const std::string& fallback) const {
  auto it = query.find(name);
  return it == query.end() || it->second.empty() ? fallback : it->second.back();
}

bool Request::query_flag(const std::string& name) const {
  std::string v = query_value(name);
  if (v.empty() || v == "false" || v == "0") return false;
  if (v == "true" || v == "1") return true;
  throw invalid_argument("query parameter \"" + name + "\" must be true or false",
                         {{"field", name}});
}

int64_t Request::query_int(const std::string& name, int64_t fallback, int64_t min,
                           int64_t max) const {
  std::string v = query_value(name);
  if (v.empty()) return fallback;
  int64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size() || n < min || n > max) {
    throw invalid_argument("query parameter \"" + name + "\" must be a whole number from " +
                               std::to_string(min) + " to " + std::to_string(max),
                           {{"field", name}});
  }
  return n;
}

Error http_error(int status, ErrorCode code, std::string message) {
  return Error(code, std::move(message), {{"http_status", status}});
}

asio::awaitable<std::string> Request::read_body(size_t limit) {
  std::string body;
  co_await read_body_stream([&](std::string_view piece) -> asio::awaitable<void> {
    if (body.size() + piece.size() > limit) {
      throw http_error(413, ErrorCode::invalid_argument,
                       "the request body is larger than " + std::to_string(limit) + " bytes");
    }
    body.append(piece);
    co_return;
  });
  co_return body;
}

asio::awaitable<json> Request::read_json() {
  std::string body = co_await read_body();
  if (body.empty()) co_return json::object();
  try {
    co_return json::parse(body);
  } catch (const json::parse_error& e) {
    throw invalid_argument(std::string("the request body is not valid JSON: ") + e.what());
  }
}

asio::awaitable<uint64_t> Request::read_body_stream(
    std::function<asio::awaitable<void>(std::string_view)> sink) {
  if (body_read) throw internal_error("the request body was read twice");
  body_read = true;
  if (head_parser.is_done()) {
    body_complete = true;
    co_return 0;
  }
  if (beast::iequals(head[http::field::expect], "100-continue")) {
    http::response<http::empty_body> go{http::status::continue_, head.version()};
    co_await http::async_write(stream, go, asio::use_awaitable);
  }
  http::request_parser<http::buffer_body> parser(std::move(head_parser));
  // Not boost::none: Boost 1.74 takes any length as over an empty limit.
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  uint64_t total = 0;
  std::vector<char> buf(64 * 1024);
  while (!parser.is_done()) {
    parser.get().body().data = buf.data();
    parser.get().body().size = buf.size();
    boost::system::error_code ec;
    co_await http::async_read(stream, buffer, parser,
                              asio::redirect_error(asio::use_awaitable, ec));
    if (ec && ec != http::error::need_buffer) {
      close = true;
      throw invalid_argument("reading the request body: " + ec.message());
    }
    size_t n = buf.size() - parser.get().body().size;
    if (n) {
      total += n;
      co_await sink(std::string_view(buf.data(), n));
    }
  }
  body_complete = true;
  co_return total;
}

asio::awaitable<void> Request::finish_body() {
  if (body_complete) co_return;
  if (!body_read) {
    if (head_parser.is_done()) {
      body_complete = true;
      co_return;
    }
    // A small body is read and dropped; a large one (or one of unknown length) is not worth it.
    auto length = head_parser.content_length();
    if (length && *length <= (1u << 20) &&
        !beast::iequals(head[http::field::expect], "100-continue")) {
      try {
        co_await read_body_stream([](std::string_view) -> asio::awaitable<void> { co_return; });
      } catch (const Error&) {
        close = true;
      }
      if (body_complete) co_return;
    }
  }
  close = true;
}

asio::awaitable<void> send_json(Request& r, int status, const json& body) {
  co_await r.finish_body();
  http::response<http::string_body> res{static_cast<http::status>(status), r.head.version()};
  common_headers(res, r);
  res.set(http::field::content_type, "application/json");
  res.body() = body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  res.prepare_payload();
  r.status = status;
  r.headers_sent = true;
  co_await http::async_write(r.stream, res, asio::use_awaitable);
}

asio::awaitable<void> send_empty(Request& r, int status) {
  co_await r.finish_body();
  http::response<http::empty_body> res{static_cast<http::status>(status), r.head.version()};
  common_headers(res, r);
  res.prepare_payload();
  r.status = status;
  r.headers_sent = true;
  co_await http::async_write(r.stream, res, asio::use_awaitable);
}

int http_status_of(const Error& e) {
  if (e.details().is_object()) {
    int s = e.details().value("http_status", 0);
    if (s >= 400 && s < 600) return s;
  }
  return status_of(e.code());
}

json error_body(const Error& e) {
  json details = e.details();
  if (details.is_object()) {
    details.erase("http_status");
    if (details.empty()) details = nullptr;
  }
  return {
      {"error", {{"code", to_string(e.code())}, {"message", e.message()}, {"details", details}}}};
}

asio::awaitable<void> send_error(Request& r, const Error& e) {
  r.error_code = std::string(to_string(e.code()));
  co_await send_json(r, http_status_of(e), error_body(e));
}

ChunkedResponse::ChunkedResponse(Request& r, int status, std::string content_type,
                                 std::vector<std::pair<std::string, std::string>> headers)
    : r_(r),
      status_(status),
      content_type_(std::move(content_type)),
      headers_(std::move(headers)) {}

asio::awaitable<void> ChunkedResponse::begin() {
  if (begun_) co_return;
  begun_ = true;
  co_await r_.finish_body();
  http::response<http::empty_body> res{static_cast<http::status>(status_), r_.head.version()};
  common_headers(res, r_);
  res.set(http::field::content_type, content_type_);
  for (const auto& [k, v] : headers_) res.set(k, v);
  res.chunked(true);
  r_.status = status_;
  r_.headers_sent = true;
  http::response_serializer<http::empty_body> sr{res};
  co_await http::async_write_header(r_.stream, sr, asio::use_awaitable);
}

asio::awaitable<void> ChunkedResponse::write(std::string_view data) {
  co_await begin();
  if (data.empty()) co_return;
  co_await asio::async_write(r_.stream, http::make_chunk(asio::buffer(data.data(), data.size())),
                             asio::use_awaitable);
}

asio::awaitable<void> ChunkedResponse::finish() {
  co_await begin();
  co_await asio::async_write(r_.stream, http::make_chunk_last(), asio::use_awaitable);
}

HangupWatch::HangupWatch(Request& r) : r_(r) {}

void HangupWatch::start(std::function<void()> on_hangup) {
  *active_ = true;
  auto& socket = r_.stream.socket();
  socket.async_wait(asio::ip::tcp::socket::wait_read,
                    [active = active_, &socket, on_hangup](boost::system::error_code ec) {
                      if (ec || !*active) return;
                      *active = false;
                      char byte;
                      ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
                      // Data means a pipelined request: the client is still there.
                      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) on_hangup();
                    });
}

void HangupWatch::cancel() {
  if (!*active_) return;
  *active_ = false;
  boost::system::error_code ec;
  r_.stream.socket().cancel(ec);
}

std::optional<std::string_view> bearer_token(const http::request<http::empty_body>& head) {
  auto header = head[http::field::authorization];
  std::string_view value(header.data(), header.size());
  constexpr std::string_view kBearer = "bearer ";
  if (value.size() <= kBearer.size() ||
      !beast::iequals(beast::string_view(value.data(), kBearer.size()),
                      beast::string_view(kBearer.data(), kBearer.size()))) {
    return std::nullopt;
  }
  value.remove_prefix(kBearer.size());
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  return value;
}

}  // namespace pitbox::api
