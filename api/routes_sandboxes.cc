// Sandboxes, exec and sessions.
#include <signal.h>

#include "api/routes.h"
#include "control/exec.h"
#include "sys/text.h"

namespace pitbox::api {

namespace {

using control::Sandbox;
using node::ProcessEvent;

constexpr int64_t kMaxPage = 1000;

size_t page_limit(const Request& r) {
  return static_cast<size_t>(r.query_int("limit", 100, 1, kMaxPage));
}

int parse_signal(const json& value) {
  static const std::map<std::string, int> kNames = {
      {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT},  {"KILL", SIGKILL},
      {"TERM", SIGTERM}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2},  {"STOP", SIGSTOP},
      {"CONT", SIGCONT}, {"ALRM", SIGALRM}, {"WINCH", SIGWINCH}};
  if (value.is_number_integer()) {
    int64_t n = value.get<int64_t>();
    if (n >= 1 && n <= 64) return static_cast<int>(n);
  } else if (value.is_string()) {
    std::string name = value.get<std::string>();
    if (name.rfind("SIG", 0) == 0) name = name.substr(3);
    if (auto it = kNames.find(name); it != kNames.end()) return it->second;
  }
  throw invalid_argument("\"signal\" must be a signal number from 1 to 64 or a name like \"TERM\"",
                         {{"field", "signal"}});
}

// Events of a streamed exec, one JSON object a line.
std::string event_line(const ProcessEvent& ev) {
  json j;
  if (ev.kind == ProcessEvent::Kind::exit) {
    j = {{"type", "exit"},
         {"exit_code", ev.status.shell_code()},
         {"signal", ev.status.signal ? json(ev.status.signal) : json(nullptr)}};
  } else {
    j = {{"type", ev.kind == ProcessEvent::Kind::stdout ? "stdout" : "stderr"}};
    control::put_output(j, "data", ev.data);
  }
  return j.dump() + "\n";
}

class SandboxRoutes {
 public:
  explicit SandboxRoutes(Services& s) : s_(s) {}

  static void add(Router& router, const std::shared_ptr<SandboxRoutes>& self) {
    auto bind = [self](asio::awaitable<void> (SandboxRoutes::*fn)(Request&)) {
      return [self, fn](Request& r) { return (self.get()->*fn)(r); };
    };
    using V = http::verb;
    router.add(V::post, "/v1/sandboxes", Access::user, bind(&SandboxRoutes::create));
    router.add(V::get, "/v1/sandboxes", Access::user, bind(&SandboxRoutes::list));
    router.add(V::get, "/v1/sandboxes/{id}", Access::user, bind(&SandboxRoutes::get));
    router.add(V::delete_, "/v1/sandboxes/{id}", Access::user, bind(&SandboxRoutes::remove));
    router.add(V::post, "/v1/sandboxes/{id}/start", Access::user, bind(&SandboxRoutes::start));
    router.add(V::post, "/v1/sandboxes/{id}/stop", Access::user, bind(&SandboxRoutes::stop));
    router.add(V::post, "/v1/sandboxes/{id}/pause", Access::user, bind(&SandboxRoutes::pause));
    router.add(V::post, "/v1/sandboxes/{id}/resume", Access::user, bind(&SandboxRoutes::resume));
    router.add(V::post, "/v1/sandboxes/{id}/resize", Access::user, bind(&SandboxRoutes::resize));
    router.add(V::put, "/v1/sandboxes/{id}/network", Access::user,
               bind(&SandboxRoutes::set_network));
    router.add(V::post, "/v1/sandboxes/{id}/archive", Access::user, bind(&SandboxRoutes::archive));
    router.add(V::post, "/v1/sandboxes/{id}/fork", Access::user, bind(&SandboxRoutes::fork));
    router.add(V::post, "/v1/sandboxes/{id}/restore", Access::user, bind(&SandboxRoutes::restore));
    router.add(V::post, "/v1/sandboxes/{id}/snapshots", Access::user,
               bind(&SandboxRoutes::snapshot));
    router.add(V::get, "/v1/sandboxes/{id}/snapshots", Access::user,
               bind(&SandboxRoutes::snapshot_list));
    router.add(V::get, "/v1/snapshots", Access::user, bind(&SandboxRoutes::snapshot_list));
    router.add(V::get, "/v1/snapshots/{sid}", Access::user, bind(&SandboxRoutes::snapshot_get));
    router.add(V::delete_, "/v1/snapshots/{sid}", Access::user,
               bind(&SandboxRoutes::snapshot_delete));
    router.add(V::put, "/v1/sandboxes/{id}/labels", Access::user, bind(&SandboxRoutes::labels));
    router.add(V::post, "/v1/sandboxes/{id}/exec", Access::user, bind(&SandboxRoutes::exec));
    router.add(V::post, "/v1/sandboxes/{id}/sessions", Access::user,
               bind(&SandboxRoutes::session_create));
    router.add(V::get, "/v1/sandboxes/{id}/sessions", Access::user,
               bind(&SandboxRoutes::session_list));
    router.add(V::get, "/v1/sandboxes/{id}/sessions/{sid}", Access::user,
               bind(&SandboxRoutes::session_get));
    router.add(V::delete_, "/v1/sandboxes/{id}/sessions/{sid}", Access::user,
               bind(&SandboxRoutes::session_delete));
    router.add(V::get, "/v1/sandboxes/{id}/sessions/{sid}/logs", Access::user,
               bind(&SandboxRoutes::session_logs));
    router.add(V::post, "/v1/sandboxes/{id}/sessions/{sid}/input", Access::user,
               bind(&SandboxRoutes::session_input));
    router.add(V::post, "/v1/sandboxes/{id}/sessions/{sid}/kill", Access::user,
               bind(&SandboxRoutes::session_kill));
  }

