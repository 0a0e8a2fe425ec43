// The sandboxes service's snapshots, rollbacks, forks and archives (see control/sandboxes.h).

#include <algorithm>
#include <set>

#include "control/sandboxes.h"
#include "node/ids.h"
#include "sys/error.h"
#include "sys/log.h"
#include "sys/text.h"

namespace pitbox::control {

using nlohmann::json;

namespace {

Error bad(const std::string& field, const std::string& why) {
  return invalid_argument("\"" + field + "\" " + why, {{"field", field}});
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

Error not_in(const Sandbox& s, const std::string& wanted) {
  return Error(ErrorCode::conflict,
               "sandbox " + s.id + " is " + std::string(to_string(s.state)) + ", not " + wanted,
               {{"state", to_string(s.state)}});
}

}  // namespace

Snapshot& Sandboxes::find_snapshot(const std::string& id_or_name) {
  return const_cast<Snapshot&>(std::as_const(*this).find_snapshot(id_or_name));
}

const Snapshot& Sandboxes::find_snapshot(const std::string& id_or_name) const {
  auto it = snapshots_.find(id_or_name);
  if (it == snapshots_.end()) {
    if (auto n = snapshot_names_.find(id_or_name); n != snapshot_names_.end()) {
      it = snapshots_.find(n->second);
    }
  }
  if (it == snapshots_.end() || it->second.internal) {
    throw not_found("snapshot \"" + id_or_name + "\" not found");
  }
  return it->second;
}

void Sandboxes::save_snapshot(const Snapshot& s) {
  store_.put_snapshot({s.id, s.name, s.created_at, s.to_doc()});
}

Snapshot Sandboxes::get_snapshot(const std::string& id_or_name) const {
  return find_snapshot(id_or_name);
}

Sandboxes::SnapshotPage Sandboxes::list_snapshots(const std::string& sandbox, size_t limit,
                                                  const std::string& cursor) const {
  std::string sandbox_id = sandbox.empty() ? "" : find(sandbox).id;
  std::vector<const Snapshot*> all;
  for (const auto& [id, snap] : snapshots_) {
    if (!snap.internal && (sandbox_id.empty() || snap.sandbox_id == sandbox_id)) {
      all.push_back(&snap);
    }
  }
  std::sort(all.begin(), all.end(), [](const Snapshot* a, const Snapshot* b) {
    return a->created_at != b->created_at ? a->created_at < b->created_at : a->id < b->id;
  });
  SnapshotPage page;
  auto it = all.begin();
  if (!cursor.empty()) {
    if (!node::is_snapshot_id(cursor)) throw invalid_argument("invalid cursor \"" + cursor + "\"");
    it = std::find_if(all.begin(), all.end(), [&](const Snapshot* s) { return s->id == cursor; });
    if (it == all.end()) {
      // Gone meanwhile: continue after where it stood in id order.
      it = std::find_if(all.begin(), all.end(), [&](const Snapshot* s) { return s->id > cursor; });
    } else {
      ++it;
    }
  }
  for (; it != all.end() && page.items.size() < limit; ++it) page.items.push_back(**it);
  if (it != all.end() && !page.items.empty()) page.next_cursor = page.items.back().id;
  return page;
}

asio::awaitable<Snapshot> Sandboxes::snapshot(const std::string& id_or_name, const json& body) {
  if (!body.is_object()) throw invalid_argument("the request must be a JSON object");
  for (const auto& [k, v] : body.items()) {
    if (k != "name") throw bad(k, "is not a field of a snapshot request (name)");
  }
  Sandbox& s = find(id_or_name);
  if (s.state != State::started && s.state != State::paused && s.state != State::stopped) {
    throw not_in(s, "started, paused or stopped");
  }
  Snapshot snap;
  snap.id = node::new_snapshot_id();
  if (auto it = body.find("name"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) throw bad("name", "must be a string");
    snap.name = it->get<std::string>();
    try {
      validate_name(snap.name);
    } catch (const Error& e) {
      throw Error(e.code(), e.message(), {{"field", "name"}});
    }
  } else {
    int n = 1;
    std::string base = s.spec.name.empty() ? s.id : s.spec.name;
    while (snapshot_names_.count(base + "-" + std::to_string(n))) ++n;
    snap.name = base + "-" + std::to_string(n);
  }
  if (snapshot_names_.count(snap.name)) {
    throw Error(ErrorCode::conflict, "a snapshot named \"" + snap.name + "\" already exists",
                {{"field", "name"}});
  }
  snap.sandbox_id = s.id;
  snap.image = s.spec.image;
  snap.image_id = s.spec.image_id.empty() ? s.spec.image : s.spec.image_id;
  snap.image_env = s.spec.image_env;
  snap.image_workdir = s.spec.image_workdir;
  snap.image_user = s.spec.image_user;
  snap.created_at = sys::now_ms();
  BusyGuard guard(*this, s, "snapshotting");
  snapshot_names_[snap.name] = snap.id;  // taken before the wait
  std::string id = s.id;
  auto began = std::chrono::steady_clock::now();
  std::exception_ptr failed;
  try {
    snap.size = co_await node_.snapshot(id, snap.id);
    save_snapshot(snap);
  } catch (...) {
    failed = std::current_exception();
  }
  if (failed) {
    snapshot_names_.erase(snap.name);
    try {
      co_await node_.remove_snapshot(snap.id);
    } catch (...) {
    }
    std::rethrow_exception(failed);
  }
  metrics_.operation_seconds("snapshot").observe(seconds_since(began));
  snapshots_[snap.id] = snap;
  audit("sandbox.snapshot", id);
  co_return snap;
}

asio::awaitable<void> Sandboxes::delete_snapshot(const std::string& id_or_name) {
  Snapshot snap = find_snapshot(id_or_name);
  // A box being made from it right now still copies its files.
  for (const auto& [id, s] : boxes_) {
    if (s.state == State::creating && s.spec.snapshot == snap.id) {
      throw Error(ErrorCode::conflict,
                  "snapshot " + snap.id + " is being copied into sandbox " + id + ": try again");
    }
  }
  co_await node_.remove_snapshot(snap.id);
  snapshots_.erase(snap.id);
  snapshot_names_.erase(snap.name);
  store_.delete_snapshot(snap.id);
  audit("snapshot.delete", snap.id);
}

asio::awaitable<Sandbox> Sandboxes::restore(const std::string& id_or_name, const json& body) {
  if (!body.is_object() || !body.contains("snapshot") || !body["snapshot"].is_string()) {
    throw bad("snapshot", "is required: the id or name of a snapshot of this sandbox");
  }
  for (const auto& [k, v] : body.items()) {
    if (k != "snapshot") throw bad(k, "is not a field of a restore request (snapshot)");
  }
  Sandbox& s = find(id_or_name);
  Snapshot snap;
  try {
    snap = find_snapshot(body["snapshot"].get<std::string>());
  } catch (const Error& e) {
    throw Error(e.code(), e.message(), {{"field", "snapshot"}});
  }
  if (snap.sandbox_id != s.id) {
    throw Error(ErrorCode::conflict,
                "snapshot " + snap.id + " (" + snap.name + ") is of sandbox " + snap.sandbox_id +
                    ", not of " + s.id + ": make a new sandbox from it instead",
                {{"field", "snapshot"}});
  }
  if (s.state != State::started && s.state != State::paused && s.state != State::stopped &&
      s.state != State::archived) {
    throw not_in(s, "started, paused, stopped or archived");
  }
  std::string id = s.id;
  bool was_running = s.state == State::started || s.state == State::paused;
  auto began = std::chrono::steady_clock::now();
  if (was_running) {
    Sandbox last = s;
    co_await do_stop(id, "restore");
    if (!boxes_.count(id)) throw Error(ErrorCode::conflict, "sandbox " + id + " went away");
  }
  {
    BusyGuard guard(*this, boxes_.at(id), "restoring");
    co_await node_.restore(id, snap.id);
    Sandbox& again = boxes_.at(id);
    if (again.state == State::archived) again.state = State::stopped;
    save(again);
  }
  if (was_running) co_await start(id);
  metrics_.operation_seconds("restore").observe(seconds_since(began));
  audit("sandbox.restore", id);
  co_return boxes_.at(id);
}

asio::awaitable<std::vector<Sandbox>> Sandboxes::fork(const std::string& id_or_name,
                                                      const json& body) {
  if (!body.is_object()) throw invalid_argument("the request must be a JSON object");
  for (const auto& [k, v] : body.items()) {
    if (k != "count" && k != "names" && k != "labels") {
      throw bad(k, "is not a field of a fork request (count, names, labels)");
    }
  }
  Sandbox& parent = find(id_or_name);
  size_t count = 1;
  if (auto it = body.find("count"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 1 ||
        it->get<int64_t>() > static_cast<int64_t>(options_.max_fork)) {
      throw bad("count", "must be a whole number from 1 to " + std::to_string(options_.max_fork));
    }
    count = it->get<size_t>();
  }
  std::vector<std::string> names;
  if (auto it = body.find("names"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) throw bad("names", "must be a list of names");
    for (const auto& n : *it) {
      if (!n.is_string()) throw bad("names", "must be a list of names");
      names.push_back(n.get<std::string>());
    }
    if (body.contains("count") && names.size() != count) {
      throw bad("names", "has " + std::to_string(names.size()) + " names for a count of " +
                             std::to_string(count));
    }
    count = names.size();
    if (count < 1 || count > options_.max_fork) {
      throw bad("names", "must name 1 to " + std::to_string(options_.max_fork) + " sandboxes");
    }
  }
  std::set<std::string> seen;
  for (const auto& n : names) {
    try {
      validate_name(n);
    } catch (const Error& e) {
      throw Error(e.code(), e.message(), {{"field", "names"}});
    }
    if (names_.count(n) || !seen.insert(n).second) {
      throw Error(ErrorCode::conflict, "a sandbox named \"" + n + "\" already exists",
                  {{"field", "names"}});
    }
  }
  std::map<std::string, std::string> labels = parent.spec.labels;
  if (body.contains("labels") && !body["labels"].is_null()) {
    labels = parse_labels_body(json{{"labels", body["labels"]}});
  }
  if (parent.state != State::started && parent.state != State::paused &&
      parent.state != State::stopped) {
    throw not_in(parent, "started, paused or stopped");
  }
  if (boxes_.size() + count > options_.max_sandboxes) {
    throw Error(ErrorCode::resource_exhausted,
                "this node has room for " + std::to_string(options_.max_sandboxes - boxes_.size()) +
                    " more sandboxes, not " + std::to_string(count));
  }
  std::string parent_id = parent.id;
  auto began = std::chrono::steady_clock::now();
  BusyGuard guard(*this, parent, "forking");
  // The parent's files at one instant (frozen for that only), kept until every child has its
  // copy. Recorded, so that a crash in between leaves it to recovery.
  Snapshot base;
  base.id = node::new_snapshot_id();
  base.name = "fork-" + base.id;
  base.sandbox_id = parent_id;
  base.internal = true;
  base.created_at = sys::now_ms();
  save_snapshot(base);
  std::vector<Sandbox> made;
  std::exception_ptr failed;
  try {
    co_await node_.snapshot(parent_id, base.id);
    const Sandbox& p = boxes_.at(parent_id);
    for (size_t i = 0; i < count; ++i) {
      Sandbox child;
      child.id = node::new_box_id();
      child.spec = p.spec;
      child.spec.name = i < names.size() ? names[i] : "";
      child.spec.labels = labels;
      child.spec.snapshot = base.id;
      child.forked_from = parent_id;
      child.state = State::creating;
      child.created_at = child.last_activity_at = sys::now_ms();
      Sandbox done = co_await make_box(child, false);
      made.push_back(done);
    }
  } catch (...) {
    failed = std::current_exception();
  }
  // The children's spec does not keep the transient snapshot.
  for (auto& c : made) {
    Sandbox& kept = boxes_.at(c.id);
    kept.spec.snapshot.clear();
    save(kept);
    c = kept;
  }
  try {
    co_await node_.remove_snapshot(base.id);
    store_.delete_snapshot(base.id);
  } catch (const std::exception& e) {
    sys::log(sys::LogLevel::warn, "could not remove a fork's snapshot",
             {{"snapshot", base.id}, {"error", e.what()}});
  }
  if (failed) {
    // All or none: the children made so far go.
    for (const auto& c : made) {
      try {
        co_await do_delete(c.id, "fork failed");
      } catch (...) {
      }
    }
    std::rethrow_exception(failed);
  }
  metrics_.operation_seconds("fork").observe(seconds_since(began));
  audit("sandbox.fork", parent_id);
  co_return made;
}

std::vector<std::string> Sandboxes::children(const std::string& id) const {
  std::vector<std::string> out;
  for (const auto& [cid, s] : boxes_) {
    if (s.forked_from == id) out.push_back(cid);
  }
  return out;
}

asio::awaitable<Sandbox> Sandboxes::archive(const std::string& id_or_name) {
  Sandbox& s = find(id_or_name);
  if (s.state == State::archived) co_return s;
  if (s.state != State::stopped) throw not_in(s, "stopped");
  std::string id = s.id;
  BusyGuard guard(*this, s, "archiving");
  auto began = std::chrono::steady_clock::now();
  co_await node_.archive(id);
  metrics_.operation_seconds("archive").observe(seconds_since(began));
  Sandbox& again = boxes_.at(id);
  again.state = State::archived;
  save(again);
  audit("sandbox.archive", id);
  co_return again;
}

asio::awaitable<void> Sandboxes::auto_archive(std::string id) {
  try {
    co_await archive(id);
  } catch (const std::exception& e) {
    sys::log(sys::LogLevel::warn, "auto-archive failed", {{"id", id}, {"error", e.what()}});
  }
}

}  // namespace pitbox::control
