// Preview links: HTTP to a port of a sandbox, by host (http://8000-sb-x.localhost:7070/) or by
// path (/v1/sandboxes/sb-x/ports/8000/proxy/...). Each request is relayed over a connection of
// its own made in the sandbox's network namespace to 127.0.0.1:PORT, so whatever listens there
// is reached (on the box's loopback too, and in boxes without a network). Bodies stream both
// ways as they come (Server-Sent Events included); an Upgrade (WebSocket) becomes a byte pipe.
#include "api/preview.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/redirect_error.hpp>
#include <boost/beast/websocket.hpp>

#include "api/routes.h"
#include "sys/log.h"
#include "sys/text.h"

namespace pitbox::api {

namespace {

using tcp = asio::ip::tcp;
constexpr std::string_view kTokenParam = "pitbox_token";
constexpr std::string_view kCookie = "pitbox_preview";
constexpr const char* kTokenHeader = "X-Pitbox-Preview-Token";

size_t leading_digits(std::string_view s) {
  size_t n = 0;
  while (n < s.size() && s[n] >= '0' && s[n] <= '9') ++n;
  return n;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The target without the token parameter; `token` gets its value.
std::string without_token(const std::string& target, std::string& token) {
  size_t q = target.find('?');
  if (q == std::string::npos) return target;
  std::string kept;
  std::string query = target.substr(q + 1);
  size_t start = 0;
  while (start <= query.size()) {
    size_t amp = query.find('&', start);
    std::string item = query.substr(start, amp == std::string::npos ? amp : amp - start);
    if (item.rfind(std::string(kTokenParam) + "=", 0) == 0) {
      token = item.substr(kTokenParam.size() + 1);
    } else if (!item.empty()) {
      kept += (kept.empty() ? "" : "&") + item;
    }
    if (amp == std::string::npos) break;
    start = amp + 1;
  }
  return target.substr(0, q) + (kept.empty() ? "" : "?" + kept);
}

// The Cookie header without ours; `token` gets its value.
std::string without_cookie(std::string_view header, std::string& token) {
  std::string kept;
  size_t start = 0;
  while (start < header.size()) {
    size_t semi = header.find(';', start);
    std::string_view item =
        header.substr(start, semi == std::string_view::npos ? semi : semi - start);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    if (item.rfind(std::string(kCookie) + "=", 0) == 0) {
      token = std::string(item.substr(kCookie.size() + 1));
    } else if (!item.empty()) {
      kept += (kept.empty() ? "" : "; ") + std::string(item);
    }
    if (semi == std::string_view::npos) break;
    start = semi + 1;
  }
  return kept;
}

// The token of an "Authorization: Bearer pb_..." header, if it carries something shaped like
// an API key.
std::optional<std::string> bearer_api_key(const http::request<http::empty_body>& head) {
  std::optional<std::string_view> token = bearer_token(head);
  if (!token || token->substr(0, 3) != "pb_") return std::nullopt;
  return std::string(*token);
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// A page for a browser (and the same words for curl) when a preview cannot be shown.
asio::awaitable<void> send_page(Request& r, int status, const std::string& title,
                                const std::string& message) {
  co_await r.finish_body();
  http::response<http::string_body> res{static_cast<http::status>(status), 11};
  common_headers(res, r);
  res.set(http::field::content_type, "text/html; charset=utf-8");
  res.set(http::field::cache_control, "no-store");
  res.body() = "<!doctype html>\n<html><head><title>" + html_escape(title) +
               "</title></head>\n<body style=\"font-family: sans-serif; margin: 3em\">\n<h1>" +
               html_escape(title) + "</h1>\n<p>" + html_escape(message) +
               "</p>\n<p><small>pitbox preview</small></p>\n</body></html>\n";
  res.prepare_payload();
  r.status = status;
  r.headers_sent = true;
  co_await http::async_write(r.stream, res, asio::use_awaitable);
}

tcp::socket& socket_of(tcp::socket& s) { return s; }
tcp::socket& socket_of(beast::tcp_stream& s) { return s.socket(); }

// Moves exactly `n` bytes from `from` to `to` through a pipe (splice: they never come up to
// us); bytes `from` already gave us (`buffered`) go first.
template <typename From, typename To>
asio::awaitable<void> splice_exactly(From& from, beast::flat_buffer& buffered, To& to, uint64_t n) {
  size_t early = static_cast<size_t>(std::min<uint64_t>(n, buffered.size()));
  if (early > 0) {
    co_await asio::async_write(to, asio::buffer(buffered.data().data(), early),
                               asio::use_awaitable);
    buffered.consume(early);
    n -= early;
  }
  if (n == 0) co_return;
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC | O_NONBLOCK) != 0) throw_errno("a pipe for a preview's body");
  sys::UniqueFd out_end(ends[0]), in_end(ends[1]);
  constexpr int kPipe = 1 << 20;
  int room = ::fcntl(in_end.get(), F_SETPIPE_SZ, kPipe);
  if (room <= 0) room = 64 << 10;  // the default size, when a larger one is not allowed
  tcp::socket& src = socket_of(from);
  tcp::socket& dst = socket_of(to);
  src.non_blocking(true);
  dst.non_blocking(true);
  auto fail = [](const char* what) {
    throw boost::system::system_error(errno, boost::system::system_category(), what);
  };
  while (n > 0) {
    ssize_t got = ::splice(src.native_handle(), nullptr, in_end.get(), nullptr,
                           static_cast<size_t>(std::min<uint64_t>(n, room)),
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (got < 0 && errno == EAGAIN) {
      co_await src.async_wait(tcp::socket::wait_read, asio::use_awaitable);
      continue;
    }
    if (got < 0) fail("reading a body");
    if (got == 0) throw boost::system::system_error(asio::error::eof, "the body ended early");
    n -= static_cast<uint64_t>(got);
    while (got > 0) {
      ssize_t put =
          ::splice(out_end.get(), nullptr, dst.native_handle(), nullptr, static_cast<size_t>(got),
                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK | (n > 0 ? SPLICE_F_MORE : 0));
      if (put < 0 && errno == EAGAIN) {
        co_await dst.async_wait(tcp::socket::wait_write, asio::use_awaitable);
        continue;
      }
      if (put < 0) fail("writing a body");
      got -= put;
    }
  }
}

// Moves a message from `in` to `out`, its header first, the body as it arrives. A body of a
// known length goes by splice; a small one already read goes out with the header.
template <bool isRequest, typename In, typename Out>
asio::awaitable<void> relay(In& in, beast::flat_buffer& in_buffer,
                            http::parser<isRequest, http::buffer_body>& p, Out& out) {
  http::serializer<isRequest, http::buffer_body> sr{p.get()};
  boost::system::error_code ec;
  if (!p.is_done()) {
    auto length = p.content_length();  // nothing of the body is parsed yet: all of it
    bool in_hand = length && *length <= in_buffer.size();
    if (!in_hand) {
      // The header now: a streamed answer's (Server-Sent Events) must not wait for its body.
      p.get().body().data = nullptr;
      p.get().body().more = true;
      co_await http::async_write_header(out, sr, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) throw boost::system::system_error(ec);
      if (length) co_return co_await splice_exactly(in, in_buffer, out, *length);
    }
  }
  // Chunked, ended by a close, or in hand: through the parser, a piece at a time. Beast reads
  // at most what the buffer has room for (512 bytes for a fresh one): room for a large piece.
  constexpr size_t kPiece = 256 << 10;
  std::unique_ptr<char[]> buf;  // uninitialised, and only for a body: most messages have none
  if (!p.is_done()) {
    in_buffer.reserve(kPiece);
    buf = std::make_unique_for_overwrite<char[]>(kPiece);
  }
  do {
    if (!p.is_done()) {
      p.get().body().data = buf.get();
      p.get().body().size = kPiece;
      co_await http::async_read_some(in, in_buffer, p,
                                     asio::redirect_error(asio::use_awaitable, ec));
      if (ec == http::error::need_buffer) ec = {};
      if (ec) throw boost::system::system_error(ec);
      p.get().body().size = kPiece - p.get().body().size;
      // Only a chunk's header came: nothing to pass on (an empty chunk would end the body).
      if (p.get().body().size == 0 && !p.is_done()) continue;
      p.get().body().data = buf.get();
      p.get().body().more = !p.is_done();
    } else {
      p.get().body().data = nullptr;
      p.get().body().size = 0;
      p.get().body().more = false;
    }
    co_await http::async_write(out, sr, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::need_buffer) ec = {};
    if (ec) throw boost::system::system_error(ec);
  } while (!p.is_done() || !sr.is_done());
}

void shutdown_send(tcp::socket& s) {
  boost::system::error_code ignored;
  s.shutdown(tcp::socket::shutdown_send, ignored);
}
void shutdown_send(beast::tcp_stream& s) { shutdown_send(s.socket()); }

// Copies bytes from `from` to `to` until `from` ends; then ends `to`'s sending side.
template <typename From, typename To>
asio::awaitable<void> pipe(From& from, To& to) {
  std::vector<char> buf(64 << 10);
  boost::system::error_code ec;
  for (;;) {
    size_t n = co_await from.async_read_some(asio::buffer(buf),
                                             asio::redirect_error(asio::use_awaitable, ec));
    if (ec || n == 0) break;
    co_await asio::async_write(to, asio::buffer(buf.data(), n),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
  }
  shutdown_send(to);
}

}  // namespace

PreviewProxy::PreviewProxy(Services& services) : services_(services) {}

std::optional<PreviewTarget> preview_target(std::string_view host_field, std::string_view target,
                                            std::string_view domain) {
  std::string host = lower(std::string(host_field));
  if (size_t colon = host.rfind(':'); colon != std::string::npos) host.resize(colon);
  std::string suffix = "." + lower(std::string(domain));
  if (host.size() > suffix.size() &&
      host.compare(host.size() - suffix.size(), suffix.size(), suffix) == 0) {
    // {port}-{box}: 1 to 5 digits, a dash, then a label of [a-z0-9-] not starting with '-'.
    std::string_view label(host.data(), host.size() - suffix.size());
    size_t digits = leading_digits(label);
    if (digits >= 1 && digits <= 5 && digits + 1 < label.size() && label[digits] == '-' &&
        label[digits + 1] != '-' &&
        label.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-", digits + 1) ==
            std::string_view::npos) {
      return PreviewTarget{std::string(label.substr(digits + 1)),
                           std::stoi(std::string(label.substr(0, digits))), "",
                           std::string(target)};
    }
  }
  // /v1/sandboxes/{id}/ports/{port}/proxy, then nothing, or a path or query.
  constexpr std::string_view kStart = "/v1/sandboxes/", kPorts = "/ports/", kProxy = "/proxy";
  if (target.substr(0, kStart.size()) != kStart) return std::nullopt;
  size_t id_end = target.find_first_of("/?", kStart.size());
  if (id_end == kStart.size() || id_end == std::string_view::npos ||
      target.substr(id_end, kPorts.size()) != kPorts) {
    return std::nullopt;
  }
  size_t port_at = id_end + kPorts.size();
  size_t digits = leading_digits(target.substr(port_at));
  size_t proxy_at = port_at + digits;
  if (digits < 1 || digits > 5 || target.substr(proxy_at, kProxy.size()) != kProxy) {
    return std::nullopt;
  }
  size_t rest_at = proxy_at + kProxy.size();
  if (rest_at < target.size() && target[rest_at] != '/' && target[rest_at] != '?') {
    return std::nullopt;
  }
  std::string rest(target.substr(rest_at));
  if (rest.empty() || rest.front() == '?') rest = "/" + rest;
  return PreviewTarget{std::string(target.substr(kStart.size(), id_end - kStart.size())),
                       std::stoi(std::string(target.substr(port_at, digits))),
                       std::string(target.substr(0, rest_at)), rest};
}

std::optional<PreviewTarget> PreviewProxy::match(const Request& r) const {
  auto host = r.head[http::field::host];
  auto target = r.head.target();
  return preview_target(std::string_view(host.data(), host.size()),
                        std::string_view(target.data(), target.size()), services_.preview_domain);
}

std::string PreviewProxy::host_url(const Request& r, const std::string& id, int port) const {
  auto host_field = r.head[http::field::host];
  std::string host(host_field.data(), host_field.size());
  std::string listen_port;
  if (size_t colon = host.rfind(':'); colon != std::string::npos) {
    listen_port = host.substr(colon);
  } else {
    // A client that named no port: the one it reached.
    boost::system::error_code ec;
    auto local = r.stream.socket().local_endpoint(ec);
    if (!ec && local.port() != 80) listen_port = ":" + std::to_string(local.port());
  }
  return "http://" + std::to_string(port) + "-" + id + "." + services_.preview_domain +
         listen_port + "/";
}

std::string PreviewProxy::path_url(const Request& r, const std::string& id, int port) const {
  auto host_field = r.head[http::field::host];
  return "http://" + std::string(host_field.data(), host_field.size()) + "/v1/sandboxes/" + id +
         "/ports/" + std::to_string(port) + "/proxy/";
}

asio::awaitable<void> PreviewProxy::serve(Request& r, PreviewTarget t) {
  control::Sandboxes& boxes = services_.sandboxes;
  if (t.port < 1 || t.port > 65535) {
    co_return co_await send_page(r, 400, "No such port",
                                 std::to_string(t.port) + " is not a TCP port (1 to 65535).");
  }
  control::Sandbox sb;
  std::optional<Error> unknown;
  try {
    sb = boxes.get(t.box);
  } catch (const Error& e) {
    unknown = e;
  }
  if (unknown) co_return co_await send_page(r, 404, "No such sandbox", unknown->message());
  t.box = sb.id;
  r.target = sb.id;

  // Who may see it: a preview token (query, header or cookie), or an API key.
  std::string query_token, cookie_token;
  std::string upstream_target = without_token(t.upstream_target, query_token);
  auto header_token_field = r.head[kTokenHeader];
  std::string token(header_token_field.data(), header_token_field.size());
  auto cookie_field = r.head[http::field::cookie];
  std::string cookies =
      without_cookie(std::string_view(cookie_field.data(), cookie_field.size()), cookie_token);
  if (!query_token.empty()) token = query_token;
  if (token.empty()) token = cookie_token;
  // A public port: anyone. Whatever let the request in, an API key never reaches the app (nor
  // anything shaped like one: a revoked key, another daemon's).
  bool open = sb.public_ports.count(t.port) > 0;
  std::optional<std::string> api_key = bearer_api_key(r.head);
  bool by_key = false;
  if (token.empty() && !open && api_key) {
    by_key = services_.keys.authenticate(*api_key).has_value();
    if (!by_key) {
      co_return co_await send_page(r, 401, "Not allowed",
                                   "The API key is not valid (unknown or revoked).");
    }
  }
  if (!by_key && !open) {
    if (token.empty()) {
      co_return co_await send_page(
          r, 401, "This preview needs a link",
          "Open it through a preview link (POST /v1/sandboxes/" + sb.id + "/ports/" +
              std::to_string(t.port) +
              "/preview-url makes one), or send an API key. Its owner may also make "
              "the port public.");
    }
    auto grant = services_.previews.verify(token);
    if (!grant || grant->sandbox_id != sb.id || grant->port != t.port) {
      co_return co_await send_page(r, 403, "Not allowed",
                                   "This preview link is not valid for port " +
                                       std::to_string(t.port) + " of sandbox " + sb.id + ".");
    }
    if (grant->generation != sb.preview_generation) {
      co_return co_await send_page(r, 403, "Link revoked",
                                   "The preview links of sandbox " + sb.id + " were revoked.");
    }
    if (grant->expires_at <= sys::now_ms()) {
      co_return co_await send_page(
          r, 403, "Link expired",
          "This preview link expired at " + sys::format_time(grant->expires_at) + ".");
    }
    if (!query_token.empty()) {
      // A cookie from now on, and the address without the token (it never reaches the app).
      co_await r.finish_body();
      http::response<http::empty_body> res{http::status::found, 11};
      common_headers(res, r);
      std::string path = t.prefix.empty() ? "/" : t.prefix;
      res.set(http::field::set_cookie,
              std::string(kCookie) + "=" + token + "; Path=" + path + "; HttpOnly; SameSite=Lax");
      res.set(http::field::location, t.prefix + upstream_target);
      res.set(http::field::cache_control, "no-store");
      res.prepare_payload();
      r.status = 302;
      r.headers_sent = true;
      co_await http::async_write(r.stream, res, asio::use_awaitable);
      co_return;
    }
  }

  // A body the app could frame otherwise than we do is not passed on (request smuggling): a
  // Transfer-Encoding other than chunked, or beside a Content-Length.
  if (r.head.count(http::field::transfer_encoding) > 0 &&
      (!r.head_parser.chunked() || r.head.count(http::field::content_length) > 0)) {
    r.body_read = true;  // not read: the connection closes after the page
    r.close = true;
    co_return co_await send_page(r, 400, "Bad request",
                                 "A request body whose Transfer-Encoding is not chunked, or that "
                                 "also has a Content-Length, is not passed on.");
  }

  // A connection to the port, made in the box.
  tcp::socket upstream(r.stream.get_executor());
  std::optional<Error> failed;
  try {
    sys::UniqueFd fd = co_await boxes.preview_socket(sb.id);
    upstream.assign(tcp::v4(), fd.release());
  } catch (const Error& e) {
    failed = e;
  }
  if (failed) {
    co_return co_await send_page(r, http_status_of(*failed), "Sandbox not reachable",
                                 failed->message());
  }
  boost::system::error_code ec;
  co_await upstream.async_connect(
      {asio::ip::make_address_v4("127.0.0.1"), static_cast<unsigned short>(t.port)},
      asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    co_return co_await send_page(r, 502, "Nothing listens on port " + std::to_string(t.port),
                                 "Sandbox " + sb.id + " has nothing listening on port " +
                                     std::to_string(t.port) + " (" + ec.message() +
                                     "). Start a server there, on any address.");
  }
  upstream.set_option(tcp::no_delay(true), ec);

  // The request, as the app should see it.
  http::request_parser<http::buffer_body> request(std::move(r.head_parser));
  r.body_read = true;
  auto& head = request.get();
  bool upgrade = head.count(http::field::upgrade) > 0;
  std::string upgrade_to(head[http::field::upgrade]);
  // A client that waits for a go-ahead before its body gets ours: the app gets the body anyway.
  bool expects = beast::iequals(head[http::field::expect], "100-continue");
  head.erase(http::field::expect);
  head.target(upstream_target);
  for (auto f : {http::field::connection, http::field::keep_alive, http::field::proxy_connection,
                 http::field::te, http::field::trailer, http::field::upgrade}) {
    head.erase(f);
  }
  head.erase(kTokenHeader);
  if (api_key) head.erase(http::field::authorization);  // the key is not the app's business
  head.erase(http::field::cookie);
  if (!cookies.empty()) head.set(http::field::cookie, cookies);
  std::string peer;
  try {
    peer = r.stream.socket().remote_endpoint().address().to_string();
  } catch (const std::exception&) {
  }
  head.set("X-Forwarded-For", peer);
  head.set("X-Forwarded-Proto", "http");
  if (upgrade) {
    head.set(http::field::connection, "Upgrade");
    head.set(http::field::upgrade, upgrade_to);
  } else {
    head.set(http::field::connection, "close");  // one connection per request to the app
  }

  bool response_begun = false;
  try {
    if (expects && !request.is_done()) {
      http::response<http::empty_body> go{http::status::continue_, 11};
      co_await http::async_write(r.stream, go, asio::use_awaitable);
    }
    co_await relay(r.stream, r.buffer, request, upstream);
    r.body_complete = true;
    beast::flat_buffer upstream_buffer;
    std::optional<http::response_parser<http::buffer_body>> response;
    for (;;) {
      response.emplace();
      response->body_limit(std::numeric_limits<std::uint64_t>::max());
      if (r.method() == http::verb::head) response->skip(true);  // a length, but no body
      co_await http::async_read_header(upstream, upstream_buffer, *response, asio::use_awaitable);
      int code = response->get().result_int();
      if (code / 100 != 1 || code == 101) break;
      // Interim answers (103 Early Hints, ...) go on to HTTP/1.1 clients; the final one follows.
      if (r.head.version() >= 11) {
        http::response<http::empty_body> interim;
        interim.version(11);
        interim.result(static_cast<unsigned>(code));  // Beast names no 103: by its number
        interim.reason(response->get().reason());
        for (const auto& field : response->get()) interim.set(field.name_string(), field.value());
        co_await http::async_write(r.stream, interim, asio::use_awaitable);
      }
    }
    auto& res = response->get();
    if (res.count(http::field::transfer_encoding) > 0) {
      // Framed by chunks only; any other transfer coding could be read otherwise downstream.
      if (!response->chunked()) {
        throw boost::system::system_error(
            http::error::bad_transfer_encoding,
            "its Transfer-Encoding is not chunked, so its end is unclear");
      }
      res.erase(http::field::content_length);
    }
    r.status = res.result_int();
    if (upgrade && res.result() == http::status::switching_protocols) {
      // The app took the upgrade: from now on bytes, both ways, until either side ends.
      http::response<http::empty_body> head101{res.result(), res.version()};
      for (const auto& field : res) head101.set(field.name_string(), field.value());
      response_begun = r.headers_sent = true;
      r.close = true;
      co_await http::async_write(r.stream, head101, asio::use_awaitable);
      if (r.buffer.size() > 0) {
        co_await asio::async_write(upstream, r.buffer.data(), asio::use_awaitable);
        r.buffer.consume(r.buffer.size());
      }
      if (upstream_buffer.size() > 0) {
        co_await asio::async_write(r.stream, upstream_buffer.data(), asio::use_awaitable);
        upstream_buffer.consume(upstream_buffer.size());
      }
      // The client-to-app half runs beside; both halves end when either side hangs up.
      auto done = std::make_shared<asio::steady_timer>(
          r.stream.get_executor(), std::chrono::steady_clock::time_point::max());
      asio::co_spawn(r.stream.get_executor(), pipe(r.stream, upstream),
                     [done](std::exception_ptr) { done->cancel(); });
      co_await pipe(upstream, r.stream);
      boost::system::error_code ignored;
      r.stream.socket().cancel(ignored);
      upstream.close(ignored);
      co_await done->async_wait(asio::redirect_error(asio::use_awaitable, ignored));
      co_return;
    }
    for (auto f : {http::field::connection, http::field::keep_alive, http::field::upgrade}) {
      res.erase(f);
    }
    bool bodyless = res.result_int() < 200 || res.result_int() == 204 || res.result_int() == 304 ||
                    r.method() == http::verb::head;
    if (!bodyless && !res.has_content_length() && !res.chunked()) {
      res.chunked(true);  // an app that ends its answer by closing: chunks keep ours open
    }
    res.keep_alive(r.head.keep_alive());
    res.set(http::field::server, std::string(res[http::field::server]).empty()
                                     ? std::string("pitbox/") + PITBOX_VERSION
                                     : std::string(res[http::field::server]));
    response_begun = r.headers_sent = true;
    co_await relay(upstream, upstream_buffer, *response, r.stream);
    boxes.touch(sb.id);
  } catch (const boost::system::system_error& e) {
    if (!response_begun) {
      failed = Error(ErrorCode::unavailable, e.what());
    } else {
      r.close = true;  // the app (or the box) went mid-answer: the client sees the end
    }
  }
  if (failed) {
    r.close = true;
    co_await send_page(r, 502, "The app did not answer",
                       "Port " + std::to_string(t.port) + " of sandbox " + sb.id +
                           " closed the connection before answering (" + failed->message() + ").");
  }
}

// ---------------------------------------------------------------------------------------------

namespace {

// A port of a sandbox as the API shows it.
json port_json(const Request& r, const PreviewProxy& proxy, const control::Sandbox& sb, int port) {
  return {{"port", port},
          {"public", sb.public_ports.count(port) > 0},
          {"url", proxy.host_url(r, sb.id, port)},
          {"path_url", proxy.path_url(r, sb.id, port)}};
}

int port_param(const Request& r) {
  const std::string& text = r.params.at("port");
  int port = 0;
  try {
    size_t used = 0;
    port = std::stoi(text, &used);
    if (used != text.size()) port = 0;
  } catch (const std::exception&) {
  }
  if (port < 1 || port > 65535) {
    throw invalid_argument("port: \"" + text + "\" is not a TCP port (1 to 65535)",
                           {{"field", "port"}});
  }
  return port;
}

// GET .../ports/{port}/forward: a WebSocket whose binary messages are the bytes of one TCP
// connection to the port, both ways (pitbox port-forward). Ends when either side closes.
asio::awaitable<void> forward(Services& services, Request& r) {
  if (!beast::websocket::is_upgrade(r.head)) {
    throw invalid_argument(
        "this route is a WebSocket: send \"Connection: Upgrade\" and \"Upgrade: websocket\"");
  }
  int port = port_param(r);
  control::Sandbox sb = services.sandboxes.get(r.params.at("id"));
  r.target = sb.id;
  sys::UniqueFd fd = co_await services.sandboxes.preview_socket(sb.id);
  tcp::socket app(r.stream.get_executor());
  app.assign(tcp::v4(), fd.release());
  boost::system::error_code ec;
  co_await app.async_connect(
      {asio::ip::make_address_v4("127.0.0.1"), static_cast<unsigned short>(port)},
      asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    throw http_error(502, ErrorCode::unavailable,
                     "sandbox " + sb.id + " has nothing listening on port " + std::to_string(port) +
                         " (" + ec.message() + ")");
  }
  app.set_option(tcp::no_delay(true), ec);
  beast::websocket::stream<beast::tcp_stream&> ws(r.stream);
  ws.set_option(beast::websocket::stream_base::timeout::suggested(beast::role_type::server));
  r.headers_sent = true;
  r.close = true;
  r.status = 101;
  co_await ws.async_accept(r.head, asio::use_awaitable);
  ws.binary(true);
  // The app's bytes to the client beside; the client's to the app here.
  auto done = std::make_shared<asio::steady_timer>(r.stream.get_executor(),
                                                   std::chrono::steady_clock::time_point::max());
  auto to_client = [&]() -> asio::awaitable<void> {
    std::vector<char> buf(64 << 10);
    for (;;) {
      boost::system::error_code rec;
      size_t n = co_await app.async_read_some(asio::buffer(buf),
                                              asio::redirect_error(asio::use_awaitable, rec));
      if (rec || n == 0) break;
      co_await ws.async_write(asio::buffer(buf.data(), n),
                              asio::redirect_error(asio::use_awaitable, rec));
      if (rec) break;
    }
    // The app closed: so does the WebSocket (the client's answer ends the read below).
    boost::system::error_code cec;
    co_await ws.async_close(beast::websocket::close_code::normal,
                            asio::redirect_error(asio::use_awaitable, cec));
  };
  asio::co_spawn(r.stream.get_executor(), to_client(),
                 [done](std::exception_ptr) { done->cancel(); });
  beast::flat_buffer buf;
  for (;;) {
    boost::system::error_code rec;
    co_await ws.async_read(buf, asio::redirect_error(asio::use_awaitable, rec));
    if (rec) break;
    co_await asio::async_write(app, buf.data(), asio::redirect_error(asio::use_awaitable, rec));
    buf.consume(buf.size());
    if (rec) break;
    services.sandboxes.touch(sb.id);
  }
  boost::system::error_code ignored;
  app.close(ignored);  // ends the other half
  co_await done->async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  beast::get_lowest_layer(ws).close();
}

}  // namespace

void add_preview_routes(Router& router, Services& services, PreviewProxy& proxy) {
  using V = http::verb;
  router.add(V::get, "/v1/sandboxes/{id}/ports", Access::user,
             [&services, &proxy](Request& r) -> asio::awaitable<void> {
               control::Sandbox sb = services.sandboxes.get(r.params.at("id"));
               json items = json::array();
               for (int port : services.sandboxes.listening_ports(sb.id)) {
                 items.push_back(port_json(r, proxy, sb, port));
               }
               json page = page_json(items, "");
               co_await send_json(r, 200, page);
             });
  router.add(
      V::post, "/v1/sandboxes/{id}/ports/{port}/preview-url", Access::user,
      [&services, &proxy](Request& r) -> asio::awaitable<void> {
        control::Sandbox sb = services.sandboxes.get(r.params.at("id"));
        int port = port_param(r);
        json body = co_await r.read_json();
        check_fields(body, {"expires_in"});
        int64_t seconds = 24 * 3600;
        if (body.contains("expires_in")) {
          const json& e = body["expires_in"];
          if (!e.is_number_integer() || e.get<int64_t>() < 1 || e.get<int64_t>() > 30 * 24 * 3600) {
            throw invalid_argument("expires_in: seconds, from 1 to 2592000 (30 days)",
                                   {{"field", "expires_in"}});
          }
          seconds = e.get<int64_t>();
        }
        control::PreviewGrant grant{sb.id, port, sys::now_ms() + seconds * 1000,
                                    sb.preview_generation};
        std::string token = services.previews.sign(grant);
        json answer = {{"url", proxy.host_url(r, sb.id, port) + "?pitbox_token=" + token},
                       {"path_url", proxy.path_url(r, sb.id, port) + "?pitbox_token=" + token},
                       {"token", token},
                       {"port", port},
                       {"expires_at", sys::format_time(grant.expires_at)}};
        co_await send_json(r, 201, answer);
      });
  // PUT: anyone may open the port's preview, without a link or an API key; DELETE: not any more.
  for (bool open : {true, false}) {
    router.add(open ? V::put : V::delete_, "/v1/sandboxes/{id}/ports/{port}/public", Access::user,
               [&services, &proxy, open](Request& r) -> asio::awaitable<void> {
                 int port = port_param(r);
                 control::Sandbox sb =
                     services.sandboxes.set_port_public(r.params.at("id"), port, open);
                 r.target = sb.id;
                 json answer = port_json(r, proxy, sb, port);
                 co_await send_json(r, 200, answer);
               });
  }
  router.add(V::get, "/v1/sandboxes/{id}/ports/{port}/forward", Access::user,
             [&services](Request& r) { return forward(services, r); });
  router.add(V::delete_, "/v1/sandboxes/{id}/preview-urls", Access::user,
             [&services](Request& r) -> asio::awaitable<void> {
               services.sandboxes.revoke_previews(r.params.at("id"));
               co_await send_empty(r, 204);
             });
}

}  // namespace pitbox::api
