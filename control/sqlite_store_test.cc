#include "control/sqlite_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <cstdlib>

#include "sys/error.h"
#include "sys/fs.h"

namespace pitbox::control {
namespace {

// The Error that `action` throws; a test failure when it throws none.
template <typename Action>
Error error_from(Action&& action) {
  try {
    action();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no Error was thrown";
  return Error(ErrorCode::internal, "no error");
}

SandboxRecord make_sandbox(std::string id, std::string name, int64_t created_at_ms) {
  return SandboxRecord{
      .id = std::move(id),
      .name = std::move(name),
      .state = "running",
      .created_at_ms = created_at_ms,
      .doc = {{"image", "debian:12"}, {"limits", {{"memory", 512}, {"cpus", 1.5}}}},
  };
}

AuditEntry make_audit_entry(int n) {
  return AuditEntry{
      .time_ms = 1000 + n,
      .key_id = "key-aaaaaaaaaaaa",
      .action = "POST /v1/sandboxes",
      .target = "sb-" + std::to_string(n),
      .status = 201,
  };
}

std::vector<int64_t> ids_of(const std::vector<AuditEntry>& entries) {
  std::vector<int64_t> ids;
  for (const auto& entry : entries) ids.push_back(entry.id);
  return ids;
}

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/pitbox-store-test-XXXXXX";
    ASSERT_NE(::mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    path_ = dir_ + "/pitbox.db";
  }
  void TearDown() override { sys::remove_tree(dir_); }

  std::unique_ptr<SqliteStore> open_store(size_t max_audit_entries = 100000) {
    return SqliteStore::open(path_, max_audit_entries);
  }

  std::string dir_;
  std::string path_;
};

TEST_F(SqliteStoreTest, SandboxRoundTrip) {
  auto store = open_store();
  SandboxRecord web = make_sandbox("sb-bbbbbbbbbbbb", "web", 2000);
  SandboxRecord unnamed = make_sandbox("sb-aaaaaaaaaaaa", "", 2000);
  SandboxRecord oldest = make_sandbox("sb-cccccccccccc", "db", 1000);
  oldest.doc = nullptr;
  for (const auto& record : {web, unnamed, oldest}) store->put_sandbox(record);

  auto got = store->get_sandbox(web.id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->id, web.id);
  EXPECT_EQ(got->name, "web");
  EXPECT_EQ(got->state, "running");
  EXPECT_EQ(got->created_at_ms, 2000);
  EXPECT_EQ(got->doc, web.doc);
  EXPECT_EQ(store->get_sandbox(unnamed.id)->name, "");
  EXPECT_TRUE(store->get_sandbox(oldest.id)->doc.is_null());
  EXPECT_FALSE(store->get_sandbox("sb-zzzzzzzzzzzz"));

  EXPECT_EQ(store->find_sandbox_by_name("web")->id, web.id);
  EXPECT_FALSE(store->find_sandbox_by_name("nothing"));
  EXPECT_FALSE(store->find_sandbox_by_name(""));  // unnamed sandboxes are not found by name

  // Oldest first; the same created_at in id order.
  std::vector<std::string> listed;
  for (const auto& record : store->list_sandboxes()) listed.push_back(record.id);
  EXPECT_EQ(listed, (std::vector<std::string>{oldest.id, unnamed.id, web.id}));
}

TEST_F(SqliteStoreTest, KeyRoundTrip) {
  auto store = open_store();
  KeyRecord admin{.id = "key-bbbbbbbbbbbb",
                  .name = "admin",
                  .hash = std::string(64, 'a'),
                  .created_at_ms = 1000,
                  .admin = true};
  KeyRecord ci{
      .id = "key-aaaaaaaaaaaa", .name = "ci", .hash = std::string(64, 'b'), .created_at_ms = 3000};
  store->put_key(ci);
  store->put_key(admin);

  auto got = store->find_key_by_hash(admin.hash);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->id, admin.id);
  EXPECT_EQ(got->name, "admin");
  EXPECT_EQ(got->hash, admin.hash);
  EXPECT_EQ(got->created_at_ms, 1000);
  EXPECT_TRUE(got->admin);
  EXPECT_FALSE(store->find_key_by_hash(ci.hash)->admin);
  EXPECT_FALSE(store->find_key_by_hash(std::string(64, 'c')));