 private:
  control::Sandboxes& boxes() { return s_.sandboxes; }

  // The sandbox of the route's {id} (an id or a name); the call counts as activity.
  Sandbox box(Request& r) {
    Sandbox sb = boxes().get(r.params.at("id"));
    r.target = sb.id;
    boxes().touch(sb.id);
    return sb;
  }

  asio::awaitable<void> create(Request& r) {
    json body = co_await r.read_json();
    Sandbox sb = co_await boxes().create(body);
    r.target = sb.id;
    co_await send_json(r, 201, sb.to_api());
  }

  asio::awaitable<void> list(Request& r) {
    std::vector<std::pair<std::string, std::string>> labels;
    if (auto it = r.query.find("label"); it != r.query.end()) {
      for (const auto& text : it->second) labels.push_back(control::parse_label_selector(text));
    }
    std::optional<control::State> state;
    if (std::string text = r.query_value("state"); !text.empty()) {
      state = control::state_from_string(text);
      if (!state) {
        throw invalid_argument("query parameter \"state\": unknown state \"" + text + "\"",
                               {{"field", "state"}});
      }
    }
    auto page = boxes().list(labels, state, page_limit(r), r.query_value("cursor"));
    json items = json::array();
    for (const auto& sb : page.items) items.push_back(sb.to_api());
    co_await send_json(r, 200, page_json(std::move(items), page.next_cursor));
  }

  asio::awaitable<void> get(Request& r) {
    Sandbox sb = box(r);
    json answer = sb.to_api();
    answer["children"] = boxes().children(sb.id);
    co_await send_json(r, 200, answer);
  }

  asio::awaitable<void> archive(Request& r) {
    Sandbox sb = box(r);
    Sandbox archived = co_await boxes().archive(sb.id);
    co_await send_json(r, 200, archived.to_api());
  }

  asio::awaitable<void> fork(Request& r) {
    Sandbox sb = box(r);
    json body = co_await r.read_json();
    auto made = co_await boxes().fork(sb.id, body);
    json items = json::array();
    for (const auto& c : made) items.push_back(c.to_api());
    json answer = {{"items", items}};
    co_await send_json(r, 201, answer);
  }

  asio::awaitable<void> restore(Request& r) {
    Sandbox sb = box(r);
    json body = co_await r.read_json();
    Sandbox restored = co_await boxes().restore(sb.id, body);
    co_await send_json(r, 200, restored.to_api());
  }

  asio::awaitable<void> snapshot(Request& r) {
    Sandbox sb = box(r);
    json body = co_await r.read_json();
    control::Snapshot made = co_await boxes().snapshot(sb.id, body);
    co_await send_json(r, 201, made.to_api());
  }

  asio::awaitable<void> snapshot_list(Request& r) {
    std::string sandbox = r.params.count("id") ? r.params.at("id") : r.query_value("sandbox");
    auto page = boxes().list_snapshots(sandbox, page_limit(r), r.query_value("cursor"));
    json items = json::array();
    for (const auto& s : page.items) items.push_back(s.to_api());
    co_await send_json(r, 200, page_json(std::move(items), page.next_cursor));
  }

  asio::awaitable<void> snapshot_get(Request& r) {
    control::Snapshot snap = boxes().get_snapshot(r.params.at("sid"));
    r.target = snap.id;
    co_await send_json(r, 200, snap.to_api());
  }

