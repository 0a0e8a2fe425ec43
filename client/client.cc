#include "client/client.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/redirect_error.hpp>
#include <boost/beast/websocket.hpp>
#include <cstdlib>
#include <limits>

#include "sys/fs.h"

namespace pitbox::client {

namespace websocket = beast::websocket;

Config config_from_env(const std::string& state_dir) {
  Config c;
  if (const char* url = std::getenv("PITBOX_API_URL"); url && *url) c.url = url;
  if (const char* key = std::getenv("PITBOX_API_KEY"); key && *key) {
    c.key = key;
  } else {
    std::string path = state_dir + "/keys/admin.key";
    if (::access(path.c_str(), R_OK) == 0) {
      c.key = sys::read_file(path);
      while (!c.key.empty() && (c.key.back() == '\n' || c.key.back() == ' ')) c.key.pop_back();
    }
  }
  while (!c.url.empty() && c.url.back() == '/') c.url.pop_back();
  return c;
}

std::string query_escape(std::string_view text) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

Client::Client(Config config) : config_(std::move(config)) {
  std::string rest = config_.url;
  if (rest.rfind("http://", 0) == 0) {
    rest = rest.substr(7);
  } else if (rest.find("://") != std::string::npos) {
    throw invalid_argument("the API URL \"" + config_.url +
                           "\" must start with http:// (put TLS in front of pitbox with a proxy)");
  }
  rest = rest.substr(0, rest.find('/'));
  size_t colon = rest.rfind(':');
  size_t bracket = rest.find(']');
  if (colon != std::string::npos && (bracket == std::string::npos || colon > bracket)) {
    host_ = rest.substr(0, colon);
    port_ = rest.substr(colon + 1);
  } else {
    host_ = rest;
    port_ = "80";
  }
  if (host_.size() > 2 && host_.front() == '[') host_ = host_.substr(1, host_.size() - 2);
  if (host_.empty()) throw invalid_argument("the API URL \"" + config_.url + "\" has no host");
}

Client::~Client() = default;

void Client::connect() {
  if (stream_ && stream_->socket().is_open()) return;
  asio::ip::tcp::resolver resolver(io_);
  boost::system::error_code ec;
  auto results = resolver.resolve(host_, port_, ec);
  if (ec) {
    throw Error(ErrorCode::unavailable, "cannot resolve " + host_ + ": " + ec.message());
  }
  stream_ = std::make_unique<beast::tcp_stream>(io_);
  stream_->connect(results, ec);
  if (ec) {
    stream_.reset();
    throw Error(ErrorCode::unavailable, "cannot reach the pitbox daemon at " + config_.url + " (" +
                                            ec.message() + "); is `pitbox serve` running?");
  }
  stream_->socket().set_option(asio::ip::tcp::no_delay(true));
  buffer_.clear();
}

void Client::prepare(http::request<http::empty_body>& req) {
  req.set(http::field::host, host_);
  req.set(http::field::user_agent, std::string("pitbox-cli/") + PITBOX_VERSION);
  if (!config_.key.empty()) req.set(http::field::authorization, "Bearer " + config_.key);
  req.keep_alive(true);
}

http::request<http::string_body> Client::json_request(http::verb method, const std::string& target,
                                                      const std::optional<json>& body) {
  http::request<http::empty_body> head{method, target, 11};
  prepare(head);
  http::request<http::string_body> req{head.base()};
  if (body) {
    req.set(http::field::content_type, "application/json");
    req.body() = body->dump();
  }
  req.prepare_payload();
  return req;
}

void Client::fail_with(int status, const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object()) {
    const json& e = j["error"];
    auto code = error_code_from_string(e.value("code", "internal"));
    throw ApiError(status, Error(code.value_or(ErrorCode::internal), e.value("message", body),
                                 e.value("details", json())));
  }
  throw ApiError(status, Error(ErrorCode::internal,
                               "the daemon answered " + std::to_string(status) + ": " + body));
}

