#include "proto/messages.h"

namespace pitbox::proto {

using nlohmann::json;

namespace {

template <typename T>
void get_opt(const json& j, const char* key, T& out) {
  if (auto it = j.find(key); it != j.end() && !it->is_null()) it->get_to(out);
}

}  // namespace

void to_json(json& j, const ProcessInfo& v) {
  j = {
      {"stream", v.stream}, {"pid", v.pid}, {"argv", v.argv}, {"tty", v.tty}, {"exited", v.exited}};
}

void from_json(const json& j, ProcessInfo& v) {
  j.at("stream").get_to(v.stream);
  get_opt(j, "pid", v.pid);
  get_opt(j, "argv", v.argv);
  get_opt(j, "tty", v.tty);
  get_opt(j, "exited", v.exited);
}

void to_json(json& j, const Hello& v) {
  j = {{"version", v.version}, {"agent", v.agent}, {"features", v.features}};
  if (!v.processes.empty()) j["processes"] = v.processes;
}

void from_json(const json& j, Hello& v) {
  j.at("version").get_to(v.version);
  get_opt(j, "agent", v.agent);
  get_opt(j, "features", v.features);
  get_opt(j, "processes", v.processes);
}

void to_json(json& j, const SpawnRequest& v) {
  j = {{"op", "spawn"}, {"argv", v.argv},   {"env", v.env},      {"cwd", v.cwd},
       {"tty", v.tty},  {"stdin", v.stdin}, {"window", v.window}};
  if (v.create_cwd) j["create_cwd"] = true;
  if (!v.user.empty()) j["user"] = v.user;
  if (v.tty) {
    j["rows"] = v.rows;
    j["cols"] = v.cols;
  }
}

void from_json(const json& j, SpawnRequest& v) {
  j.at("argv").get_to(v.argv);
  get_opt(j, "env", v.env);
  get_opt(j, "cwd", v.cwd);
  get_opt(j, "create_cwd", v.create_cwd);
  get_opt(j, "user", v.user);
  get_opt(j, "tty", v.tty);
  get_opt(j, "rows", v.rows);
  get_opt(j, "cols", v.cols);
  get_opt(j, "stdin", v.stdin);
  get_opt(j, "window", v.window);
}

void to_json(json& j, const SpawnReply& v) {
  j = {{"pid", v.pid}, {"stdin_window", v.stdin_window}};
}

void from_json(const json& j, SpawnReply& v) {
  get_opt(j, "pid", v.pid);
  get_opt(j, "stdin_window", v.stdin_window);
}

void to_json(json& j, const FileInfo& v) {
  j = {{"name", v.name},         {"type", v.type}, {"mode", v.mode}, {"size", v.size},
       {"mtime_ns", v.mtime_ns}, {"uid", v.uid},   {"gid", v.gid}};
  if (!v.target.empty()) j["target"] = v.target;
}

void from_json(const json& j, FileInfo& v) {
  get_opt(j, "name", v.name);
  get_opt(j, "type", v.type);
  get_opt(j, "mode", v.mode);
  get_opt(j, "size", v.size);
  get_opt(j, "mtime_ns", v.mtime_ns);
  get_opt(j, "uid", v.uid);
  get_opt(j, "gid", v.gid);
  get_opt(j, "target", v.target);
}

json exit_to_json(const sys::ExitStatus& s) {
  if (s.signal) return {{"signal", s.signal}, {"core_dumped", s.core_dumped}};
  return {{"code", s.code}};
}

sys::ExitStatus exit_from_json(const json& j) {
  sys::ExitStatus s;
  get_opt(j, "code", s.code);
  get_opt(j, "signal", s.signal);
  get_opt(j, "core_dumped", s.core_dumped);
  return s;
}

json ok_response(json result) {
  if (!result.is_object()) result = json::object();
  result["ok"] = true;
  return result;
}

json error_response(const Error& e) { return {{"ok", false}, {"error", e.to_json()}}; }

json unwrap_response(const json& response) {
  if (!response.is_object()) throw internal_error("box protocol: response is not an object");
  if (response.value("ok", false)) return response;
  if (auto it = response.find("error"); it != response.end()) throw Error::from_json(*it);
  throw internal_error("box protocol: response has neither ok nor error");
}

json parse_payload(const std::string& payload, std::string_view what) {
  try {
    return json::parse(payload);
  } catch (const json::exception& e) {
    throw invalid_argument("box protocol: " + std::string(what) +
                           " is not valid JSON: " + e.what());
  }
}

}  // namespace pitbox::proto
