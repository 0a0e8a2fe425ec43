#include "control/sandboxes.h"

#include <unistd.h>

#include <algorithm>

#include "node/ids.h"
#include "sys/error.h"
#include "sys/log.h"
#include "sys/text.h"

namespace pitbox::control {

using nlohmann::json;

namespace {

Error wrong_state(const Sandbox& s, const std::string& wanted) {
  return Error(ErrorCode::conflict,
               "sandbox " + s.id + " is " + std::string(to_string(s.state)) + ", not " + wanted,
               {{"state", to_string(s.state)}});
}

bool busy(State s) {
  return s == State::creating || s == State::stopping || s == State::starting ||
         s == State::destroying;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

Sandboxes::Sandboxes(asio::any_io_executor executor, Store& store, node::NodeClient& node,
                     Metrics& metrics, Options options)
    : executor_(executor),
      store_(store),
      node_(node),
      metrics_(metrics),
      options_(options),
      sessions_(executor) {}

node::BoxConfig Sandboxes::config_for(const Sandbox& s) {
  node::BoxConfig c;
  c.id = s.id;
  c.image = s.spec.image_id.empty() ? s.spec.image : s.spec.image_id;
  c.hostname = s.spec.name.empty() ? s.id : s.spec.name;
  c.limits.millicpus = s.spec.millicpus.value_or(0);
  c.limits.memory_bytes = s.spec.memory.value_or(0);
  c.limits.pids = s.spec.pids.value_or(0);
  c.disk = s.spec.disk.value_or(0);
  c.snapshot = s.spec.snapshot;
  c.network = s.spec.network;
  return c;
}

void Sandboxes::save(const Sandbox& s) {
  store_.put_sandbox(
      {s.id, s.spec.name, std::string(to_string(s.state)), s.created_at, s.to_doc()});
}

void Sandboxes::audit(const std::string& action, const std::string& target,
                      const std::string& error) {
  store_.append_audit({0, sys::now_ms(), "", action, target, 0, error});
}

Sandbox& Sandboxes::find(const std::string& id_or_name) {
  return const_cast<Sandbox&>(std::as_const(*this).find(id_or_name));
}

const Sandbox& Sandboxes::find(const std::string& id_or_name) const {
  if (auto it = boxes_.find(id_or_name); it != boxes_.end()) return it->second;
  if (auto n = names_.find(id_or_name); n != names_.end()) return boxes_.at(n->second);
  throw not_found("sandbox \"" + id_or_name + "\" not found");
}

Sandbox Sandboxes::get(const std::string& id_or_name) const { return find(id_or_name); }

std::string Sandboxes::image_user(const std::string& image_id) const {
  auto uses = [&](const Sandbox& s) {
    return s.spec.image_id == image_id || (s.spec.image_id.empty() && s.spec.image == image_id);
  };
  for (const auto& [id, s] : boxes_) {
    if (uses(s)) return "sandbox " + id + (s.spec.name.empty() ? "" : " (" + s.spec.name + ")");
  }
  for (const auto& s : pool_) {
    if (uses(s)) return "warm pool box " + s.id;
  }
  for (const auto& [id, snap] : snapshots_) {
    if (snap.image_id == image_id) return "snapshot " + id + " (" + snap.name + ")";
  }
  return "";
}

std::vector<Sandbox> Sandboxes::all() const {
  std::vector<Sandbox> out;
  for (const auto& [id, s] : boxes_) out.push_back(s);
  return out;
}

Capabilities Sandboxes::capabilities() const {
  Capabilities caps;
  caps.default_image = options_.default_image ? options_.default_image() : "host";
  caps.resolve_image = options_.resolve_image;
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  caps.online_cpus = cpus > 0 ? static_cast<uint64_t>(cpus) : 1;
  caps.storage_driver = options_.storage_driver;
  caps.disk_quota = options_.disk_quota;
  caps.resolve_snapshot = [this](const std::string& ref) { return find_snapshot(ref); };
  caps.default_network = options_.default_network;
  caps.check_network = options_.check_network;
  return caps;
}

Sandboxes::BusyGuard::BusyGuard(Sandboxes& owner, const Sandbox& s, const std::string& what)
    : owner_(owner), id_(s.id) {
  owner_.check_idle(s);
  owner_.in_flight_[id_] = what;
}

void Sandboxes::check_idle(const Sandbox& s) const {
  if (busy(s.state)) throw wrong_state(s, "idle (it is busy)");
  if (auto it = in_flight_.find(s.id); it != in_flight_.end()) {
    throw Error(ErrorCode::conflict, "sandbox " + s.id + " is busy (" + it->second + ")",
                {{"state", to_string(s.state)}, {"busy", it->second}});
  }
}

asio::awaitable<Sandbox> Sandboxes::make_box(Sandbox s, bool warm) {
  std::string id = s.id;
  // Recorded (and the name taken) before the first wait.
  boxes_[id] = s;
  if (!s.spec.name.empty()) names_[s.spec.name] = id;
  save(s);
  std::exception_ptr failed;
  json location;
  try {
    if (warm) {
      node::BoxConfig config = config_for(s);
      if (config.hostname != id || config.limits.any()) co_await node_.reconfigure(config);
      location = s.location;
    } else {
      location = co_await node_.create(config_for(s));
    }
  } catch (...) {
    failed = std::current_exception();
  }
  if (failed) {
    // A box that could not be made is not kept: nothing half-made stays.
    names_.erase(s.spec.name);
    boxes_.erase(id);
    if (warm) {
      // The limits were refused, say: the warm box goes too.
      try {
        co_await node_.destroy(id);
      } catch (...) {
      }
    }
    store_.delete_sandbox(id);
    std::rethrow_exception(failed);
  }
  Sandbox& made = boxes_.at(id);
  made.state = State::started;
  made.location = location;
  made.started_at = made.last_activity_at = sys::now_ms();
  save(made);
  co_return made;
}

asio::awaitable<Sandbox> Sandboxes::create(const json& body) {
  SandboxSpec spec = parse_create(body, capabilities());
  if (options_.image_defaults) options_.image_defaults(spec);
  if (!spec.name.empty() && names_.count(spec.name)) {
    throw Error(ErrorCode::conflict, "a sandbox named \"" + spec.name + "\" already exists",
                {{"field", "name"}});
  }
  if (boxes_.size() >= options_.max_sandboxes) {
    throw Error(
        ErrorCode::resource_exhausted,
        "this node has its maximum of " + std::to_string(options_.max_sandboxes) + " sandboxes");
  }
  auto started = std::chrono::steady_clock::now();
  // A warm box from the pool when one fits: it only needs its name and limits.
  std::optional<Sandbox> warm;
  std::string pool_image = pool_image_id();
  if (!pool_.empty() && pool_.front().spec.image_id != pool_image) co_await retire_stale_pool();
  if (!pool_.empty() && !pool_image.empty() && fits_pool(spec, pool_image)) {
    warm = std::move(pool_.front());
    pool_.pop_front();
    last_take_ = std::chrono::steady_clock::now();
    refill_pool();
  }
  Sandbox s;
  s.id = warm ? warm->id : node::new_box_id();
  s.spec = spec;
  s.state = State::creating;
  s.created_at = s.last_activity_at = sys::now_ms();
  if (warm) s.location = warm->location;
  Sandbox made = co_await make_box(s, warm.has_value());
  metrics_.create_seconds.observe(seconds_since(started));
  co_return made;
}

SandboxSpec Sandboxes::default_spec() const {
  SandboxSpec s;
  if (options_.default_image) s.image = options_.default_image();
  s.image_id = options_.resolve_image ? options_.resolve_image(s.image) : s.image;
  if (options_.image_defaults) options_.image_defaults(s);
  s.network = options_.default_network;
  return s;
}

std::string Sandboxes::pool_image_id() const {
  std::string image = options_.default_image ? options_.default_image() : SandboxSpec{}.image;
  try {
    return options_.resolve_image ? options_.resolve_image(image) : image;
  } catch (const Error&) {
    return "";  // the default image is gone: no pool until it is back
  }
}

bool Sandboxes::fits_pool(const SandboxSpec& spec, const std::string& pool_image) const {
  return spec.image_id == pool_image && spec.runtime == SandboxSpec{}.runtime && !spec.disk &&
         spec.snapshot.empty() && spec.network == options_.default_network;
}

asio::awaitable<void> Sandboxes::retire_stale_pool() {
  std::deque<Sandbox> stale;
  stale.swap(pool_);
  for (auto& s : stale) {
    try {
      co_await node_.destroy(s.id);
    } catch (const std::exception& e) {
      sys::log(sys::LogLevel::warn, "could not remove a pool box", {{"error", e.what()}});
    }
    store_.delete_sandbox(s.id);
  }
  refill_pool();
}

void Sandboxes::start_pool() { refill_pool(); }

void Sandboxes::refill_pool() {
  if (filling_ || stopping_ || pool_.size() >= options_.pool_size) return;
  filling_ = true;
  asio::co_spawn(executor_, fill_pool(), [this](std::exception_ptr e) {
    filling_ = false;
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      sys::log(sys::LogLevel::warn, "could not make a pool box", {{"error", ex.what()}});
    }
  });
}

asio::awaitable<void> Sandboxes::fill_pool() {
  asio::steady_timer quiet(executor_);
  while (!stopping_ && pool_.size() < options_.pool_size &&
         boxes_.size() + pool_.size() < options_.max_sandboxes) {
    // Not while the box just taken is busy with its first commands: making a box takes both
    // CPUs of a small machine for a few milliseconds.
    auto since = std::chrono::steady_clock::now() - last_take_;
    if (since < kPoolQuiet) {
      quiet.expires_after(kPoolQuiet - since);
      co_await quiet.async_wait(asio::use_awaitable);
      continue;
    }
    Sandbox s;
    s.id = node::new_box_id();
    s.spec = default_spec();
    s.state = State::creating;
    s.created_at = s.last_activity_at = sys::now_ms();
    save(s);
    std::exception_ptr failed;
    try {
      s.location = co_await node_.create(config_for(s));
    } catch (...) {
      failed = std::current_exception();
    }
    if (failed) {
      store_.delete_sandbox(s.id);
      std::rethrow_exception(failed);  // no more tries until the next create
    }
    save(s);
    pool_.push_back(std::move(s));
  }
}

Sandboxes::Page Sandboxes::list(const std::vector<std::pair<std::string, std::string>>& labels,
                                std::optional<State> state, size_t limit,
                                const std::string& cursor) const {
  std::vector<const Sandbox*> all;
  for (const auto& [id, s] : boxes_) {
    if (state && s.state != *state) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = s.spec.labels.find(k);
      match = match && it != s.spec.labels.end() && it->second == v;
    }
    if (match) all.push_back(&s);
  }
  // Oldest first; the cursor is the id after which the page starts.
  std::sort(all.begin(), all.end(), [](const Sandbox* a, const Sandbox* b) {
    return a->created_at != b->created_at ? a->created_at < b->created_at : a->id < b->id;
  });
  Page page;
  auto it = all.begin();
  if (!cursor.empty()) {
    auto at =
        std::find_if(all.begin(), all.end(), [&](const Sandbox* s) { return s->id == cursor; });
    if (at == all.end()) {
      // The cursor's sandbox is gone: continue after where it stood (by id order of creation).
      if (!node::is_box_id(cursor)) throw invalid_argument("invalid cursor \"" + cursor + "\"");
      it = all.end();
      for (auto i = all.begin(); i != all.end(); ++i) {
        if ((*i)->id > cursor) {
          it = i;
          break;
        }
      }
    } else {
      it = at + 1;
    }
  }
  for (; it != all.end() && page.items.size() < limit; ++it) page.items.push_back(**it);
  if (it != all.end() && !page.items.empty()) page.next_cursor = page.items.back().id;
  return page;
}

asio::awaitable<void> Sandboxes::remove(const std::string& id_or_name) {
  Sandbox& s = find(id_or_name);
  check_idle(s);
  co_await do_delete(s.id, "");
}

asio::awaitable<void> Sandboxes::do_delete(std::string id, std::string why) {
  auto it = boxes_.find(id);
  if (it == boxes_.end() || it->second.state == State::destroying) co_return;
  it->second.state = State::destroying;
  save(it->second);
  sessions_.forget_box(id);
  it->second.sessions = json::array();
  std::exception_ptr failed;
  try {
    co_await node_.destroy(id);
  } catch (...) {
    failed = std::current_exception();
  }
  it = boxes_.find(id);
  if (failed) {
    try {
      std::rethrow_exception(failed);
    } catch (const Error& e) {
      it->second.state = State::error;
      it->second.error = Error(e.code(), "deleting the sandbox failed: " + e.message());
      save(it->second);
      throw;
    }
  }
  names_.erase(it->second.spec.name);
  boxes_.erase(it);
  store_.delete_sandbox(id);
  if (!why.empty()) audit("sandbox.delete (" + why + ")", id);
}

asio::awaitable<Sandbox> Sandboxes::stop(const std::string& id_or_name) {
  Sandbox& s = find(id_or_name);
  if (s.state == State::stopped) co_return s;
  if (s.state != State::started && s.state != State::paused) throw wrong_state(s, "started");
  check_idle(s);
  // `s` may be gone after the wait (an ephemeral sandbox is deleted when it stops).
  Sandbox last = s;
  co_await do_stop(last.id, "");
  if (auto it = boxes_.find(last.id); it != boxes_.end()) co_return it->second;
  last.state = State::stopped;
  last.stopped_at = sys::now_ms();
  co_return last;
}

asio::awaitable<void> Sandboxes::do_stop(std::string id, std::string why) {
  auto it = boxes_.find(id);
  if (it == boxes_.end() ||
      (it->second.state != State::started && it->second.state != State::paused) ||
      in_flight_.count(id)) {
    co_return;
  }
  it->second.state = State::stopping;
  it->second.sessions = json::array();
  save(it->second);
  sessions_.forget_box(id);
  std::exception_ptr failed;
  try {
    co_await node_.stop(id, options_.stop_grace);
  } catch (...) {
    failed = std::current_exception();
  }
  it = boxes_.find(id);
  Sandbox& s = it->second;
  if (failed) {
    try {
      std::rethrow_exception(failed);
    } catch (const Error& e) {
      s.state = State::error;
      s.error = Error(e.code(), "stopping the sandbox failed: " + e.message());
      save(s);
      throw;
    }
  }
  s.state = State::stopped;
  s.stopped_at = sys::now_ms();
  save(s);
  if (!why.empty()) audit("sandbox.stop (" + why + ")", id);
  // An ephemeral sandbox does not outlive its stop.
  if (s.spec.ephemeral) co_await do_delete(id, "ephemeral");
}

asio::awaitable<Sandbox> Sandboxes::start(const std::string& id_or_name) {
  Sandbox& s = find(id_or_name);
  if (s.state == State::started) co_return s;
  if (s.state != State::stopped && s.state != State::archived) throw wrong_state(s, "stopped");
  check_idle(s);
  std::string id = s.id;
  State was = s.state;
  s.state = State::starting;
  s.error.reset();
  save(s);
  std::exception_ptr failed;
  json location;
  try {
    location = co_await node_.start(config_for(s));
  } catch (...) {
    failed = std::current_exception();
  }
  Sandbox& again = boxes_.at(id);
  if (failed) {
    again.state = was;  // an archive that could not be unpacked is still there
    save(again);
    std::rethrow_exception(failed);
  }
  again.state = State::started;
  again.location = location;
  again.started_at = again.last_activity_at = sys::now_ms();
  again.stopped_at = 0;
  save(again);
  co_return again;
}

Sandbox Sandboxes::set_labels(const std::string& id_or_name,
                              std::map<std::string, std::string> labels) {
  Sandbox& s = find(id_or_name);
  s.spec.labels = std::move(labels);
  save(s);
  return s;
}

asio::awaitable<Sandbox> Sandboxes::pause(const std::string& id_or_name) {
  Sandbox& s = find(id_or_name);
  if (s.state == State::paused) co_return s;
  if (s.state != State::started) throw wrong_state(s, "started");
  std::string id = s.id;
  BusyGuard guard(*this, s, "pausing");
  auto began = std::chrono::steady_clock::now();
  co_await node_.pause(id);
  metrics_.operation_seconds("pause").observe(seconds_since(began));
  Sandbox& again = boxes_.at(id);
  again.state = State::paused;
  save(again);
  co_return again;
}

asio::awaitable<Sandbox> Sandboxes::resume(const std::string& id_or_name) {
  Sandbox& s = find(id_or_name);
  if (s.state == State::started) co_return s;
  if (s.state != State::paused) throw wrong_state(s, "paused");
  std::string id = s.id;
  BusyGuard guard(*this, s, "resuming");
  auto began = std::chrono::steady_clock::now();
  co_await node_.resume(id);
  metrics_.operation_seconds("resume").observe(seconds_since(began));
  Sandbox& again = boxes_.at(id);
  again.state = State::started;
  again.last_activity_at = sys::now_ms();
  save(again);
  co_return again;
}

asio::awaitable<Sandbox> Sandboxes::resize(const std::string& id_or_name, const json& body) {
  Sandbox& s = find(id_or_name);
  SandboxSpec wanted = parse_resize(body, capabilities(), s.spec);
  if (s.state != State::started && s.state != State::paused && s.state != State::stopped) {
    throw wrong_state(s, "started, paused or stopped");
  }
  std::string id = s.id;
  BusyGuard guard(*this, s, "resizing");
  auto began = std::chrono::steady_clock::now();
  if (s.state != State::stopped) {
    if (body.contains("memory") && wanted.memory) {
      uint64_t used = node_.stats(id).memory_bytes;
      if (*wanted.memory < used) {
        throw Error(ErrorCode::conflict,
                    "sandbox " + id + " uses " + std::to_string(used) +
                        " bytes of memory now, more than the " + std::to_string(*wanted.memory) +
                        " asked for",
                    {{"field", "memory"}, {"memory_used", used}});
      }
    }
    Sandbox changed = s;
    changed.spec = wanted;
    co_await node_.reconfigure(config_for(changed));
  }
  metrics_.operation_seconds("resize").observe(seconds_since(began));
  Sandbox& again = boxes_.at(id);
  again.spec.millicpus = wanted.millicpus;
  again.spec.memory = wanted.memory;
  again.spec.pids = wanted.pids;
  again.spec.disk = wanted.disk;
  save(again);
  audit("sandbox.resize", id);
  co_return again;
}

std::vector<int> Sandboxes::listening_ports(const std::string& id_or_name) {
  Sandbox& s = find(id_or_name);
  if (s.state != State::started && s.state != State::paused) throw wrong_state(s, "started");
  return node_.listening_ports(s.id);
}

asio::awaitable<sys::UniqueFd> Sandboxes::preview_socket(const std::string& id) {
  auto reached = co_await reach(id, true);
  co_return node_.box_socket(reached.first.id);
}

Sandbox Sandboxes::revoke_previews(const std::string& id_or_name) {
  Sandbox& s = find(id_or_name);
  s.preview_generation++;
  s.public_ports.clear();
  save(s);
  audit("sandbox.previews.revoke", s.id);
  return s;
}

Sandbox Sandboxes::set_port_public(const std::string& id_or_name, int port, bool open) {
  if (port < 1 || port > 65535) {
    throw invalid_argument("port: " + std::to_string(port) + " is not a TCP port (1 to 65535)",
                           {{"field", "port"}});
  }
  Sandbox& s = find(id_or_name);
  if (open ? s.public_ports.insert(port).second : s.public_ports.erase(port) > 0) {
    save(s);
    audit(std::string(open ? "sandbox.port.public" : "sandbox.port.private") + " (" +
              std::to_string(port) + ")",
          s.id);
  }
  return s;
}

asio::awaitable<Sandbox> Sandboxes::set_network(const std::string& id_or_name, const json& body) {
  Sandbox& s = find(id_or_name);
  net::Policy policy = parse_network(body, capabilities());
  std::string id = s.id;
  BusyGuard guard(*this, s, "changing its network");
  if (s.state == State::started || s.state == State::paused) {
    co_await node_.set_network(id, policy);
  }
  Sandbox& again = boxes_.at(id);
  again.spec.network = policy;
  save(again);
  audit("sandbox.network", id);
  co_return again;
}

asio::awaitable<std::pair<Sandbox, std::shared_ptr<node::Channel>>> Sandboxes::reach(
    const std::string& id_or_name, bool auto_resume) {
  if (auto_resume && find(id_or_name).state == State::paused) co_await resume(id_or_name);
  co_return running(id_or_name);
}

std::pair<Sandbox, std::shared_ptr<node::Channel>> Sandboxes::running(
    const std::string& id_or_name) {
  Sandbox& s = find(id_or_name);
  if (s.state == State::paused) {
    throw Error(ErrorCode::conflict,
                "sandbox " + s.id + " is paused: resume it first, or ask with auto_resume=true",
                {{"state", "paused"}});
  }
  if (s.state != State::started) throw wrong_state(s, "started");
  auto channel = node_.channel(s.id);
  if (!channel || channel->error()) {
    throw Error(ErrorCode::unavailable,
                "sandbox " + s.id + " is not reachable: " +
                    (channel && channel->error() ? channel->error()->message() : "no channel"));
  }
  touch(s.id);
  return {s, channel};
}

asio::awaitable<json> Sandboxes::start_session(const std::string& id_or_name,
                                               const ExecRequest& request, bool auto_resume) {
  auto [sb, channel] = co_await reach(id_or_name, auto_resume);
  proto::SpawnRequest spawn = spawn_request(request, sb);
  spawn.stdin = true;  // input can be sent later
  auto process = co_await channel->spawn(std::move(spawn));
  if (request.stdin_data && !request.stdin_data->empty()) {
    co_await process->write_stdin(*request.stdin_data);
  }
  json session = sessions_.add(sb.id, process, request.argv, request.tty);
  auto it = boxes_.find(sb.id);
  if (it != boxes_.end() && it->second.state == State::started) {
    it->second.sessions.push_back(
        {{"id", session["id"]}, {"pid", process->pid()}, {"started_at", sys::now_ms()}});
    save(it->second);
  }
  co_return session;
}

void Sandboxes::remove_session(const std::string& id_or_name, const std::string& session_id) {
  Sandbox& s = find(id_or_name);
  sessions_.remove(s.id, session_id);
  auto& list = s.sessions;
  list.erase(std::remove_if(list.begin(), list.end(),
                            [&](const json& e) { return e.value("id", "") == session_id; }),
             list.end());
  save(s);
}

void Sandboxes::touch(const std::string& id) {
  auto it = boxes_.find(id);
  if (it == boxes_.end()) return;
  it->second.last_activity_at = sys::now_ms();
  dirty_activity_.insert(id);
}

asio::awaitable<void> Sandboxes::recover() {
  for (const auto& record : store_.list_snapshots()) {
    Snapshot snap = Snapshot::from_doc(record.id, record.name, record.doc);
    if (snap.internal) {
      // A fork's capture that the fork did not get to remove.
      try {
        co_await node_.remove_snapshot(snap.id);
        store_.delete_snapshot(snap.id);
      } catch (const std::exception& e) {
        sys::log(sys::LogLevel::warn, "could not remove a fork's snapshot",
                 {{"snapshot", snap.id}, {"error", e.what()}});
      }
      continue;
    }
    snapshot_names_[snap.name] = snap.id;
    snapshots_[snap.id] = std::move(snap);
  }
  for (const auto& record : store_.list_sandboxes()) {
    Sandbox s;
    try {
      s = Sandbox::from_doc(record.id, record.doc);
    } catch (const std::exception& e) {
      // An unreadable record is kept out of the way rather than lost or fatal.
      continue;
    }
    boxes_[s.id] = s;
    if (!s.spec.name.empty()) names_[s.spec.name] = s.id;
  }
  std::vector<std::string> ids;
  for (const auto& [id, s] : boxes_) ids.push_back(id);
  for (const auto& id : ids) {
    Sandbox& s = boxes_.at(id);
    State was = s.state;
    std::exception_ptr delete_failed;  // do_delete records it in the sandbox; nothing more to do
    if (was == State::destroying) {
      s.state = State::stopped;  // so that do_delete carries on with it
      try {
        co_await do_delete(id, "settled after a restart");
      } catch (...) {
        delete_failed = std::current_exception();
      }
      continue;
    }
    if (was == State::error) continue;
    bool running = false;
    std::optional<Error> failure;
    try {
      running = co_await node_.recover(config_for(s), s.location,
                                       was == State::started || was == State::paused ||
                                           was == State::stopping || was == State::creating ||
                                           was == State::starting);
    } catch (const Error& e) {
      failure = e;
    } catch (const std::exception& e) {
      failure = internal_error(e.what());
    }
    if (was == State::creating) {
      // Half-made when the daemon went (its maker never got an answer): removed, with whatever
      // of it runs.
      boxes_.at(id).state = State::stopped;
      try {
        co_await do_delete(id, "half-made when the daemon stopped");
      } catch (...) {
        delete_failed = std::current_exception();
      }
      continue;
    }
    Sandbox& again = boxes_.at(id);
    if (failure) {
      again.state = State::error;
      again.error = Error(failure->code(), "after a restart: " + failure->message());
    } else if (running) {
      again.state = State::started;
      if (was == State::paused) {
        // Resumed to be reached (node::recover); frozen again before anyone else can reach it.
        std::optional<Error> refreeze;
        try {
          co_await node_.pause(id);
        } catch (const Error& e) {
          refreeze = e;
        }
        if (refreeze) {
          sys::log(sys::LogLevel::warn, "a paused sandbox could not be paused again",
                   {{"id", id}, {"error", refreeze->message()}});
        } else {
          again.state = State::paused;
        }
      }
      // Processes the box still runs become sessions again, under their ids when they were
      // started as sessions (their earlier output is gone).
      json known = again.sessions;
      again.sessions = json::array();
      if (auto channel = node_.channel(id); channel && channel->hello()) {
        for (const auto& p : channel->hello()->processes) {
          json record = {{"id", ""}, {"pid", p.pid}, {"started_at", sys::now_ms()}};
          for (const auto& k : known) {
            if (k.value("pid", 0) == p.pid) record = k;
          }
          json session = sessions_.add(id, channel->adopt(p), p.argv, p.tty, record.value("id", ""),
                                       record.value("started_at", 0));
          record["id"] = session["id"];
          again.sessions.push_back(record);
        }
      }
    } else if (was != State::archived) {
      if (again.state != State::stopped) again.stopped_at = sys::now_ms();
      again.state = State::stopped;
    }
    save(again);
  }
}

void Sandboxes::start_timers() {
  timer_ = std::make_unique<asio::steady_timer>(executor_);
  asio::co_spawn(executor_, timers(), asio::detached);
}

asio::awaitable<void> Sandboxes::shutdown() {
  stopping_ = true;
  if (timer_) timer_->cancel();
  // A pool box being made is waited for (a second at most), then every unused one removed.
  asio::steady_timer wait(executor_);
  for (int i = 0; i < 100 && filling_; ++i) {
    wait.expires_after(std::chrono::milliseconds(10));
    co_await wait.async_wait(asio::use_awaitable);
  }
  while (!pool_.empty()) {
    std::string id = pool_.front().id;
    pool_.pop_front();
    try {
      co_await node_.destroy(id);
      store_.delete_sandbox(id);
    } catch (const std::exception& e) {
      // Left to the next start's recovery, which removes boxes caught "creating".
      sys::log(sys::LogLevel::warn, "could not remove a pool box",
               {{"id", id}, {"error", e.what()}});
    }
  }
  for (const auto& id : dirty_activity_) {
    if (auto it = boxes_.find(id); it != boxes_.end()) save(it->second);
  }
  dirty_activity_.clear();
}

asio::awaitable<void> Sandboxes::timers() {
  while (!stopping_) {
    timer_->expires_after(options_.timer_interval);
    boost::system::error_code ec;
    co_await timer_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) break;
    try {
      check_timers();
    } catch (const std::exception&) {
      // A failing store must not end the timers for good.
    }
  }
}