json Client::call(http::verb method, const std::string& target, const std::optional<json>& body) {
  for (int attempt = 0;; ++attempt) {
    bool reused = stream_ != nullptr;
    connect();
    auto req = json_request(method, target, body);
    boost::system::error_code ec;
    http::write(*stream_, req, ec);
    http::response_parser<http::string_body> parser;
    parser.body_limit(256u << 20);
    if (!ec) http::read(*stream_, buffer_, parser, ec);
    if (ec) {
      stream_.reset();
      // A kept-alive connection the daemon closed meanwhile: once more on a new one.
      if (reused && attempt == 0) continue;
      throw Error(ErrorCode::unavailable,
                  "talking to the daemon at " + config_.url + ": " + ec.message());
    }
    auto res = parser.release();
    if (!res.keep_alive()) stream_.reset();
    int status = res.result_int();
    if (status >= 400) fail_with(status, res.body());
    if (res.body().empty()) return nullptr;
    json j = json::parse(res.body(), nullptr, false);
    if (j.is_discarded()) {
      throw Error(ErrorCode::internal, "the daemon's answer is not JSON: " + res.body());
    }
    return j;
  }
}

http::fields Client::stream(http::verb method, const std::string& target,
                            const std::optional<json>& body,
                            const std::function<void(std::string_view)>& on_data) {
  connect();
  auto req = json_request(method, target, body);
  boost::system::error_code ec;
  http::write(*stream_, req, ec);
  http::response_parser<http::buffer_body> parser;
  // Not boost::none: Boost 1.74 takes any length as over an empty limit.
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  if (!ec) http::read_header(*stream_, buffer_, parser, ec);
  if (ec) {
    stream_.reset();
    throw Error(ErrorCode::unavailable,
                "talking to the daemon at " + config_.url + ": " + ec.message());
  }
  int status = parser.get().result_int();
  http::fields headers = parser.get().base();
  std::string error_text;
  std::vector<char> buf(64 * 1024);
  while (!parser.is_done()) {
    parser.get().body().data = buf.data();
    parser.get().body().size = buf.size();
    http::read_some(*stream_, buffer_, parser, ec);  // each piece as it comes (logs)
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      stream_.reset();
      throw Error(ErrorCode::unavailable, "the daemon's answer broke off: " + ec.message());
    }
    size_t n = buf.size() - parser.get().body().size;
    if (status >= 400) {
      error_text.append(buf.data(), n);
    } else if (n) {
      on_data(std::string_view(buf.data(), n));
    }
  }
  if (!parser.get().keep_alive()) stream_.reset();
  if (status >= 400) fail_with(status, error_text);
  return headers;
}

json Client::upload(http::verb method, const std::string& target, const std::string& content_type,
                    const std::function<size_t(char*, size_t)>& source) {
  connect();
  http::request<http::empty_body> req{method, target, 11};
  prepare(req);
  req.set(http::field::content_type, content_type);
  req.chunked(true);
  boost::system::error_code ec;
  http::request_serializer<http::empty_body> sr{req};
  http::write_header(*stream_, sr, ec);
  std::vector<char> buf(256 * 1024);
  while (!ec) {
    size_t n = source(buf.data(), buf.size());
    if (n == 0) break;
    asio::write(*stream_, http::make_chunk(asio::buffer(buf.data(), n)), ec);
  }
  if (!ec) asio::write(*stream_, http::make_chunk_last(), ec);
  // The daemon may answer early (an error) and close: its answer is what matters.
  http::response_parser<http::string_body> parser;
  boost::system::error_code read_ec;
  http::read(*stream_, buffer_, parser, read_ec);
  if (read_ec) {
    stream_.reset();
    throw Error(ErrorCode::unavailable,
                "uploading to the daemon: " + (ec ? ec.message() : read_ec.message()));
  }
  auto res = parser.release();
  stream_.reset();  // after a streamed upload, start afresh
  if (res.result_int() >= 400) fail_with(res.result_int(), res.body());
  return res.body().empty() ? json(nullptr) : json::parse(res.body(), nullptr, false);
}

