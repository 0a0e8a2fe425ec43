#include "control/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <limits>
#include <string_view>
#include <utility>

#include "sys/error.h"

namespace pitbox::control {
namespace {

// The schema this code writes. Increase it with every change to the tables, and teach
// migrate_schema() to bring older databases up to it.
constexpr int64_t kSchemaVersion = 2;

constexpr char kCreateMetaTable[] = R"sql(
  CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
  )
)sql";

constexpr char kCreateTables[] = R"sql(
  CREATE TABLE sandboxes (
    id TEXT PRIMARY KEY,
    name TEXT UNIQUE,  -- NULL for an unnamed sandbox; NULLs never collide
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    doc TEXT NOT NULL
  );
  CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    admin INTEGER NOT NULL
  );
  CREATE TABLE snapshots (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    doc TEXT NOT NULL
  );
  CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    status INTEGER NOT NULL,
    error TEXT NOT NULL
  );
)sql";

// Version 1 -> 2: snapshots.
constexpr char kAddSnapshots[] = R"sql(
  CREATE TABLE snapshots (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    doc TEXT NOT NULL
  );
  UPDATE meta SET value = 2 WHERE key = 'schema_version';
)sql";

// Failures that may go away by themselves (a lock held too long, a full or failing disk) are
// `unavailable`; anything else means a bug or a damaged database.
ErrorCode error_code_for(int result_code) {
  switch (result_code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PROTOCOL:
      return ErrorCode::unavailable;
    default:
      return ErrorCode::internal;
  }
}

// "sqlite: <what>: <SQLite's message>".
Error sqlite_error(sqlite3* db, int result_code, std::string_view what) {
  const char* message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(result_code);
  return Error(error_code_for(result_code),
               "sqlite: " + std::string(what) + ": " + std::string(message));
}

// Runs SQL text that returns no rows; for the one-time setup only (operations use prepared
// statements).
void execute(sqlite3* db, const char* sql, std::string_view what) {
  int result = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  if (result != SQLITE_OK) throw sqlite_error(db, result, what);
}

SqliteStore::StatementHandle prepare_statement(sqlite3* db, const char* sql) {
  sqlite3_stmt* statement = nullptr;
  int result = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &statement, nullptr);
  SqliteStore::StatementHandle handle(statement);
  if (result != SQLITE_OK) throw sqlite_error(db, result, "prepare \"" + std::string(sql) + "\"");
  return handle;
}

// One use of a prepared statement: binds parameters in order, steps, reads columns, and resets
// the statement (clearing its parameters) when it goes, ready for the next use.
class Query {
 public:
  Query(sqlite3* db, sqlite3_stmt* statement, std::string_view what)
      : db_(db), statement_(statement), what_(what) {}
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;
  ~Query() {
    sqlite3_reset(statement_);
    sqlite3_clear_bindings(statement_);
  }

