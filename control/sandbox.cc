#include "control/sandbox.h"

#include <cctype>
#include <cmath>

#include "sys/text.h"
#include "sys/units.h"

namespace pitbox::control {

using nlohmann::json;

namespace {

constexpr std::pair<State, std::string_view> kStates[] = {
    {State::creating, "creating"},     {State::started, "started"},
    {State::stopping, "stopping"},     {State::stopped, "stopped"},
    {State::starting, "starting"},     {State::error, "error"},
    {State::destroying, "destroying"}, {State::paused, "paused"},
    {State::archived, "archived"}};

Error bad(const std::string& field, const std::string& why) {
  return invalid_argument("\"" + field + "\" " + why, {{"field", field}});
}

void check_object(const json& body, const std::set<std::string>& known, const std::string& what) {
  if (!body.is_object()) throw invalid_argument(what + " must be a JSON object");
  for (const auto& [k, v] : body.items()) {
    if (!known.count(k)) {
      std::string list;
      for (const auto& f : known) list += (list.empty() ? "" : ", ") + f;
      throw invalid_argument("unknown field \"" + k + "\" (known: " + list + ")", {{"field", k}});
    }
  }
}

std::string string_field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return {};
  if (!it->is_string()) throw bad(key, "must be a string");
  std::string s = it->get<std::string>();
  if (s.find('\0') != std::string::npos) throw bad(key, "must not contain a NUL byte");
  return s;
}

std::map<std::string, std::string> string_map(const json& body, const char* key, size_t most,
                                              size_t max_value,
                                              bool (*valid_key)(const std::string&),
                                              const char* key_rule) {
  std::map<std::string, std::string> out;
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return out;
  if (!it->is_object()) throw bad(key, "must be an object of strings");
  if (it->size() > most) throw bad(key, "has more than " + std::to_string(most) + " entries");
  for (const auto& [k, v] : it->items()) {
    std::string field = std::string(key) + "." + k;
    if (!valid_key(k)) throw bad(field, std::string("is not a valid name: ") + key_rule);
    if (!v.is_string()) throw bad(field, "must be a string");
    std::string s = v.get<std::string>();
    if (s.size() > max_value) throw bad(field, "is longer than " + std::to_string(max_value));
    if (s.find('\0') != std::string::npos) throw bad(field, "must not contain a NUL byte");
    out[k] = s;
  }
  return out;
}

bool valid_label_key(const std::string& k) {
  if (k.empty() || k.size() > 63) return false;
  for (char c : k) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-' &&
        c != '/') {
      return false;
    }
  }
  return true;
}

bool valid_env_key(const std::string& k) {
  if (k.empty() || k.size() > 255 || std::isdigit(static_cast<unsigned char>(k[0]))) return false;
  for (char c : k) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

std::optional<uint64_t> whole_number(const json& body, const char* key, uint64_t min,
                                     uint64_t max) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer() || it->get<int64_t>() < 0) throw bad(key, "must be a whole number");
  auto v = it->get<uint64_t>();
  if (v < min || v > max) {
    throw bad(key, "must be from " + std::to_string(min) + " to " + std::to_string(max));
  }
  return v;
}

// Bytes as a number or as "512m".
std::optional<uint64_t> size_field(const json& body, const char* key, uint64_t min) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  uint64_t v;
  if (it->is_number_integer() && it->get<int64_t>() >= 0) {
    v = it->get<uint64_t>();
  } else if (it->is_string()) {
    try {
      v = sys::parse_size(it->get<std::string>());
    } catch (const Error& e) {
      throw bad(key, e.message());
    }
  } else {
    throw bad(key, "must be a number of bytes or a size such as \"512m\"");
  }
  if (v < min) throw bad(key, "must be at least " + sys::format_size(min));
  return v;
}

std::optional<double> minutes(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number() || it->get<double>() < 0 || it->get<double>() > 525600 * 10) {
    throw bad(key, "must be a number of minutes from 0 to 5256000");
  }
  double v = it->get<double>();
  if (v == 0) return std::nullopt;  // 0 turns the timer off
  return v;
}

json or_null(const std::optional<uint64_t>& v) { return v ? json(*v) : json(nullptr); }
json or_null(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }
json time_or_null(int64_t ms) { return ms ? json(sys::format_time(ms)) : json(nullptr); }

}  // namespace

std::string_view to_string(State s) {
  for (auto [st, name] : kStates) {
    if (st == s) return name;
  }
  return "error";
}

std::optional<State> state_from_string(std::string_view s) {
  for (auto [st, name] : kStates) {
    if (name == s) return st;
  }
  return std::nullopt;
}