json Client::terminal(const std::string& target, const TerminalIo& tio) {
  // Its own event loop: whatever is left pending in it when the terminal ends goes with it.
  asio::io_context io;
  asio::ip::tcp::resolver resolver(io);
  boost::system::error_code ec;
  auto results = resolver.resolve(host_, port_, ec);
  if (ec) throw Error(ErrorCode::unavailable, "cannot resolve " + host_ + ": " + ec.message());
  websocket::stream<beast::tcp_stream> ws(io);
  beast::get_lowest_layer(ws).connect(results, ec);
  if (ec) {
    throw Error(ErrorCode::unavailable,
                "cannot reach the pitbox daemon at " + config_.url + ": " + ec.message());
  }
  ws.set_option(websocket::stream_base::decorator([this](websocket::request_type& req) {
    req.set(http::field::user_agent, std::string("pitbox-cli/") + PITBOX_VERSION);
    if (!config_.key.empty()) req.set(http::field::authorization, "Bearer " + config_.key);
  }));
  websocket::response_type res;
  ws.handshake(res, host_, target, ec);
  if (ec) {
    if (res.result_int() >= 400) fail_with(res.result_int(), res.body());
    throw Error(ErrorCode::unavailable, "opening the terminal: " + ec.message());
  }
  json exit = nullptr;
  // The descriptor shares its file status flags with the terminal: restored afterwards.
  int saved_flags = ::fcntl(tio.input_fd, F_GETFL);
  asio::posix::stream_descriptor input(io, ::dup(tio.input_fd));
  bool done = false;
  bool writing = false;  // one write at a time on a WebSocket
  auto send = [&](bool text, std::string data) -> asio::awaitable<void> {
    asio::steady_timer wait(io);
    while (writing) {
      wait.expires_after(std::chrono::milliseconds(2));
      co_await wait.async_wait(asio::use_awaitable);
    }
    writing = true;
    boost::system::error_code wec;
    ws.text(text);
    co_await ws.async_write(asio::buffer(data), asio::redirect_error(asio::use_awaitable, wec));
    writing = false;
  };
  auto reader = [&]() -> asio::awaitable<void> {
    beast::flat_buffer buf;
    for (;;) {
      boost::system::error_code rec;
      co_await ws.async_read(buf, asio::redirect_error(asio::use_awaitable, rec));
      if (rec) break;
      std::string data = beast::buffers_to_string(buf.data());
      buf.consume(buf.size());
      if (ws.got_binary()) {
        tio.output(data);
      } else {
        json m = json::parse(data, nullptr, false);
        if (m.is_object() && m.value("type", "") == "exit") exit = m;
      }
    }
    done = true;
  };
  auto writer = [&]() -> asio::awaitable<void> {
    char buf[4096];
    for (;;) {
      boost::system::error_code wec;
      size_t n = co_await input.async_read_some(asio::buffer(buf),
                                                asio::redirect_error(asio::use_awaitable, wec));
      if (wec || n == 0 || done) break;
      co_await send(false, std::string(buf, n));
    }
  };
  auto resizer = [&]() -> asio::awaitable<void> {
    asio::steady_timer timer(io);
    while (!done && tio.resized) {
      if (auto size = tio.resized()) {
        std::string m =
            json{{"type", "resize"}, {"rows", size->first}, {"cols", size->second}}.dump();
        co_await send(true, m);
      }
      timer.expires_after(std::chrono::milliseconds(200));
      co_await timer.async_wait(asio::use_awaitable);
    }
  };
  asio::co_spawn(io, reader(), [&](std::exception_ptr) { io.stop(); });
  asio::co_spawn(io, writer(), asio::detached);
  asio::co_spawn(io, resizer(), asio::detached);
  io.run();
  if (saved_flags >= 0) ::fcntl(tio.input_fd, F_SETFL, saved_flags);
  return exit;
}

