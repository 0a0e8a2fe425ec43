#include "api/server.h"

#include <boost/asio/redirect_error.hpp>
#include <limits>

#include "api/preview.h"
#include "api/routes.h"
#include "sys/log.h"
#include "sys/text.h"

namespace pitbox::api {

using asio::ip::tcp;

asio::ip::tcp::endpoint parse_listen_address(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return invalid_argument("bad listen address \"" + text + "\": " + why);
  };
  size_t colon = text.rfind(':');
  if (colon == std::string::npos) throw bad("expected host:port");
  std::string host = text.substr(0, colon);
  std::string port = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty() || host == "*") host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  unsigned long p = 0;
  try {
    size_t used = 0;
    p = std::stoul(port, &used);
    if (used != port.size() || p > 65535) throw std::out_of_range("port");
  } catch (const std::exception&) {
    throw bad("the port must be a number from 0 to 65535");
  }
  boost::system::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) throw bad("\"" + host + "\" is not an IP address");
  return {address, static_cast<unsigned short>(p)};
}

Server::Server(asio::any_io_executor executor, Services services, Options options)
    : executor_(executor),
      services_(std::move(services)),
      options_(std::move(options)),
      acceptor_(executor) {
  add_admin_routes(router_, services_);
  add_image_routes(router_, services_);
  add_sandbox_routes(router_, services_);
  add_file_routes(router_, services_);
  add_terminal_route(router_, services_);
  preview_ = std::make_unique<PreviewProxy>(services_);
  add_preview_routes(router_, services_, *preview_);
}

Server::~Server() = default;

void Server::listen() {
  tcp::endpoint endpoint = parse_listen_address(options_.listen);
  boost::system::error_code ec;
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    acceptor_.close();
    throw Error(ErrorCode::unavailable,
                "cannot listen on " + options_.listen + ": " + ec.message());
  }
}

void Server::start() { asio::co_spawn(executor_, accept_loop(), asio::detached); }

void Server::stop() {
  boost::system::error_code ec;
  acceptor_.close(ec);
}

asio::awaitable<void> Server::accept_loop() {
  while (acceptor_.is_open()) {
    boost::system::error_code ec;
    tcp::socket socket =
        co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted) break;
    if (ec) {
      // Out of fds, most likely: wait a little rather than spin.
      sys::log(sys::LogLevel::warn, "accept failed", {{"error", ec.message()}});
      asio::steady_timer pause(executor_, std::chrono::milliseconds(50));
      co_await pause.async_wait(asio::use_awaitable);
      continue;
    }
    asio::co_spawn(executor_, connection(std::move(socket)), asio::detached);
  }
}

asio::awaitable<void> Server::connection(tcp::socket socket) {
  boost::system::error_code ec;
  socket.set_option(tcp::no_delay(true), ec);
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  try {
    for (;;) {
      http::request_parser<http::empty_body> parser;
      parser.header_limit(64 * 1024);
      // Not boost::none: Boost 1.74 takes any length as over an empty limit.
      parser.body_limit(std::numeric_limits<std::uint64_t>::max());
      // A connection that sends nothing for this long is closed.
      stream.expires_after(std::chrono::minutes(5));
      co_await http::async_read_header(stream, buffer, parser,
                                       asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (ec != http::error::end_of_stream && ec != beast::error::timeout &&
            ec != asio::error::connection_reset && ec != asio::error::eof) {
          // Not HTTP: say so and hang up.
          http::response<http::string_body> res{http::status::bad_request, 11};
          res.set(http::field::content_type, "application/json");
          res.body() = error_body(invalid_argument("bad HTTP request: " + ec.message())).dump();
          res.keep_alive(false);
          res.prepare_payload();
          co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
        }
        break;
      }
      stream.expires_never();
      Request r(stream, buffer, parser);
      co_await handle(r);
      if (r.close || !r.head.keep_alive()) break;
    }
  } catch (const std::exception&) {
    // The peer went away mid-answer: nothing more to say to it.
  }
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  stream.close();
}