void validate_name(const std::string& name) {
  auto fail = [&](const std::string& why) {
    return bad("name",
               "\"" + name + "\" " + why +
                   " (1 to 63 of a-z, 0-9, '-', '_', '.', starting with a letter or digit)");
  };
  if (name.empty() || name.size() > 63) throw fail("has a bad length");
  if (!std::isalnum(static_cast<unsigned char>(name[0])) ||
      std::isupper(static_cast<unsigned char>(name[0]))) {
    throw fail("must start with a lowercase letter or a digit");
  }
  for (char c : name) {
    if (!(std::islower(static_cast<unsigned char>(c)) ||
          std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
      throw fail("has a character that is not allowed");
    }
  }
  if (name.rfind("sb-", 0) == 0 && name.size() == 15) throw fail("looks like a sandbox id");
}

void parse_resources(const json& body, const Capabilities& caps, SandboxSpec& s) {
  if (auto it = body.find("cpus"); it != body.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() <= 0)
      throw bad("cpus", "must be a number of CPUs above 0");
    double cpus = it->get<double>();
    if (cpus > static_cast<double>(caps.online_cpus)) {
      throw bad("cpus",
                "is more than the " + std::to_string(caps.online_cpus) + " CPUs of this node");
    }
    s.millicpus = static_cast<uint64_t>(std::llround(cpus * 1000));
    if (*s.millicpus < 10) throw bad("cpus", "must be at least 0.01");
  }
  if (auto v = size_field(body, "memory", 6ull << 20)) s.memory = v;
  if (auto v = whole_number(body, "pids", 2, 4194304)) s.pids = v;
  if (auto v = size_field(body, "disk", 1ull << 20)) {
    if (!caps.disk_quota) {
      throw bad("disk", "limits need a storage driver with quotas; this node's driver (" +
                            caps.storage_driver + ") has none (pitbox serve --storage btrfs)");
    }
    s.disk = v;
  }
}

SandboxSpec parse_resize(const json& body, const Capabilities& caps, SandboxSpec spec) {
  check_object(body, {"cpus", "memory", "pids", "disk"}, "the request");
  if (body.empty())
    throw invalid_argument("a resize names at least one of cpus, memory, pids, disk");
  parse_resources(body, caps, spec);
  return spec;
}

SandboxSpec parse_create(const json& body, const Capabilities& caps) {
  check_object(body,
               {"image", "name", "labels", "env", "cpus", "memory", "pids", "disk", "workdir",
                "user", "runtime", "auto_stop_minutes", "auto_delete_minutes",
                "auto_archive_minutes", "ephemeral", "snapshot", "network"},
               "the request");
  SandboxSpec s;
  s.image = caps.default_image;
  std::string image = string_field(body, "image");
  if (!image.empty()) s.image = image;
  if (std::string ref = string_field(body, "snapshot"); !ref.empty()) {
    if (!image.empty()) throw bad("snapshot", "and \"image\" cannot both be given");
    if (!caps.resolve_snapshot) throw bad("snapshot", "snapshots are not available here");
    Snapshot snap;
    try {
      snap = caps.resolve_snapshot(ref);
    } catch (const Error& e) {
      throw Error(e.code(), e.message(), {{"field", "snapshot"}});
    }
    s.snapshot = snap.id;
    s.image = snap.image;
    s.image_id = snap.image_id;
    s.image_env = snap.image_env;
    s.image_workdir = snap.image_workdir;
    s.image_user = snap.image_user;
  } else {
    try {
      s.image_id = caps.resolve_image ? caps.resolve_image(s.image) : s.image;
    } catch (const Error& e) {
      throw Error(e.code(), e.message(), {{"field", "image"}});
    }
  }
  if (std::string runtime = string_field(body, "runtime"); !runtime.empty()) s.runtime = runtime;
  bool known_runtime = false;
  for (const auto& r : caps.runtimes) known_runtime = known_runtime || r == s.runtime;
  if (!known_runtime)
    throw bad("runtime", "\"" + s.runtime + "\" is not available on this node (container)");
  s.name = string_field(body, "name");
  if (!s.name.empty()) validate_name(s.name);
  s.labels = string_map(body, "labels", 64, 256, valid_label_key,
                        "1 to 63 of letters, digits, '.', '_', '-', '/'");
  s.env = string_map(body, "env", 256, 128 << 10, valid_env_key,
                     "letters, digits and '_', not starting with a digit");
  parse_resources(body, caps, s);
  s.workdir = string_field(body, "workdir");
  if (!s.workdir.empty() && s.workdir[0] != '/') throw bad("workdir", "must be an absolute path");
  s.user = string_field(body, "user");
  s.auto_stop_minutes = minutes(body, "auto_stop_minutes");
  s.auto_delete_minutes = minutes(body, "auto_delete_minutes");
  s.auto_archive_minutes = minutes(body, "auto_archive_minutes");
  if (auto it = body.find("ephemeral"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) throw bad("ephemeral", "must be true or false");
    s.ephemeral = it->get<bool>();
  }
  s.network = caps.default_network;
  if (auto it = body.find("network"); it != body.end() && !it->is_null()) {
    s.network = parse_network(*it, caps);
  }
  return s;
}