  Query& bind_int64(int64_t value) {
    return check_bind(sqlite3_bind_int64(statement_, next_parameter_++, value));
  }
  Query& bind_text(std::string_view value) {
    return check_bind(sqlite3_bind_text64(statement_, next_parameter_++, value.data(), value.size(),
                                          SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  // "" binds NULL.
  Query& bind_text_or_null(std::string_view value) {
    if (!value.empty()) return bind_text(value);
    return check_bind(sqlite3_bind_null(statement_, next_parameter_++));
  }

  // One step; SQLite's result code as it is.
  int step() { return sqlite3_step(statement_); }
  // True when a row is ready to read, false when there are no more. Throws on failure.
  bool next_row() {
    int result = step();
    if (result == SQLITE_ROW) return true;
    if (result == SQLITE_DONE) return false;
    fail(result);
  }
  // Runs a statement that returns no rows, then resets it at once so that it holds nothing
  // while the rest of a transaction goes on.
  void run() {
    int result = step();
    if (result != SQLITE_DONE) fail(result);
    sqlite3_reset(statement_);
  }
  [[noreturn]] void fail(int result) const { throw sqlite_error(db_, result, what_); }

  int64_t int64_column(int index) const { return sqlite3_column_int64(statement_, index); }
  // NULL reads as "".
  std::string text_column(int index) const {
    const unsigned char* text = sqlite3_column_text(statement_, index);
    if (text == nullptr) return "";
    return std::string(reinterpret_cast<const char*>(text),
                       static_cast<size_t>(sqlite3_column_bytes(statement_, index)));
  }

 private:
  Query& check_bind(int result) {
    if (result != SQLITE_OK) fail(result);
    return *this;
  }

  sqlite3* db_;
  sqlite3_stmt* statement_;
  std::string_view what_;
  int next_parameter_ = 1;
};

// BEGIN IMMEDIATE when made; ROLLBACK when it goes unless commit() succeeded.
class Transaction {
 public:
  Transaction(sqlite3* db, sqlite3_stmt* begin, sqlite3_stmt* commit, sqlite3_stmt* rollback)
      : db_(db), commit_(commit), rollback_(rollback) {
    Query(db_, begin, "begin transaction").run();
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    // A failed COMMIT may have ended the transaction already.
    if (!committed_ && sqlite3_get_autocommit(db_) == 0) {
      sqlite3_step(rollback_);
      sqlite3_reset(rollback_);
    }
  }

  void commit() {
    Query(db_, commit_, "commit transaction").run();
    committed_ = true;
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* commit_;
  sqlite3_stmt* rollback_;
  bool committed_ = false;
};

// SQLite would create a missing database with mode 0644; create it first, for its owner only.
// SQLite gives the -wal and -shm files the mode of the database. O_EXCL: an existing database
// is never opened here, because closing any fd of a file drops the process's locks on it.
void create_private_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ::close(fd);
  } else if (errno != EEXIST) {
    throw_errno("create database " + path);
  }
}

void configure_connection(sqlite3* db) {
  sqlite3_extended_result_codes(db, 1);
  int result = sqlite3_busy_timeout(db, 5000);
  if (result != SQLITE_OK) throw sqlite_error(db, result, "set busy timeout");

  auto statement = prepare_statement(db, "PRAGMA journal_mode = WAL");
  Query query(db, statement.get(), "set WAL journal mode");
  std::string mode = query.next_row() ? query.text_column(0) : "";
  if (mode != "wal") {
    throw internal_error("sqlite: set WAL journal mode: the database stays in mode \"" + mode +
                         "\"");
  }
  execute(db, "PRAGMA synchronous = NORMAL", "set synchronous = NORMAL");
  execute(db, "PRAGMA foreign_keys = ON", "enable foreign keys");
}

std::optional<int64_t> read_schema_version(sqlite3* db) {
  auto statement = prepare_statement(db, "SELECT value FROM meta WHERE key = 'schema_version'");
  Query query(db, statement.get(), "read schema version");
  if (!query.next_row()) return std::nullopt;
  return query.int64_column(0);
}

// Creates the tables of a new database, or checks that an existing one is one this code reads.
// One IMMEDIATE transaction, so that two processes opening a new database create it once; when
// this throws, closing the connection rolls it back.
void migrate_schema(sqlite3* db, const std::string& path) {
  execute(db, "BEGIN IMMEDIATE", "begin schema transaction");
  execute(db, kCreateMetaTable, "create table meta");
  std::optional<int64_t> version = read_schema_version(db);
  if (!version) {
    execute(db, kCreateTables, "create tables");
    auto statement =
        prepare_statement(db, "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)");
    Query(db, statement.get(), "write schema version").bind_int64(kSchemaVersion).run();
  } else if (*version > kSchemaVersion) {
    throw internal_error("database " + path + " has schema version " + std::to_string(*version) +
                         ", but this pitbox knows versions up to " +
                         std::to_string(kSchemaVersion) + ": it was written by a newer pitbox");
  } else if (*version == 1) {
    execute(db, kAddSnapshots, "add table snapshots");
  } else if (*version < 1) {
    throw internal_error("database " + path + " has an invalid schema version " +
                         std::to_string(*version));
  }
  execute(db, "COMMIT", "commit schema transaction");
}

// Columns: id, name, state, created_at, doc.
SandboxRecord read_sandbox(const Query& query) {
  SandboxRecord record{
      .id = query.text_column(0),
      .name = query.text_column(1),
      .state = query.text_column(2),
      .created_at_ms = query.int64_column(3),
  };
  try {
    record.doc = nlohmann::json::parse(query.text_column(4));
  } catch (const nlohmann::json::exception& e) {
    throw internal_error("sqlite: read sandbox " + record.id +
                         ": its doc is not JSON: " + e.what());
  }
  return record;
}

// Columns: id, name, hash, created_at, admin.
KeyRecord read_key(const Query& query) {
  return KeyRecord{
      .id = query.text_column(0),
      .name = query.text_column(1),
      .hash = query.text_column(2),
      .created_at_ms = query.int64_column(3),
      .admin = query.int64_column(4) != 0,
  };
}

// Columns: id, time, key_id, action, target, status, error.
AuditEntry read_audit_entry(const Query& query) {
  return AuditEntry{
      .id = query.int64_column(0),
      .time_ms = query.int64_column(1),
      .key_id = query.text_column(2),
      .action = query.text_column(3),
      .target = query.text_column(4),
      .status = static_cast<int>(query.int64_column(5)),
      .error = query.text_column(6),
  };
}

int64_t clamp_to_int64(size_t value) {
  return static_cast<int64_t>(
      std::min<size_t>(value, static_cast<size_t>(std::numeric_limits<int64_t>::max())));
}

}  // namespace

void SqliteStore::CloseDatabase::operator()(sqlite3* db) const { sqlite3_close_v2(db); }

void SqliteStore::FinalizeStatement::operator()(sqlite3_stmt* statement) const {
  sqlite3_finalize(statement);
}

std::unique_ptr<SqliteStore> SqliteStore::open(const std::string& path, size_t max_audit_entries) {
  if (max_audit_entries == 0) throw invalid_argument("the audit log must keep at least 1 entry");
  create_private_file(path);
  sqlite3* raw_db = nullptr;
  int result =
      sqlite3_open_v2(path.c_str(), &raw_db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  DatabaseHandle db(raw_db);  // closed on failure too
  if (result != SQLITE_OK) throw sqlite_error(db.get(), result, "open " + path);
  configure_connection(db.get());
  migrate_schema(db.get(), path);
  return std::make_unique<SqliteStore>(ConstructionKey(), std::move(db), max_audit_entries);
}

SqliteStore::SqliteStore(ConstructionKey, DatabaseHandle db, size_t max_audit_entries)
    : db_(std::move(db)), max_audit_entries_(max_audit_entries) {
  sqlite3* db_ptr = db_.get();
  begin_ = prepare_statement(db_ptr, "BEGIN IMMEDIATE");
  commit_ = prepare_statement(db_ptr, "COMMIT");
  rollback_ = prepare_statement(db_ptr, "ROLLBACK");

  // An upsert, not INSERT OR REPLACE: REPLACE would delete another sandbox with the same name.
  put_sandbox_ = prepare_statement(db_ptr, R"sql(
      INSERT INTO sandboxes (id, name, state, created_at, doc) VALUES (?1, ?2, ?3, ?4, ?5)
      ON CONFLICT (id) DO UPDATE SET
        name = excluded.name, state = excluded.state, created_at = excluded.created_at,
        doc = excluded.doc)sql");
  get_sandbox_ = prepare_statement(
      db_ptr, "SELECT id, name, state, created_at, doc FROM sandboxes WHERE id = ?1");
  find_sandbox_by_name_ = prepare_statement(
      db_ptr, "SELECT id, name, state, created_at, doc FROM sandboxes WHERE name = ?1");
  list_sandboxes_ = prepare_statement(
      db_ptr, "SELECT id, name, state, created_at, doc FROM sandboxes ORDER BY created_at, id");
  delete_sandbox_ = prepare_statement(db_ptr, "DELETE FROM sandboxes WHERE id = ?1");
  put_snapshot_ = prepare_statement(db_ptr, R"sql(
      INSERT INTO snapshots (id, name, created_at, doc) VALUES (?1, ?2, ?3, ?4)
      ON CONFLICT (id) DO UPDATE SET name = ?2, created_at = ?3, doc = ?4)sql");
  list_snapshots_ = prepare_statement(
      db_ptr, "SELECT id, name, created_at, doc FROM snapshots ORDER BY created_at, id");
  delete_snapshot_ = prepare_statement(db_ptr, "DELETE FROM snapshots WHERE id = ?1");

  put_key_ = prepare_statement(db_ptr, R"sql(
      INSERT INTO keys (id, name, hash, created_at, admin) VALUES (?1, ?2, ?3, ?4, ?5)
      ON CONFLICT (id) DO UPDATE SET
        name = excluded.name, hash = excluded.hash, created_at = excluded.created_at,
        admin = excluded.admin)sql");
  find_key_by_hash_ = prepare_statement(
      db_ptr, "SELECT id, name, hash, created_at, admin FROM keys WHERE hash = ?1");
  list_keys_ = prepare_statement(
      db_ptr, "SELECT id, name, hash, created_at, admin FROM keys ORDER BY created_at, id");
  delete_key_ = prepare_statement(db_ptr, "DELETE FROM keys WHERE id = ?1");

  append_audit_ = prepare_statement(db_ptr, R"sql(
      INSERT INTO audit (time, key_id, action, target, status, error)
      VALUES (?1, ?2, ?3, ?4, ?5, ?6))sql");
  trim_audit_ = prepare_statement(db_ptr, "DELETE FROM audit WHERE id <= ?1");
  list_audit_ = prepare_statement(db_ptr, R"sql(
      SELECT id, time, key_id, action, target, status, error FROM audit
      WHERE id < ?1 ORDER BY id DESC LIMIT ?2)sql");
}

void SqliteStore::put_sandbox(const SandboxRecord& record) {
  std::string doc;
  try {
    doc = record.doc.dump();
  } catch (const nlohmann::json::exception& e) {  // a string that is not UTF-8
    throw invalid_argument("sandbox " + record.id + ": its doc cannot be stored: " + e.what());
  }
  Query query(db_.get(), put_sandbox_.get(), "put sandbox");
  query.bind_text(record.id)
      .bind_text_or_null(record.name)
      .bind_text(record.state)
      .bind_int64(record.created_at_ms)
      .bind_text(doc);
  int result = query.step();
  // The upsert settles a clash of ids, so a failed UNIQUE constraint can only be the name.
  if (result == SQLITE_CONSTRAINT_UNIQUE) {
    throw Error(ErrorCode::conflict, "a sandbox named \"" + record.name + "\" already exists");
  }
  if (result != SQLITE_DONE) query.fail(result);
}

std::optional<SandboxRecord> SqliteStore::get_sandbox(const std::string& id) {
  Query query(db_.get(), get_sandbox_.get(), "get sandbox");
  query.bind_text(id);
  if (!query.next_row()) return std::nullopt;
  return read_sandbox(query);
}

std::optional<SandboxRecord> SqliteStore::find_sandbox_by_name(const std::string& name) {
  Query query(db_.get(), find_sandbox_by_name_.get(), "find sandbox by name");
  query.bind_text(name);  // "" never matches: unnamed sandboxes have NULL
  if (!query.next_row()) return std::nullopt;
  return read_sandbox(query);
}

std::vector<SandboxRecord> SqliteStore::list_sandboxes() {
  Query query(db_.get(), list_sandboxes_.get(), "list sandboxes");
  std::vector<SandboxRecord> records;
  while (query.next_row()) records.push_back(read_sandbox(query));
  return records;
}

bool SqliteStore::delete_sandbox(const std::string& id) {
  Query(db_.get(), delete_sandbox_.get(), "delete sandbox").bind_text(id).run();
  return sqlite3_changes64(db_.get()) > 0;
}

void SqliteStore::put_snapshot(const SnapshotRecord& record) {
  Query query(db_.get(), put_snapshot_.get(), "put snapshot");
  query.bind_text(record.id)
      .bind_text(record.name)
      .bind_int64(record.created_at_ms)
      .bind_text(record.doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  int result = query.step();
  if (result == SQLITE_CONSTRAINT_UNIQUE) {
    throw Error(ErrorCode::conflict, "a snapshot named \"" + record.name + "\" already exists",
                {{"field", "name"}});
  }
  if (result != SQLITE_DONE) query.fail(result);
}

std::vector<SnapshotRecord> SqliteStore::list_snapshots() {
  Query query(db_.get(), list_snapshots_.get(), "list snapshots");
  std::vector<SnapshotRecord> records;
  while (query.next_row()) {
    SnapshotRecord r{.id = query.text_column(0),
                     .name = query.text_column(1),
                     .created_at_ms = query.int64_column(2)};
    try {
      r.doc = nlohmann::json::parse(query.text_column(3));
    } catch (const nlohmann::json::exception& e) {
      throw internal_error("sqlite: read snapshot " + r.id + ": its doc is not JSON: " + e.what());
    }
    records.push_back(std::move(r));
  }
  return records;
}

bool SqliteStore::delete_snapshot(const std::string& id) {
  Query(db_.get(), delete_snapshot_.get(), "delete snapshot").bind_text(id).run();
  return sqlite3_changes64(db_.get()) > 0;
}

void SqliteStore::put_key(const KeyRecord& key) {
  Query query(db_.get(), put_key_.get(), "put key");
  query.bind_text(key.id)
      .bind_text(key.name)
      .bind_text(key.hash)
      .bind_int64(key.created_at_ms)
      .bind_int64(key.admin ? 1 : 0);
  int result = query.step();
  if (result == SQLITE_CONSTRAINT_UNIQUE) {
    throw Error(ErrorCode::conflict, "another key has the same hash as key " + key.id);
  }
  if (result != SQLITE_DONE) query.fail(result);
}

std::optional<KeyRecord> SqliteStore::find_key_by_hash(const std::string& hash) {
  Query query(db_.get(), find_key_by_hash_.get(), "find key by hash");
  query.bind_text(hash);
  if (!query.next_row()) return std::nullopt;
  return read_key(query);
}

std::vector<KeyRecord> SqliteStore::list_keys() {
  Query query(db_.get(), list_keys_.get(), "list keys");
  std::vector<KeyRecord> keys;
  while (query.next_row()) keys.push_back(read_key(query));
  return keys;
}

bool SqliteStore::delete_key(const std::string& id) {
  Query(db_.get(), delete_key_.get(), "delete key").bind_text(id).run();
  return sqlite3_changes64(db_.get()) > 0;
}

int64_t SqliteStore::append_audit(AuditEntry entry) {
  Transaction transaction(db_.get(), begin_.get(), commit_.get(), rollback_.get());
  Query(db_.get(), append_audit_.get(), "append audit entry")
      .bind_int64(entry.time_ms)
      .bind_text(entry.key_id)
      .bind_text(entry.action)
      .bind_text(entry.target)
      .bind_int64(entry.status)
      .bind_text(entry.error)
      .run();
  entry.id = sqlite3_last_insert_rowid(db_.get());
  // Ids only grow, so the newest max_audit_entries entries are those above this bound.
  int64_t max_entries = clamp_to_int64(max_audit_entries_);
  if (entry.id > max_entries) {
    Query(db_.get(), trim_audit_.get(), "trim audit log").bind_int64(entry.id - max_entries).run();
  }
  transaction.commit();
  return entry.id;
}

std::vector<AuditEntry> SqliteStore::list_audit(int64_t before_id, size_t limit) {
  Query query(db_.get(), list_audit_.get(), "list audit entries");
  query.bind_int64(before_id == 0 ? std::numeric_limits<int64_t>::max() : before_id)
      .bind_int64(clamp_to_int64(limit));
  std::vector<AuditEntry> entries;
  while (query.next_row()) entries.push_back(read_audit_entry(query));
  return entries;
}

}  // namespace pitbox::control
