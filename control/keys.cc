#include "control/keys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sys/error.h"
#include "sys/fs.h"
#include "sys/random.h"
#include "sys/text.h"

namespace pitbox::control {

using nlohmann::json;

json key_to_api(const KeyRecord& k) {
  return {{"id", k.id},
          {"name", k.name},
          {"admin", k.admin},
          {"created_at", sys::format_time(k.created_at_ms)}};
}

std::pair<KeyRecord, std::string> Keys::make(const std::string& name, bool admin) {
  std::string key = "pb_" + sys::random_base32(43);
  KeyRecord r{"key-" + sys::random_base32(12), name, sys::sha256_hex(key), sys::now_ms(), admin};
  store_.put_key(r);
  return {r, key};
}

std::string Keys::ensure_admin(const std::string& path) {
  if (sys::exists(path)) {
    std::string key = sys::read_file(path);
    while (!key.empty() && (key.back() == '\n' || key.back() == ' ')) key.pop_back();
    if (store_.find_key_by_hash(sys::sha256_hex(key))) return "";
    // The file outlived its store (a new database): register the key it holds again.
    KeyRecord r{"key-" + sys::random_base32(12), "admin", sys::sha256_hex(key), sys::now_ms(),
                true};
    store_.put_key(r);
    return "";
  }
  auto [record, key] = make("admin", true);
  sys::make_dirs(sys::split_parent(path).first, 0700);
  sys::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd || !sys::write_all(fd.get(), key + "\n")) throw_errno("writing the admin key to " + path);
  return key;
}

std::optional<KeyRecord> Keys::authenticate(const std::string& token) {
  if (token.rfind("pb_", 0) != 0 || token.size() != 46) return std::nullopt;
  std::string hash = sys::sha256_hex(token);
  if (auto it = cache_.find(hash); it != cache_.end()) return it->second;
  auto found = store_.find_key_by_hash(hash);
  if (found) cache_[hash] = *found;
  return found;
}

json Keys::create(const json& body) {
  if (!body.is_object()) throw invalid_argument("the request must be a JSON object");
  for (const auto& [k, v] : body.items()) {
    if (k != "name") throw invalid_argument("unknown field \"" + k + "\"", {{"field", k}});
  }
  auto it = body.find("name");
  if (it == body.end() || !it->is_string() || it->get<std::string>().empty() ||
      it->get<std::string>().size() > 100) {
    throw invalid_argument("\"name\" must be a string of 1 to 100 characters", {{"field", "name"}});
  }
  std::string name = it->get<std::string>();
  auto [record, key] = make(name, false);
  json j = key_to_api(record);
  j["key"] = key;
  return j;
}

json Keys::list(size_t limit, const std::string& cursor) {
  json items = json::array();
  bool past = cursor.empty();
  std::string next;
  for (const auto& k : store_.list_keys()) {
    if (!past) {
      past = k.id == cursor;
      continue;
    }
    if (items.size() == limit) {
      next = items.back()["id"];
      break;
    }
    items.push_back(key_to_api(k));
  }
  return {{"items", items}, {"next_cursor", next.empty() ? json(nullptr) : json(next)}};
}

void Keys::remove(const std::string& id) {
  if (!store_.delete_key(id)) throw not_found("key " + id + " not found");
  for (auto it = cache_.begin(); it != cache_.end();) {
    it = it->second.id == id ? cache_.erase(it) : std::next(it);
  }
}

}  // namespace pitbox::control