  asio::awaitable<void> snapshot_delete(Request& r) {
    std::string ref = r.params.at("sid");
    co_await boxes().delete_snapshot(ref);
    co_await send_empty(r, 204);
  }

  asio::awaitable<void> remove(Request& r) {
    Sandbox sb = box(r);
    co_await boxes().remove(sb.id);
    co_await send_empty(r, 204);
  }

  asio::awaitable<void> start(Request& r) {
    Sandbox sb = box(r);
    Sandbox started = co_await boxes().start(sb.id);
    co_await send_json(r, 200, started.to_api());
  }

  asio::awaitable<void> stop(Request& r) {
    Sandbox sb = box(r);
    Sandbox stopped = co_await boxes().stop(sb.id);
    co_await send_json(r, 200, stopped.to_api());
  }

  asio::awaitable<void> pause(Request& r) {
    Sandbox sb = box(r);
    Sandbox paused = co_await boxes().pause(sb.id);
    co_await send_json(r, 200, paused.to_api());
  }

  asio::awaitable<void> resume(Request& r) {
    Sandbox sb = box(r);
    Sandbox resumed = co_await boxes().resume(sb.id);
    co_await send_json(r, 200, resumed.to_api());
  }

  asio::awaitable<void> resize(Request& r) {
    Sandbox sb = box(r);
    json body = co_await r.read_json();
    Sandbox resized = co_await boxes().resize(sb.id, body);
    co_await send_json(r, 200, resized.to_api());
  }

  asio::awaitable<void> set_network(Request& r) {
    Sandbox sb = box(r);
    json body = co_await r.read_json();
    Sandbox changed = co_await boxes().set_network(sb.id, body);
    co_await send_json(r, 200, changed.to_api());
  }

  asio::awaitable<void> labels(Request& r) {
    Sandbox sb = box(r);
    json body = co_await r.read_json();
    Sandbox changed = boxes().set_labels(sb.id, control::parse_labels_body(body));
    co_await send_json(r, 200, changed.to_api());
  }

  asio::awaitable<void> exec(Request& r) {
    bool stream = r.query_flag("stream");
    json body = co_await r.read_json();
    control::ExecRequest request = control::parse_exec(body, false);
    std::string id = r.params.at("id");
    auto [sb, channel] = co_await boxes().reach(id, r.query_flag("auto_resume"));
    r.target = sb.id;
    proto::SpawnRequest spawn = control::spawn_request(request, sb);
    auto started = std::chrono::steady_clock::now();
    if (!stream) {
      control::ExecResult result =
          co_await control::run_to_completion(*channel, std::move(spawn), request);
      s_.metrics.exec_seconds.observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      boxes().touch(sb.id);
      co_await send_json(r, 200, result.to_json());
      co_return;
    }
    co_await exec_stream(r, sb, *channel, std::move(spawn), request, started);
  }

