// API keys: "pb_" + 43 random base32 characters, stored only as SHA-256 hashes. The admin key
// is made at first start and written (0600) where the CLI on the same machine finds it.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "control/store.h"

namespace pitbox::control {

class Keys {
 public:
  explicit Keys(Store& store) : store_(store) {}

  // The admin key at `path` (made, registered and written when missing). Returns the key when
  // this call made it (to be shown once), "" otherwise.
  std::string ensure_admin(const std::string& path);
  // The key a bearer token stands for, or nullopt when it is unknown or revoked.
  std::optional<KeyRecord> authenticate(const std::string& token);

  // {"name"} -> {"id", "name", "created_at", "key"} (the only time the key is shown).
  nlohmann::json create(const nlohmann::json& body);
  nlohmann::json list(size_t limit, const std::string& cursor);
  void remove(const std::string& id);

 private:
  std::pair<KeyRecord, std::string> make(const std::string& name, bool admin);
  Store& store_;
  std::map<std::string, KeyRecord> cache_;  // by hash
};

nlohmann::json key_to_api(const KeyRecord& k);

}  // namespace pitbox::control
