#include "control/exec.h"

#include <signal.h>

#include "sys/text.h"

namespace pitbox::control {

using nlohmann::json;

namespace {

Error bad(const std::string& field, const std::string& why) {
  return invalid_argument("\"" + field + "\" " + why, {{"field", field}});
}

}  // namespace

ExecRequest parse_exec(const json& body, bool allow_tty) {
  if (!body.is_object()) throw invalid_argument("the request must be a JSON object");
  static const std::set<std::string> kKnown = {"cmd",        "shell", "env",          "cwd",
                                               "user",       "stdin", "stdin_base64", "timeout_ms",
                                               "max_output", "tty"};
  for (const auto& [k, v] : body.items()) {
    if (!kKnown.count(k) || (k == "tty" && !allow_tty)) {
      throw invalid_argument("unknown field \"" + k + "\"", {{"field", k}});
    }
  }
  ExecRequest r;
  bool has_cmd = body.contains("cmd") && !body["cmd"].is_null();
  bool has_shell = body.contains("shell") && !body["shell"].is_null();
  if (has_cmd == has_shell) throw invalid_argument("give exactly one of \"cmd\" and \"shell\"");
  if (has_cmd) {
    const json& cmd = body["cmd"];
    if (!cmd.is_array() || cmd.empty()) throw bad("cmd", "must be a non-empty array of strings");
    for (const auto& a : cmd) {
      if (!a.is_string()) throw bad("cmd", "must be a non-empty array of strings");
      if (a.get<std::string>().find('\0') != std::string::npos)
        throw bad("cmd", "must not contain NUL bytes");
      r.argv.push_back(a.get<std::string>());
    }
    if (r.argv[0].empty()) throw bad("cmd", "must not start with an empty string");
  } else {
    if (!body["shell"].is_string() || body["shell"].get<std::string>().empty()) {
      throw bad("shell", "must be a non-empty string");
    }
    r.argv = {"/bin/sh", "-c", body["shell"].get<std::string>()};
  }
  if (auto it = body.find("env"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) throw bad("env", "must be an object of strings");
    for (const auto& [k, v] : it->items()) {
      if (k.empty() || k.find('=') != std::string::npos)
        throw bad("env." + k, "is not a valid name");
      if (!v.is_string()) throw bad("env." + k, "must be a string");
      r.env[k] = v.get<std::string>();
    }
  }
  for (auto [key, out] : {std::pair{"cwd", &r.cwd}, std::pair{"user", &r.user}}) {
    if (auto it = body.find(key); it != body.end() && !it->is_null()) {
      if (!it->is_string()) throw bad(key, "must be a string");
      *out = it->get<std::string>();
    }
  }
  if (!r.cwd.empty() && r.cwd[0] != '/') throw bad("cwd", "must be an absolute path");
  if (body.contains("stdin") && body.contains("stdin_base64")) {
    throw invalid_argument("give at most one of \"stdin\" and \"stdin_base64\"");
  }
  if (auto it = body.find("stdin"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) throw bad("stdin", "must be a string");
    r.stdin_data = it->get<std::string>();
  }
  if (auto it = body.find("stdin_base64"); it != body.end() && !it->is_null()) {
    auto decoded = it->is_string() ? sys::base64_decode(it->get<std::string>()) : std::nullopt;
    if (!decoded) throw bad("stdin_base64", "is not base64");
    r.stdin_data = *decoded;
  }
  if (auto it = body.find("timeout_ms"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() <= 0 || it->get<int64_t>() > 86400000) {
      throw bad("timeout_ms", "must be a whole number of milliseconds from 1 to 86400000");
    }
    r.timeout_ms = it->get<int64_t>();
  }
  if (auto it = body.find("max_output"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > (64 << 20)) {
      throw bad("max_output", "must be a number of bytes from 0 to 67108864");
    }
    r.max_output = it->get<size_t>();
  }
  if (auto it = body.find("tty"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) throw bad("tty", "must be true or false");
    r.tty = it->get<bool>();
  }
  return r;
}

proto::SpawnRequest spawn_request(const ExecRequest& request, const Sandbox& sandbox) {
  proto::SpawnRequest s;
  s.argv = request.argv;
  // The image's env, under the sandbox's, under the request's.
  std::map<std::string, std::string> env;
  for (const auto& e : sandbox.spec.image_env) {
    size_t eq = e.find('=');
    if (eq != std::string::npos) env[e.substr(0, eq)] = e.substr(eq + 1);
  }
  for (const auto& [k, v] : sandbox.spec.env) env[k] = v;
  for (const auto& [k, v] : request.env) env[k] = v;
  for (const auto& [k, v] : env) s.env.push_back(k + "=" + v);
  const std::string& workdir =
      !sandbox.spec.workdir.empty() ? sandbox.spec.workdir : sandbox.spec.image_workdir;
  s.cwd = !request.cwd.empty() ? request.cwd : workdir;
  s.create_cwd = request.cwd.empty() && !workdir.empty();
  s.user = !request.user.empty()        ? request.user
           : !sandbox.spec.user.empty() ? sandbox.spec.user
                                        : sandbox.spec.image_user;
  s.tty = request.tty;
  s.stdin = request.stdin_data.has_value() || request.tty;
  return s;
}

void put_output(json& j, const std::string& key, const std::string& data) {
  if (sys::is_valid_utf8(data)) {
    j[key] = data;
  } else {
    j[key + "_base64"] = sys::base64_encode(data);
  }
}

json ExecResult::to_json() const {
  bool text = sys::is_valid_utf8(out) && sys::is_valid_utf8(err);
  json j = {{"exit_code", status.shell_code()},
            {"signal", status.signal ? json(status.signal) : json(nullptr)},
            {"duration_ms", duration_ms},
            {"truncated", truncated},
            {"timed_out", timed_out},
            {"encoding", text ? "utf-8" : "base64"}};
  j["stdout"] = text ? out : sys::base64_encode(out);
  j["stderr"] = text ? err : sys::base64_encode(err);
  return j;
}

ExecWatch::ExecWatch(const asio::any_io_executor& executor, std::shared_ptr<node::Process> process,
                     const ExecRequest& request) {
  if (request.timeout_ms) {
    timer_ = std::make_shared<asio::steady_timer>(executor);
    timer_->expires_after(std::chrono::milliseconds(*request.timeout_ms));
    timer_->async_wait([process, timed_out = timed_out_, executor](boost::system::error_code ec) {
      if (ec) return;
      *timed_out = true;
      asio::co_spawn(executor, process->signal(SIGKILL, true), asio::detached);
    });
  }
  if (request.stdin_data) {
    // Fed from its own coroutine: a process that writes a lot before reading must not stall
    // the one reading its output.
    std::string data = *request.stdin_data;
    asio::co_spawn(
        executor,
        [process, data]() -> asio::awaitable<void> {
          co_await process->write_stdin(data);
          process->close_stdin();
        },
        asio::detached);
  }
}

ExecWatch::~ExecWatch() {
  if (timer_) timer_->cancel();
}

asio::awaitable<ExecResult> run_to_completion(node::Channel& channel, proto::SpawnRequest spawn,
                                              const ExecRequest& request) {
  auto started = std::chrono::steady_clock::now();
  auto process = co_await channel.spawn(std::move(spawn));
  ExecResult result;
  auto executor = co_await asio::this_coro::executor;
  ExecWatch watch(executor, process, request);
  for (;;) {
    node::ProcessEvent ev = co_await process->next();
    if (ev.kind == node::ProcessEvent::Kind::exit) {
      result.status = ev.status;
      break;
    }
    std::string& into = ev.kind == node::ProcessEvent::Kind::stdout ? result.out : result.err;
    size_t room = request.max_output > into.size() ? request.max_output - into.size() : 0;
    if (ev.data.size() > room) result.truncated = true;
    into.append(ev.data, 0, std::min(room, ev.data.size()));
  }
  result.timed_out = watch.timed_out();
  result.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - started)
                           .count();
  co_return result;
}

}  // namespace pitbox::control