  auto keys = store->list_keys();
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys[0].id, admin.id);
  EXPECT_EQ(keys[1].id, ci.id);
}

TEST_F(SqliteStoreTest, AuditRoundTrip) {
  auto store = open_store();
  AuditEntry entry{.time_ms = 1234,
                   .key_id = "key-aaaaaaaaaaaa",
                   .action = "POST /v1/sandboxes/sb-aaaaaaaaaaaa/stop",
                   .target = "sb-aaaaaaaaaaaa",
                   .status = 404,
                   .error = "not_found"};
  int64_t first_id = store->append_audit(entry);
  int64_t second_id = store->append_audit(AuditEntry{.time_ms = 1300, .action = "daemon.start"});
  EXPECT_GT(first_id, 0);
  EXPECT_GT(second_id, first_id);

  auto entries = store->list_audit(0, 10);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].id, second_id);
  EXPECT_EQ(entries[0].key_id, "");
  EXPECT_EQ(entries[0].status, 0);
  const AuditEntry& got = entries[1];
  EXPECT_EQ(got.id, first_id);
  EXPECT_EQ(got.time_ms, 1234);
  EXPECT_EQ(got.key_id, entry.key_id);
  EXPECT_EQ(got.action, entry.action);
  EXPECT_EQ(got.target, entry.target);
  EXPECT_EQ(got.status, 404);
  EXPECT_EQ(got.error, "not_found");
}

TEST_F(SqliteStoreTest, NameConflictLeavesTheOldRowIntact) {
  auto store = open_store();
  store->put_sandbox(make_sandbox("sb-aaaaaaaaaaaa", "web", 1000));
  // Any number of sandboxes may go without a name.
  store->put_sandbox(make_sandbox("sb-bbbbbbbbbbbb", "", 2000));
  store->put_sandbox(make_sandbox("sb-cccccccccccc", "", 3000));

  // A new sandbox taking the name.
  SandboxRecord clash = make_sandbox("sb-dddddddddddd", "web", 4000);
  Error error = error_from([&] { store->put_sandbox(clash); });
  EXPECT_EQ(error.code(), ErrorCode::conflict);
  EXPECT_EQ(error.message(), "a sandbox named \"web\" already exists");
  EXPECT_FALSE(store->get_sandbox(clash.id));

  // An existing sandbox renamed to it.
  SandboxRecord renamed = make_sandbox("sb-bbbbbbbbbbbb", "web", 2000);
  renamed.state = "stopped";
  EXPECT_EQ(error_from([&] { store->put_sandbox(renamed); }).code(), ErrorCode::conflict);
  auto unchanged = store->get_sandbox("sb-bbbbbbbbbbbb");
  ASSERT_TRUE(unchanged);
  EXPECT_EQ(unchanged->name, "");
  EXPECT_EQ(unchanged->state, "running");

  auto owner = store->find_sandbox_by_name("web");
  ASSERT_TRUE(owner);
  EXPECT_EQ(owner->id, "sb-aaaaaaaaaaaa");
  EXPECT_EQ(owner->doc, make_sandbox("", "", 0).doc);
  EXPECT_EQ(store->list_sandboxes().size(), 3u);
}