void Client::port_forward(const std::string& target, const std::string& address, uint16_t port,
                          const std::function<void(uint16_t)>& on_listening,
                          const std::function<void(const std::string&)>& on_error) {
  using tcp = asio::ip::tcp;
  asio::io_context io;
  boost::system::error_code ec;
  auto local = asio::ip::make_address(address, ec);
  if (ec) throw invalid_argument("\"" + address + "\" is not an IP address");
  tcp::acceptor acceptor(io);
  acceptor.open(local.is_v6() ? tcp::v6() : tcp::v4(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind({local, port}, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw Error(ErrorCode::unavailable,
                "cannot listen on " + address + ":" + std::to_string(port) + ": " + ec.message());
  }
  on_listening(acceptor.local_endpoint().port());
  tcp::resolver resolver(io);
  auto daemon = resolver.resolve(host_, port_, ec);
  if (ec) throw Error(ErrorCode::unavailable, "cannot resolve " + host_ + ": " + ec.message());

  // One connection: a WebSocket of its own, bytes both ways until either side ends.
  auto relay = [&](tcp::socket conn) -> asio::awaitable<void> {
    auto ws = std::make_shared<websocket::stream<beast::tcp_stream>>(io);
    boost::system::error_code rec;
    co_await beast::get_lowest_layer(*ws).async_connect(
        daemon, asio::redirect_error(asio::use_awaitable, rec));
    websocket::response_type res;
    if (!rec) {
      ws->set_option(websocket::stream_base::decorator([this](websocket::request_type& req) {
        if (!config_.key.empty()) req.set(http::field::authorization, "Bearer " + config_.key);
      }));
      co_await ws->async_handshake(res, host_, target,
                                   asio::redirect_error(asio::use_awaitable, rec));
    }
    if (rec) {
      std::string why = res.body().empty() ? rec.message() : res.body();
      json body = json::parse(why, nullptr, false);
      if (body.is_object() && body.contains("error")) why = body["error"].value("message", why);
      on_error(why);
      co_return;
    }
    ws->binary(true);
    auto to_daemon = [ws, &conn]() -> asio::awaitable<void> {
      std::vector<char> buf(64 << 10);
      for (;;) {
        boost::system::error_code e;
        size_t n = co_await conn.async_read_some(asio::buffer(buf),
                                                 asio::redirect_error(asio::use_awaitable, e));
        if (e || n == 0) break;
        co_await ws->async_write(asio::buffer(buf.data(), n),
                                 asio::redirect_error(asio::use_awaitable, e));
        if (e) break;
      }
      boost::system::error_code e;
      co_await ws->async_close(websocket::close_code::normal,
                               asio::redirect_error(asio::use_awaitable, e));
    };
    auto finished =
        std::make_shared<asio::steady_timer>(io, std::chrono::steady_clock::time_point::max());
    asio::co_spawn(io, to_daemon(), [finished](std::exception_ptr) { finished->cancel(); });
    beast::flat_buffer buf;
    for (;;) {
      boost::system::error_code e;
      co_await ws->async_read(buf, asio::redirect_error(asio::use_awaitable, e));
      if (e) break;
      co_await asio::async_write(conn, buf.data(), asio::redirect_error(asio::use_awaitable, e));
      buf.consume(buf.size());
      if (e) break;
    }
    boost::system::error_code ignored;
    conn.shutdown(tcp::socket::shutdown_send, ignored);
    conn.close(ignored);  // ends the other half
    co_await finished->async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  };
  auto accept_loop = [&]() -> asio::awaitable<void> {
    for (;;) {
      tcp::socket conn = co_await acceptor.async_accept(asio::use_awaitable);
      conn.set_option(tcp::no_delay(true), ec);
      asio::co_spawn(io, relay(std::move(conn)), asio::detached);
    }
  };
  asio::co_spawn(io, accept_loop(), asio::detached);
  io.run();
}

}  // namespace pitbox::client