void Sandboxes::check_timers() {
  int64_t now = sys::now_ms();
  auto due = [&](int64_t since, const std::optional<double>& minutes) {
    return minutes && since && since + static_cast<int64_t>(*minutes * 60000) <= now;
  };
  for (const auto& [id, s] : boxes_) {
    if ((s.state == State::started || s.state == State::paused) &&
        due(s.last_activity_at, s.spec.auto_stop_minutes)) {
      asio::co_spawn(executor_, do_stop(id, "auto-stop"), asio::detached);
    } else if (s.state == State::stopped && s.spec.ephemeral) {
      asio::co_spawn(executor_, do_delete(id, "ephemeral"), asio::detached);
    } else if ((s.state == State::stopped || s.state == State::archived) &&
               due(s.stopped_at, s.spec.auto_delete_minutes)) {
      asio::co_spawn(executor_, do_delete(id, "auto-delete"), asio::detached);
    } else if (s.state == State::stopped && !in_flight_.count(id) &&
               due(s.stopped_at, s.spec.auto_archive_minutes)) {
      asio::co_spawn(executor_, auto_archive(id), asio::detached);
    }
  }
  // Activity is saved now and then, not at every call: timers survive a restart within this.
  for (const auto& id : dirty_activity_) {
    if (auto it = boxes_.find(id); it != boxes_.end()) save(it->second);
  }
  dirty_activity_.clear();
}

}  // namespace pitbox::control