net::Policy parse_network(const json& value, const Capabilities& caps) {
  if (!caps.default_network) {
    throw bad("network", "this server gives boxes no network (serve --network off)");
  }
  net::Policy p = net::Policy::from_json(value, "network");
  if (caps.check_network) caps.check_network(p);
  return p;
}

std::map<std::string, std::string> parse_labels_body(const json& body) {
  check_object(body, {"labels"}, "the request");
  if (!body.contains("labels")) throw bad("labels", "is required");
  return string_map(body, "labels", 64, 256, valid_label_key,
                    "1 to 63 of letters, digits, '.', '_', '-', '/'");
}

std::pair<std::string, std::string> parse_label_selector(const std::string& text) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw bad("label", "\"" + text + "\" must look like key=value");
  }
  return {text.substr(0, eq), text.substr(eq + 1)};
}

json Sandbox::to_api() const {
  json j = {
      {"id", id},
      {"name", spec.name.empty() ? json(nullptr) : json(spec.name)},
      {"labels", spec.labels},
      {"image", spec.image},
      {"image_id", spec.image_id.empty() ? spec.image : spec.image_id},
      {"runtime", spec.runtime},
      {"state", to_string(state)},
      {"error", error ? error->to_json() : json(nullptr)},
      {"cpus", spec.millicpus ? json(static_cast<double>(*spec.millicpus) / 1000) : json(nullptr)},
      {"memory", or_null(spec.memory)},
      {"pids", or_null(spec.pids)},
      {"disk", or_null(spec.disk)},
      {"env", spec.env},
      {"workdir", spec.workdir},
      {"user", spec.user},
      {"auto_stop_minutes", or_null(spec.auto_stop_minutes)},
      {"auto_delete_minutes", or_null(spec.auto_delete_minutes)},
      {"auto_archive_minutes", or_null(spec.auto_archive_minutes)},
      {"ephemeral", spec.ephemeral},
      {"snapshot", spec.snapshot.empty() ? json(nullptr) : json(spec.snapshot)},
      {"network", network_to_api()},
      {"forked_from", forked_from.empty() ? json(nullptr) : json(forked_from)},
      {"public_ports", public_ports},
      {"created_at", time_or_null(created_at)},
      {"started_at", time_or_null(started_at)},
      {"stopped_at", time_or_null(stopped_at)},
      {"last_activity_at", time_or_null(last_activity_at)}};
  return j;
}

json Sandbox::network_to_api() const {
  // Without a network a box has only loopback: policy none, no address.
  json j = spec.network.value_or(net::Policy{.mode = net::Policy::Mode::none}).to_json();
  std::string address = location.is_object() ? location.value("address", "") : "";
  bool runs = state == State::started || state == State::paused;
  j["address"] = address.empty() || !runs ? json(nullptr) : json(address);
  return j;
}

json Sandbox::to_doc() const {
  json spec_doc = {{"image", spec.image},
                   {"image_id", spec.image_id},
                   {"runtime", spec.runtime},
                   {"name", spec.name},
                   {"labels", spec.labels},
                   {"env", spec.env},
                   {"millicpus", or_null(spec.millicpus)},
                   {"memory", or_null(spec.memory)},
                   {"pids", or_null(spec.pids)},
                   {"disk", or_null(spec.disk)},
                   {"workdir", spec.workdir},
                   {"user", spec.user},
                   {"auto_stop_minutes", or_null(spec.auto_stop_minutes)},
                   {"auto_delete_minutes", or_null(spec.auto_delete_minutes)},
                   {"auto_archive_minutes", or_null(spec.auto_archive_minutes)},
                   {"ephemeral", spec.ephemeral},
                   {"snapshot", spec.snapshot},
                   {"network", spec.network ? spec.network->to_json() : json(nullptr)},
                   {"image_env", spec.image_env},
                   {"image_workdir", spec.image_workdir},
                   {"image_user", spec.image_user}};
  return {{"spec", spec_doc},
          {"state", to_string(state)},
          {"error", error ? error->to_json() : json(nullptr)},
          {"created_at", created_at},
          {"started_at", started_at},
          {"stopped_at", stopped_at},
          {"last_activity_at", last_activity_at},
          {"location", location},
          {"sessions", sessions},
          {"forked_from", forked_from},
          {"preview_generation", preview_generation},
          {"public_ports", public_ports}};
}

