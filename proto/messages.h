// The JSON messages of the box protocol, shared by the node (client) and pitbox-init (server).
// docs/protocol.md describes each one.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "sys/error.h"
#include "sys/process.h"

namespace pitbox::proto {

// A process init runs, as told to a node that (re)attaches.
struct ProcessInfo {
  uint32_t stream = 0;
  int pid = 0;
  std::vector<std::string> argv;
  bool tty = false;
  bool exited = false;  // its exit frame follows once its output is read
};

struct Hello {
  uint32_t version = 0;
  std::string agent;                  // "pitbox-init/0.1.0", "pitbox/0.1.0"
  std::vector<std::string> features;  // what this side can do beyond the version's basics
  // init's hello to a node that took over through the spare channel: the processes it has.
  // Their output waits until the node grants them a window.
  std::vector<ProcessInfo> processes;
};

// Start a process. The request's stream id becomes the process's stream id.
struct SpawnRequest {
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "KEY=value"
  std::string cwd = "/";
  bool create_cwd = false;  // mkdir -p the working directory first
  std::string user;         // "" (root), a name, "uid" or "uid:gid"
  bool tty = false;         // a pseudo-terminal for stdin, stdout and stderr
  uint16_t rows = 24;
  uint16_t cols = 80;
  bool stdin = false;   // false: stdin is /dev/null
  uint32_t window = 0;  // output bytes init may send before a window frame
};

struct SpawnReply {
  int pid = 0;                // in the box's pid namespace
  uint32_t stdin_window = 0;  // stdin bytes the node may send before a window frame
};

// One entry of stat or list.
struct FileInfo {
  std::string name;
  std::string type;   // "file", "dir", "symlink", "fifo", "socket", "char", "block"
  uint32_t mode = 0;  // permission bits, with setuid/setgid/sticky
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string target;  // for symlinks
};

void to_json(nlohmann::json& j, const ProcessInfo& v);
void from_json(const nlohmann::json& j, ProcessInfo& v);
void to_json(nlohmann::json& j, const Hello& v);
void from_json(const nlohmann::json& j, Hello& v);
void to_json(nlohmann::json& j, const SpawnRequest& v);
void from_json(const nlohmann::json& j, SpawnRequest& v);
void to_json(nlohmann::json& j, const SpawnReply& v);
void from_json(const nlohmann::json& j, SpawnReply& v);
void to_json(nlohmann::json& j, const FileInfo& v);
void from_json(const nlohmann::json& j, FileInfo& v);

// Exit events: {"code": n} or {"signal": n, "core_dumped": bool}.
nlohmann::json exit_to_json(const sys::ExitStatus& s);
sys::ExitStatus exit_from_json(const nlohmann::json& j);

// Responses: {"ok": true, ...result} or {"ok": false, "error": {...}}.
nlohmann::json ok_response(nlohmann::json result = nlohmann::json::object());
nlohmann::json error_response(const Error& e);
// The result of a response, or throws the Error it carries.
nlohmann::json unwrap_response(const nlohmann::json& response);

// Parses a JSON payload; a malformed one is an invalid_argument error naming the frame.
nlohmann::json parse_payload(const std::string& payload, std::string_view what);

}  // namespace pitbox::proto
