// SqliteStore: the Store of a single machine, one SQLite database file in WAL mode.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "control/store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace pitbox::control {

class SqliteStore final : public Store {
 public:
  // Opens the database at `path`, creating it (mode 0600) and its tables when missing. Throws
  // Error when the file cannot be opened or was written by a newer pitbox (a newer schema).
  // The audit log keeps the newest `max_audit_entries` entries (at least 1).
  static std::unique_ptr<SqliteStore> open(const std::string& path,
                                           size_t max_audit_entries = 100000);

  void put_sandbox(const SandboxRecord& record) override;
  std::optional<SandboxRecord> get_sandbox(const std::string& id) override;
  std::optional<SandboxRecord> find_sandbox_by_name(const std::string& name) override;
  std::vector<SandboxRecord> list_sandboxes() override;
  bool delete_sandbox(const std::string& id) override;

  void put_snapshot(const SnapshotRecord& record) override;
  std::vector<SnapshotRecord> list_snapshots() override;
  bool delete_snapshot(const std::string& id) override;
  void put_key(const KeyRecord& key) override;
  std::optional<KeyRecord> find_key_by_hash(const std::string& hash) override;
  std::vector<KeyRecord> list_keys() override;
  bool delete_key(const std::string& id) override;

  int64_t append_audit(AuditEntry entry) override;
  std::vector<AuditEntry> list_audit(int64_t before_id, size_t limit) override;

  struct CloseDatabase {
    void operator()(sqlite3* db) const;
  };
  struct FinalizeStatement {
    void operator()(sqlite3_stmt* statement) const;
  };
  using DatabaseHandle = std::unique_ptr<sqlite3, CloseDatabase>;
  using StatementHandle = std::unique_ptr<sqlite3_stmt, FinalizeStatement>;

  // Only open() can make the key, so only open() can construct.
  class ConstructionKey {
    friend class SqliteStore;
    ConstructionKey() = default;
  };
  SqliteStore(ConstructionKey, DatabaseHandle db, size_t max_audit_entries);

 private:
  // Declared first so that it is closed after every statement is finalized.
  DatabaseHandle db_;
  size_t max_audit_entries_;

  StatementHandle begin_;
  StatementHandle commit_;
  StatementHandle rollback_;
  StatementHandle put_sandbox_;
  StatementHandle get_sandbox_;
  StatementHandle find_sandbox_by_name_;
  StatementHandle list_sandboxes_;
  StatementHandle delete_sandbox_;
  StatementHandle put_snapshot_;
  StatementHandle list_snapshots_;
  StatementHandle delete_snapshot_;
  StatementHandle put_key_;
  StatementHandle find_key_by_hash_;
  StatementHandle list_keys_;
  StatementHandle delete_key_;
  StatementHandle append_audit_;
  StatementHandle trim_audit_;
  StatementHandle list_audit_;
};

}  // namespace pitbox::control