  asio::awaitable<void> exec_stream(Request& r, const Sandbox& sb, node::Channel& channel,
                                    proto::SpawnRequest spawn, const control::ExecRequest& request,
                                    std::chrono::steady_clock::time_point started) {
    // A process that cannot start is an error answer, before the stream begins.
    auto process = co_await channel.spawn(std::move(spawn));
    auto executor = co_await asio::this_coro::executor;
    control::ExecWatch watch(executor, process, request);
    ChunkedResponse out(r, 200, "application/x-ndjson", {{"Cache-Control", "no-store"}});
    co_await out.begin();
    bool client_gone = false;
    // A command that prints nothing must still go when its client does.
    HangupWatch hangup(r);
    hangup.start([process, executor, &client_gone] {
      client_gone = true;
      asio::co_spawn(executor, process->signal(SIGKILL, true), asio::detached);
    });
    for (;;) {
      ProcessEvent ev = co_await process->next();
      std::string line = event_line(ev);
      if (ev.kind == ProcessEvent::Kind::exit) {
        hangup.cancel();
        json exit = json::parse(line);
        exit["duration_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::steady_clock::now() - started)
                                  .count();
        exit["timed_out"] = watch.timed_out();
        line = exit.dump() + "\n";
      }
      if (!client_gone) {
        try {
          co_await out.write(line);
        } catch (const boost::system::system_error&) {
          client_gone = true;
        }
        if (client_gone) {
          // Nobody reads the output any more: the command goes too.
          asio::co_spawn(executor, process->signal(SIGKILL, true), asio::detached);
        }
      }
      if (ev.kind == ProcessEvent::Kind::exit) break;
    }
    boxes().touch(sb.id);
    if (client_gone) {
      r.close = true;
      co_return;
    }
    co_await out.finish();
  }

  asio::awaitable<void> session_create(Request& r) {
    json body = co_await r.read_json();
    control::ExecRequest request = control::parse_exec(body, true);
    std::string id = r.params.at("id");
    json session = co_await boxes().start_session(id, request, r.query_flag("auto_resume"));
    r.target = boxes().get(r.params.at("id")).id + "/" + session["id"].get<std::string>();
    co_await send_json(r, 201, session);
  }

  asio::awaitable<void> session_list(Request& r) {
    Sandbox sb = box(r);
    co_await send_json(r, 200,
                       boxes().sessions().list(sb.id, page_limit(r), r.query_value("cursor")));
  }

  asio::awaitable<void> session_get(Request& r) {
    Sandbox sb = box(r);
    co_await send_json(r, 200, boxes().sessions().get(sb.id, r.params.at("sid")));
  }

  asio::awaitable<void> session_delete(Request& r) {
    Sandbox sb = box(r);
    r.target = sb.id + "/" + r.params.at("sid");
    boxes().remove_session(sb.id, r.params.at("sid"));
    co_await send_empty(r, 204);
  }

  asio::awaitable<void> session_logs(Request& r) {
    Sandbox sb = box(r);
    std::string sid = r.params.at("sid");
    auto offset = static_cast<uint64_t>(r.query_int("offset", 0, 0, INT64_MAX));
    bool follow = r.query_flag("follow");
    auto& sessions = boxes().sessions();
    auto first = sessions.output(sb.id, sid, offset);
    if (!follow) {
      http::response<http::string_body> res{http::status::ok, r.head.version()};
      common_headers(res, r);
      res.set(http::field::content_type, "application/octet-stream");
      res.set("X-Pitbox-Next-Offset", std::to_string(first.next_offset));
      res.set("X-Pitbox-Session-Ended", first.ended ? "true" : "false");
      res.body() = std::move(first.data);
      res.prepare_payload();
      co_await r.finish_body();
      r.status = 200;
      r.headers_sent = true;
      co_await http::async_write(r.stream, res, asio::use_awaitable);
      co_return;
    }
    ChunkedResponse out(r, 200, "application/octet-stream", {{"Cache-Control", "no-store"}});
    co_await out.begin();
    auto chunk = std::move(first);
    for (;;) {
      co_await out.write(chunk.data);
      offset = chunk.next_offset;
      if (chunk.ended) break;
      co_await sessions.wait_output(sb.id, sid, offset);
      try {
        chunk = sessions.output(sb.id, sid, offset);
      } catch (const Error&) {
        break;  // the session was deleted
      }
    }
    co_await out.finish();
  }

  asio::awaitable<void> session_input(Request& r) {
    Sandbox sb = box(r);
    r.target = sb.id + "/" + r.params.at("sid");
    json body = co_await r.read_json();
    check_fields(body, {"data", "data_base64", "eof"});
    std::string data;
    if (body.contains("data") && body.contains("data_base64")) {
      throw invalid_argument("give at most one of \"data\" and \"data_base64\"");
    }
    if (auto it = body.find("data"); it != body.end()) {
      if (!it->is_string())
        throw invalid_argument("\"data\" must be a string", {{"field", "data"}});
      data = it->get<std::string>();
    }
    if (auto it = body.find("data_base64"); it != body.end()) {
      auto decoded = it->is_string() ? sys::base64_decode(it->get<std::string>()) : std::nullopt;
      if (!decoded) {
        throw invalid_argument("\"data_base64\" is not base64", {{"field", "data_base64"}});
      }
      data = *decoded;
    }
    bool eof = bool_field(body, "eof", false);
    co_await boxes().sessions().input(sb.id, r.params.at("sid"), std::move(data), eof);
    co_await send_empty(r, 204);
  }

  asio::awaitable<void> session_kill(Request& r) {
    Sandbox sb = box(r);
    r.target = sb.id + "/" + r.params.at("sid");
    json body = co_await r.read_json();
    check_fields(body, {"signal"});
    int sig = body.contains("signal") ? parse_signal(body["signal"]) : SIGTERM;
    co_await boxes().sessions().signal(sb.id, r.params.at("sid"), sig);
    co_await send_empty(r, 204);
  }

  Services& s_;
};

}  // namespace

void add_sandbox_routes(Router& router, Services& services) {
  SandboxRoutes::add(router, std::make_shared<SandboxRoutes>(services));
}

}  // namespace pitbox::api