Sandbox Sandbox::from_doc(const std::string& id, const json& doc) {
  Sandbox s;
  s.id = id;
  const json& sp = doc.at("spec");
  auto opt_u = [&](const char* k) -> std::optional<uint64_t> {
    return sp.contains(k) && !sp[k].is_null() ? std::optional(sp[k].get<uint64_t>()) : std::nullopt;
  };
  auto opt_d = [&](const char* k) -> std::optional<double> {
    return sp.contains(k) && !sp[k].is_null() ? std::optional(sp[k].get<double>()) : std::nullopt;
  };
  s.spec.image = sp.value("image", "host");
  s.spec.image_id = sp.value("image_id", "");
  s.spec.image_env = sp.value("image_env", std::vector<std::string>{});
  s.spec.image_workdir = sp.value("image_workdir", "");
  s.spec.image_user = sp.value("image_user", "");
  s.spec.runtime = sp.value("runtime", "container");
  s.spec.name = sp.value("name", "");
  s.spec.labels = sp.value("labels", std::map<std::string, std::string>{});
  s.spec.env = sp.value("env", std::map<std::string, std::string>{});
  s.spec.millicpus = opt_u("millicpus");
  s.spec.memory = opt_u("memory");
  s.spec.pids = opt_u("pids");
  s.spec.disk = opt_u("disk");
  s.spec.workdir = sp.value("workdir", "");
  s.spec.user = sp.value("user", "");
  s.spec.auto_stop_minutes = opt_d("auto_stop_minutes");
  s.spec.auto_delete_minutes = opt_d("auto_delete_minutes");
  s.spec.auto_archive_minutes = opt_d("auto_archive_minutes");
  s.spec.ephemeral = sp.value("ephemeral", false);
  s.spec.snapshot = sp.value("snapshot", "");
  if (sp.contains("network") && !sp["network"].is_null()) {
    s.spec.network = net::Policy::from_json(sp["network"]);
  }
  s.forked_from = doc.value("forked_from", "");
  s.preview_generation = doc.value("preview_generation", uint64_t{0});
  s.public_ports = doc.value("public_ports", std::set<int>{});
  s.state = state_from_string(doc.value("state", "error")).value_or(State::error);
  if (doc.contains("error") && !doc["error"].is_null()) s.error = Error::from_json(doc["error"]);
  s.created_at = doc.value("created_at", int64_t{0});
  s.started_at = doc.value("started_at", int64_t{0});
  s.stopped_at = doc.value("stopped_at", int64_t{0});
  s.last_activity_at = doc.value("last_activity_at", int64_t{0});
  s.location = doc.value("location", json(nullptr));
  s.sessions = doc.value("sessions", json::array());
  if (!s.sessions.is_array()) s.sessions = json::array();
  return s;
}

json Snapshot::to_api() const {
  return {{"id", id},
          {"name", name},
          {"sandbox_id", sandbox_id},
          {"image", image},
          {"image_id", image_id},
          {"size", size},
          {"created_at", time_or_null(created_at)}};
}

json Snapshot::to_doc() const {
  return {{"sandbox_id", sandbox_id},
          {"image", image},
          {"image_id", image_id},
          {"image_env", image_env},
          {"image_workdir", image_workdir},
          {"image_user", image_user},
          {"size", size},
          {"created_at", created_at},
          {"internal", internal}};
}

Snapshot Snapshot::from_doc(const std::string& snapshot_id, const std::string& snapshot_name,
                            const json& doc) {
  Snapshot s;
  s.id = snapshot_id;
  s.name = snapshot_name;
  s.sandbox_id = doc.value("sandbox_id", "");
  s.image = doc.value("image", "");
  s.image_id = doc.value("image_id", "");
  s.image_env = doc.value("image_env", std::vector<std::string>{});
  s.image_workdir = doc.value("image_workdir", "");
  s.image_user = doc.value("image_user", "");
  s.size = doc.value("size", uint64_t{0});
  s.created_at = doc.value("created_at", int64_t{0});
  s.internal = doc.value("internal", false);
  return s;
}

}  // namespace pitbox::control