TEST_F(SqliteStoreTest, PutReplacesTheRecordWithTheSameId) {
  auto store = open_store();
  store->put_sandbox(make_sandbox("sb-aaaaaaaaaaaa", "web", 1000));
  SandboxRecord replacement = make_sandbox("sb-aaaaaaaaaaaa", "api", 1000);
  replacement.state = "stopped";
  replacement.doc["exit_code"] = 0;
  store->put_sandbox(replacement);

  auto sandboxes = store->list_sandboxes();
  ASSERT_EQ(sandboxes.size(), 1u);
  EXPECT_EQ(sandboxes[0].id, "sb-aaaaaaaaaaaa");
  EXPECT_EQ(sandboxes[0].name, "api");
  EXPECT_EQ(sandboxes[0].state, "stopped");
  EXPECT_EQ(sandboxes[0].doc, replacement.doc);
  EXPECT_FALSE(store->find_sandbox_by_name("web"));  // the old name is free again
  store->put_sandbox(make_sandbox("sb-bbbbbbbbbbbb", "web", 2000));

  KeyRecord key{.id = "key-aaaaaaaaaaaa", .name = "ci", .hash = "h1", .created_at_ms = 1};
  store->put_key(key);
  key.name = "ci-renamed";
  store->put_key(key);
  auto keys = store->list_keys();
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0].id, "key-aaaaaaaaaaaa");
  EXPECT_EQ(keys[0].name, "ci-renamed");
}

TEST_F(SqliteStoreTest, TwoKeysWithTheSameHashConflict) {
  auto store = open_store();
  store->put_key(KeyRecord{.id = "key-aaaaaaaaaaaa", .name = "a", .hash = "h"});
  Error error = error_from(
      [&] { store->put_key(KeyRecord{.id = "key-bbbbbbbbbbbb", .name = "b", .hash = "h"}); });
  EXPECT_EQ(error.code(), ErrorCode::conflict);
  EXPECT_EQ(store->find_key_by_hash("h")->id, "key-aaaaaaaaaaaa");
  EXPECT_EQ(store->list_keys().size(), 1u);
}

TEST_F(SqliteStoreTest, DeleteReturnsFalseForUnknownIds) {
  auto store = open_store();
  EXPECT_FALSE(store->delete_sandbox("sb-zzzzzzzzzzzz"));
  EXPECT_FALSE(store->delete_key("key-zzzzzzzzzzzz"));

  store->put_sandbox(make_sandbox("sb-aaaaaaaaaaaa", "web", 1000));
  store->put_key(KeyRecord{.id = "key-aaaaaaaaaaaa", .name = "ci", .hash = "h"});
  EXPECT_TRUE(store->delete_sandbox("sb-aaaaaaaaaaaa"));
  EXPECT_TRUE(store->delete_key("key-aaaaaaaaaaaa"));
  EXPECT_FALSE(store->delete_sandbox("sb-aaaaaaaaaaaa"));
  EXPECT_FALSE(store->delete_key("key-aaaaaaaaaaaa"));
  EXPECT_FALSE(store->get_sandbox("sb-aaaaaaaaaaaa"));
  EXPECT_FALSE(store->find_key_by_hash("h"));
  EXPECT_TRUE(store->list_sandboxes().empty());
  EXPECT_TRUE(store->list_keys().empty());
}

TEST_F(SqliteStoreTest, AuditPagesGoNewestFirst) {
  auto store = open_store();
  for (int n = 1; n <= 25; ++n) EXPECT_EQ(store->append_audit(make_audit_entry(n)), n);

  auto page1 = store->list_audit(0, 10);
  EXPECT_EQ(ids_of(page1), (std::vector<int64_t>{25, 24, 23, 22, 21, 20, 19, 18, 17, 16}));
  EXPECT_EQ(page1[0].target, "sb-25");
  auto page2 = store->list_audit(page1.back().id, 10);
  EXPECT_EQ(ids_of(page2), (std::vector<int64_t>{15, 14, 13, 12, 11, 10, 9, 8, 7, 6}));
  auto page3 = store->list_audit(page2.back().id, 10);
  EXPECT_EQ(ids_of(page3), (std::vector<int64_t>{5, 4, 3, 2, 1}));
  EXPECT_TRUE(store->list_audit(page3.back().id, 10).empty());
  EXPECT_TRUE(store->list_audit(0, 0).empty());
}

