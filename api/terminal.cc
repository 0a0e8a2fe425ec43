// The interactive terminal: a WebSocket whose binary messages are terminal bytes both ways and
// whose text messages are control ({"type": "resize"} in, {"type": "exit"} out).
#include <signal.h>

#include <boost/asio/redirect_error.hpp>
#include <boost/beast/websocket.hpp>

#include "api/routes.h"
#include "control/exec.h"

namespace pitbox::api {

namespace {

namespace websocket = beast::websocket;
using Socket = websocket::stream<beast::tcp_stream&>;

uint16_t dimension(const Request& r, const std::string& name, int64_t fallback) {
  return static_cast<uint16_t>(r.query_int(name, fallback, 1, 1000));
}

// Reads the client's messages until it closes: input goes to the process, resizes to its pty.
asio::awaitable<void> pump_input(Socket& ws, std::shared_ptr<node::Process> process,
                                 control::Sandboxes& boxes, std::string id) {
  beast::flat_buffer buffer;
  for (;;) {
    boost::system::error_code ec;
    co_await ws.async_read(buffer, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    std::string data = beast::buffers_to_string(buffer.data());
    buffer.consume(buffer.size());
    boxes.touch(id);
    if (ws.got_binary()) {
      co_await process->write_stdin(data);
      continue;
    }
    json message = json::parse(data, nullptr, false);
    if (message.is_object() && message.value("type", "") == "resize") {
      int rows = message.value("rows", 0), cols = message.value("cols", 0);
      if (rows > 0 && rows <= 1000 && cols > 0 && cols <= 1000) {
        co_await process->resize(static_cast<uint16_t>(rows), static_cast<uint16_t>(cols));
      }
    }
  }
  // The client went: so does the shell (as a terminal hang-up would do).
  try {
    co_await process->signal(SIGHUP, true);
  } catch (const std::exception&) {
  }
}

asio::awaitable<void> terminal(Services& s, Request& r) {
  if (!websocket::is_upgrade(r.head)) {
    throw invalid_argument(
        "this route is a WebSocket: send \"Connection: Upgrade\" and "
        "\"Upgrade: websocket\"");
  }
  uint16_t rows = dimension(r, "rows", 24), cols = dimension(r, "cols", 80);
  std::vector<std::string> argv;
  if (auto it = r.query.find("cmd"); it != r.query.end()) argv = it->second;
  if (argv.empty() || argv[0].empty()) {
    argv = {"/bin/sh", "-c",
            "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"};
  }
  control::ExecRequest request;
  request.argv = argv;
  request.tty = true;
  request.env["TERM"] = r.query_value("term", "xterm-256color");
  request.cwd = r.query_value("cwd");
  if (!request.cwd.empty() && request.cwd[0] != '/') {
    throw invalid_argument("query parameter \"cwd\" must be an absolute path", {{"field", "cwd"}});
  }
  request.user = r.query_value("user");
  std::string id = r.params.at("id");
  auto [sb, channel] = co_await s.sandboxes.reach(id, r.query_flag("auto_resume"));
  r.target = sb.id;
  proto::SpawnRequest spawn = control::spawn_request(request, sb);
  spawn.rows = rows;
  spawn.cols = cols;
  // Errors up to here are ordinary HTTP answers; from the upgrade on, only the socket speaks.
  auto process = co_await channel->spawn(std::move(spawn));
  Socket ws(r.stream);
  ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
  r.headers_sent = true;
  r.close = true;
  r.status = 101;
  co_await ws.async_accept(r.head, asio::use_awaitable);
  ws.binary(true);

  auto executor = co_await asio::this_coro::executor;
  auto reader_done = std::make_shared<node::Notifier>(executor);
  auto reading = std::make_shared<bool>(true);
  asio::co_spawn(executor, pump_input(ws, process, s.sandboxes, sb.id),
                 [reader_done, reading](std::exception_ptr) {
                   *reading = false;
                   reader_done->notify();
                 });
  sys::ExitStatus status;
  bool client_gone = false;
  for (;;) {
    node::ProcessEvent ev = co_await process->next();
    if (ev.kind == node::ProcessEvent::Kind::exit) {
      status = ev.status;
      break;
    }
    if (client_gone) continue;
    boost::system::error_code ec;
    ws.binary(true);
    co_await ws.async_write(asio::buffer(ev.data), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) client_gone = true;
  }
  if (!client_gone) {
    boost::system::error_code ec;
    std::string exit = json{{"type", "exit"},
                            {"exit_code", status.shell_code()},
                            {"signal", status.signal ? json(status.signal) : json(nullptr)}}
                           .dump();
    ws.text(true);
    co_await ws.async_write(asio::buffer(exit), asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) {
      co_await ws.async_close(websocket::close_code::normal,
                              asio::redirect_error(asio::use_awaitable, ec));
    }
  }
  // The reader ends when the socket closes; it must not outlive the socket it reads.
  if (*reading) {
    beast::get_lowest_layer(ws).close();
    while (*reading) co_await reader_done->wait();
  }
}

}  // namespace

void add_terminal_route(Router& router, Services& services) {
  Services* s = &services;
  router.add(http::verb::get, "/v1/sandboxes/{id}/terminal", Access::user,
             [s](Request& r) { return terminal(*s, r); });
}

}  // namespace pitbox::api
