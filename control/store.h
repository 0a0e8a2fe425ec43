// Where the control plane keeps what must survive a restart: sandboxes, snapshots, API keys
// and the audit log. One machine uses SQLite (sqlite_store.h); a cluster will use PostgreSQL behind
// the same interface. Calls are synchronous and made from one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace pitbox::control {

// A sandbox as stored: a few fields the store indexes, and the whole object as JSON.
struct SandboxRecord {
  std::string id;    // "sb-" + 12 base32 characters
  std::string name;  // "" = no name; otherwise unique among sandboxes
  std::string state;
  int64_t created_at_ms = 0;
  nlohmann::json doc;  // everything else (see control/sandbox.h); opaque to the store
};

// A snapshot of a sandbox's files (control/snapshots.h): its id ("sn-" + 12 base32
// characters), its name (unique among snapshots) and the whole object as JSON.
struct SnapshotRecord {
  std::string id;
  std::string name;
  int64_t created_at_ms = 0;
  nlohmann::json doc;
};

struct KeyRecord {
  std::string id;  // "key-" + 12 base32 characters
  std::string name;
  std::string hash;  // hex SHA-256 of the key; the key itself is never stored
  int64_t created_at_ms = 0;
  bool admin = false;  // the key made at first start
};

struct AuditEntry {
  int64_t id = 0;  // assigned by the store, increasing
  int64_t time_ms = 0;
  std::string key_id;  // who ("" when no key was involved)
  std::string action;  // "POST /v1/sandboxes", "sandbox.stop (auto-stop)", ...
  std::string target;  // a sandbox id, key id, ...
  int status = 0;      // HTTP status, or 0 for actions of the daemon itself
  std::string error;   // the error code, "" on success
};

class Store {
 public:
  virtual ~Store() = default;

  // Inserts or replaces the sandbox `record.id`. Throws Error(conflict) naming the name when
  // another sandbox has the same non-empty name, leaving the store unchanged.
  virtual void put_sandbox(const SandboxRecord& record) = 0;
  virtual std::optional<SandboxRecord> get_sandbox(const std::string& id) = 0;
  virtual std::optional<SandboxRecord> find_sandbox_by_name(const std::string& name) = 0;
  // Every sandbox, oldest first.
  virtual std::vector<SandboxRecord> list_sandboxes() = 0;
  // False when there was no such sandbox.
  virtual bool delete_sandbox(const std::string& id) = 0;

  // Inserts or replaces snapshot `record.id`; conflict naming the name when another snapshot
  // has it.
  virtual void put_snapshot(const SnapshotRecord& record) = 0;
  // Oldest first.
  virtual std::vector<SnapshotRecord> list_snapshots() = 0;
  virtual bool delete_snapshot(const std::string& id) = 0;

  virtual void put_key(const KeyRecord& key) = 0;
  virtual std::optional<KeyRecord> find_key_by_hash(const std::string& hash) = 0;
  // Oldest first.
  virtual std::vector<KeyRecord> list_keys() = 0;
  virtual bool delete_key(const std::string& id) = 0;

  // Sets entry.id and stores the entry. Keeps at most `max_audit_entries` (the oldest go).
  virtual int64_t append_audit(AuditEntry entry) = 0;
  // Newest first: up to `limit` entries with id < `before_id` (0 = from the newest).
  virtual std::vector<AuditEntry> list_audit(int64_t before_id, size_t limit) = 0;
};

}  // namespace pitbox::control