TEST_F(SqliteStoreTest, AuditLogKeepsOnlyTheNewestEntries) {
  auto store = open_store(5);
  for (int n = 1; n <= 12; ++n) store->append_audit(make_audit_entry(n));
  EXPECT_EQ(ids_of(store->list_audit(0, 100)), (std::vector<int64_t>{12, 11, 10, 9, 8}));

  // A smaller limit on a later open trims down to it at the next append.
  store.reset();
  store = open_store(2);
  EXPECT_EQ(store->append_audit(make_audit_entry(13)), 13);
  EXPECT_EQ(ids_of(store->list_audit(0, 100)), (std::vector<int64_t>{13, 12}));
}

TEST_F(SqliteStoreTest, AuditLogMustKeepAtLeastOneEntry) {
  EXPECT_EQ(error_from([&] { open_store(0); }).code(), ErrorCode::invalid_argument);
}

TEST_F(SqliteStoreTest, DataSurvivesReopening) {
  {
    auto store = open_store();
    store->put_sandbox(make_sandbox("sb-aaaaaaaaaaaa", "web", 1000));
    store->put_key(
        KeyRecord{.id = "key-aaaaaaaaaaaa", .name = "admin", .hash = "h", .admin = true});
    store->append_audit(make_audit_entry(1));
    store->append_audit(make_audit_entry(2));
  }
  auto store = open_store();
  auto sandbox = store->find_sandbox_by_name("web");
  ASSERT_TRUE(sandbox);
  EXPECT_EQ(sandbox->doc, make_sandbox("", "", 0).doc);
  auto key = store->find_key_by_hash("h");
  ASSERT_TRUE(key);
  EXPECT_TRUE(key->admin);
  // Audit ids keep growing after a restart.
  EXPECT_EQ(store->append_audit(make_audit_entry(3)), 3);
  EXPECT_EQ(ids_of(store->list_audit(0, 10)), (std::vector<int64_t>{3, 2, 1}));
}

TEST_F(SqliteStoreTest, RefusesADatabaseWithANewerSchema) {
  open_store().reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE meta SET value = 99 WHERE key = 'schema_version'", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_changes(db), 1);
  sqlite3_close(db);

  Error error = error_from([&] { open_store(); });
  EXPECT_NE(error.message().find("schema version 99"), std::string::npos) << error.message();
  EXPECT_NE(error.message().find("versions up to 2:"), std::string::npos) << error.message();
  EXPECT_NE(error.message().find(path_), std::string::npos) << error.message();
}

TEST_F(SqliteStoreTest, BringsAVersionOneDatabaseUpToDate) {
  open_store()->put_sandbox(make_sandbox("sb-aaaaaaaaaaaa", "kept", 1));
  // What a version 1 database looks like: no snapshots table.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "DROP TABLE snapshots; UPDATE meta SET value = 1 WHERE key = "
                         "'schema_version'",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);

  auto store = open_store();
  EXPECT_EQ(store->get_sandbox("sb-aaaaaaaaaaaa")->name, "kept");
  store->put_snapshot({"sn-aaaaaaaaaaaa", "snap", 5, {{"sandbox_id", "sb-aaaaaaaaaaaa"}}});
  auto snapshots = store->list_snapshots();
  ASSERT_EQ(snapshots.size(), 1u);
  EXPECT_EQ(snapshots[0].name, "snap");
  Error clash = error_from([&] {
    store->put_snapshot({"sn-bbbbbbbbbbbb", "snap", 6, nlohmann::json::object()});
  });
  EXPECT_EQ(clash.code(), ErrorCode::conflict);
  EXPECT_TRUE(store->delete_snapshot("sn-aaaaaaaaaaaa"));
  EXPECT_TRUE(store->list_snapshots().empty());
}

TEST_F(SqliteStoreTest, FilesAreForTheOwnerOnly) {
  auto store = open_store();
  store->append_audit(make_audit_entry(1));
  for (const std::string& path : {path_, path_ + "-wal", path_ + "-shm"}) {
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0) << path;
    EXPECT_EQ(st.st_mode & 07777, 0600u) << path;
  }
}

TEST_F(SqliteStoreTest, OpeningInAMissingDirectoryFails) {
  EXPECT_THROW(SqliteStore::open(dir_ + "/missing/pitbox.db"), Error);
}

}  // namespace
}  // namespace pitbox::control