void Server::authenticate(Request& r, Access access) {
  if (r.head[http::field::authorization].empty()) {
    throw Error(ErrorCode::unauthenticated,
                "this call needs an API key: send the header \"Authorization: Bearer <key>\"");
  }
  std::optional<std::string_view> token = bearer_token(r.head);
  if (!token) {
    throw Error(ErrorCode::unauthenticated, "the Authorization header must be \"Bearer <key>\"");
  }
  auto key = services_.keys.authenticate(std::string(*token));
  if (!key)
    throw Error(ErrorCode::unauthenticated, "the API key is not valid (unknown or revoked)");
  r.key = key;
  if (access == Access::admin && !key->admin) {
    throw Error(ErrorCode::permission_denied, "only the admin key may call " + r.route);
  }
}

asio::awaitable<void> Server::handle(Request& r) {
  auto started = std::chrono::steady_clock::now();
  const Route* route = nullptr;
  std::optional<Error> failure;
  bool peer_gone = false;
  try {
    std::string_view target(r.head.target().data(), r.head.target().size());
    parse_target(target, r.path, r.query);
    if (auto preview = preview_->match(r)) {
      r.route =
          preview->prefix.empty() ? "preview by host" : "/v1/sandboxes/{id}/ports/{port}/proxy";
      co_await preview_->serve(r, *preview);
      finish(r, nullptr, started);
      co_return;
    }
    // Matched before decoding: an escaped "/" (%2F) stays inside its parameter ("org/app:1").
    route = &router_.match(r.method(), std::string(target.substr(0, target.find('?'))), r.params);
    r.route = route->pattern;
    if (route->access != Access::open) authenticate(r, route->access);
    co_await route->handler(r);
  } catch (const Error& e) {
    failure = e;
  } catch (const boost::system::system_error& e) {
    // Writing to (or reading from) the client failed: it went away.
    peer_gone = true;
    failure = Error(ErrorCode::unavailable, std::string("the connection failed: ") + e.what());
  } catch (const std::exception& e) {
    failure = internal_error(std::string("unexpected: ") + e.what());
  }
  if (failure) {
    if (!r.headers_sent && !peer_gone) {
      try {
        co_await send_error(r, *failure);
      } catch (const std::exception&) {
        r.close = true;
      }
    } else {
      // Part of an answer went out: the client learns of the failure by the connection ending.
      r.close = true;
    }
    r.error_code = std::string(to_string(failure->code()));
    if (peer_gone && r.status == 0) r.status = 499;
  }
  finish(r, route, started);
  if (failure && r.status >= 500 && failure->code() == ErrorCode::internal) {
    sys::log(sys::LogLevel::error, "internal error",
             {{"route", r.route}, {"error", failure->message()}});
  }
}

void Server::finish(Request& r, const Route* route, std::chrono::steady_clock::time_point started) {
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  services_.metrics.http_responses[r.status]++;
  std::string key_id = r.key ? r.key->id : "";
  if (route && route->mutating()) {
    std::string target = r.target;
    if (target.empty() && r.params.count("id")) target = r.params.at("id");
    try {
      services_.store.append_audit({0, sys::now_ms(), key_id,
                                    std::string(http::to_string(r.method())) + " " + route->pattern,
                                    target, r.status, r.error_code});
    } catch (const std::exception& e) {
      sys::log(sys::LogLevel::error, "writing the audit log failed", {{"error", e.what()}});
    }
  }
  if (options_.log_requests) {
    nlohmann::json fields = {{"method", http::to_string(r.method())},
                             {"path", r.path},
                             {"status", r.status},
                             {"ms", std::round(seconds * 100000) / 100}};
    if (!key_id.empty()) fields["key_id"] = key_id;
    if (!r.error_code.empty()) fields["error"] = r.error_code;
    sys::log(sys::LogLevel::info, "request", fields);
  }
}

}  // namespace pitbox::api
