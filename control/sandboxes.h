// The sandboxes service: the state machine of every sandbox (creating, started, stopping,
// stopped, starting, error, destroying), its lifecycle timers and its activity, kept in memory,
// persisted in the store and carried out by a node. Runs on one executor.
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "control/exec.h"
#include "control/metrics.h"
#include "control/sandbox.h"
#include "control/sessions.h"
#include "control/store.h"
#include "node/node_client.h"

namespace pitbox::control {

namespace asio = boost::asio;

class Sandboxes {
 public:
  struct Options {
    std::chrono::milliseconds stop_grace{10000};
    std::chrono::milliseconds timer_interval{1000};
    size_t max_sandboxes = 5000;
    // Started boxes of the default image kept ready: a create that fits takes one and only
    // names and limits it. 0 turns the pool off.
    size_t pool_size = 0;
    // The image of a create that names none (at the time of the create), and what a reference
    // names (not_found when nothing); by default "host" and the reference itself.
    std::function<std::string()> default_image;
    std::function<std::string(const std::string&)> resolve_image;
    // Fills the image_* defaults of a spec from its image (image_id set).
    std::function<void(SandboxSpec&)> image_defaults;
    std::string storage_driver = "overlay";
    bool disk_quota = false;
    size_t max_fork = 100;  // sandboxes one fork may make
    // The network policy of a create that names none; none: boxes get no network (loopback).
    std::optional<net::Policy> default_network;
    std::function<void(const net::Policy&)> check_network;
  };
  Sandboxes(asio::any_io_executor executor, Store& store, node::NodeClient& node, Metrics& metrics,
            Options options);

  // At start: every stored sandbox is found again; running ones are reattached, ones that ended
  // meanwhile become stopped, ones caught half-way are settled.
  asio::awaitable<void> recover();
  // The lifecycle timers (auto-stop, auto-delete, ephemeral).
  void start_timers();
  // Stops the timers and the pool; boxes keep running, but the pool's unused ones are removed.
  asio::awaitable<void> shutdown();
  // Starts making the pool's boxes (after recover()).
  void start_pool();
  size_t pool_ready() const { return pool_.size(); }

  asio::awaitable<Sandbox> create(const nlohmann::json& body);
  Sandbox get(const std::string& id_or_name) const;
  struct Page {
    std::vector<Sandbox> items;
    std::string next_cursor;
  };
  Page list(const std::vector<std::pair<std::string, std::string>>& labels,
            std::optional<State> state, size_t limit, const std::string& cursor) const;
  asio::awaitable<void> remove(const std::string& id_or_name);
  asio::awaitable<Sandbox> start(const std::string& id_or_name);
  asio::awaitable<Sandbox> stop(const std::string& id_or_name);
  Sandbox set_labels(const std::string& id_or_name, std::map<std::string, std::string> labels);
  // Freezes every process of a started sandbox / lets them go on where they were.
  asio::awaitable<Sandbox> pause(const std::string& id_or_name);
  asio::awaitable<Sandbox> resume(const std::string& id_or_name);
  // New cpu, memory, pids (and disk) limits: at once for a running sandbox, at its next start
  // for a stopped one. A memory limit below what the box uses now is a conflict.
  asio::awaitable<Sandbox> resize(const std::string& id_or_name, const nlohmann::json& body);
  // The TCP ports something listens on in a running sandbox.
  std::vector<int> listening_ports(const std::string& id_or_name);
  // For a preview request: a socket in the sandbox's network namespace (node::box_socket). A
  // paused sandbox is resumed; the request counts as activity.
  asio::awaitable<sys::UniqueFd> preview_socket(const std::string& id);
  // Every preview link made so far stops working, and public ports are private again.
  Sandbox revoke_previews(const std::string& id_or_name);
  // Whether anyone may open the preview of `port` (1 to 65535), without a link or an API key.
  Sandbox set_port_public(const std::string& id_or_name, int port, bool open);
  // PUT .../network: a new policy, in force at once when the sandbox runs.
  asio::awaitable<Sandbox> set_network(const std::string& id_or_name, const nlohmann::json& body);

  // Snapshots (control/snapshots.cc). `{"name"}` names it (default: "<sandbox>-<n>").
  asio::awaitable<Snapshot> snapshot(const std::string& id_or_name, const nlohmann::json& body);
  Snapshot get_snapshot(const std::string& id_or_name) const;
  struct SnapshotPage {
    std::vector<Snapshot> items;
    std::string next_cursor;
  };
  // Oldest first; only those of sandbox `sandbox` when given.
  SnapshotPage list_snapshots(const std::string& sandbox, size_t limit,
                              const std::string& cursor) const;
  asio::awaitable<void> delete_snapshot(const std::string& id_or_name);
  // Puts a snapshot's files in place of the sandbox's (`{"snapshot"}`, one of its own); a
  // running sandbox is stopped for it and started again.
  asio::awaitable<Sandbox> restore(const std::string& id_or_name, const nlohmann::json& body);
  // `{"count", "names", "labels"}`: new started sandboxes whose files equal the parent's at
  // one instant (the parent frozen for the capture only). All or none are made.
  asio::awaitable<std::vector<Sandbox>> fork(const std::string& id_or_name,
                                             const nlohmann::json& body);
  // The ids of the sandboxes forked from `id`.
  std::vector<std::string> children(const std::string& id) const;
  // Packs a stopped sandbox's files away (state archived); start() brings them back.
  asio::awaitable<Sandbox> archive(const std::string& id_or_name);

  // A started sandbox and the channel to its init; marks activity. conflict when it does not run
  // (also when it is paused).
  std::pair<Sandbox, std::shared_ptr<node::Channel>> running(const std::string& id_or_name);
  // The same, resuming a paused sandbox first when `auto_resume`.
  asio::awaitable<std::pair<Sandbox, std::shared_ptr<node::Channel>>> reach(
      const std::string& id_or_name, bool auto_resume);
  void touch(const std::string& id);
  sys::CgroupStats stats(const std::string& id) { return node_.stats(id); }
  std::vector<Sandbox> all() const;
  // "sandbox <id>" when a sandbox (or a pool box) is made from image `image_id`, else "".
  std::string image_user(const std::string& image_id) const;
  Sessions& sessions() { return sessions_; }
  // Starts `request` in the background in a started sandbox; the session (its id is kept
  // across restarts of the daemon).
  asio::awaitable<nlohmann::json> start_session(const std::string& id_or_name,
                                                const ExecRequest& request, bool auto_resume);
  void remove_session(const std::string& id_or_name, const std::string& session_id);

 private:
  Capabilities capabilities() const;
  Snapshot& find_snapshot(const std::string& id_or_name);
  const Snapshot& find_snapshot(const std::string& id_or_name) const;
  void save_snapshot(const Snapshot& s);
  // Makes `s` a started sandbox (recorded first, its name taken before the first wait): a new
  // box, or the warm pool box of the same id named and limited. On failure it is gone again.
  asio::awaitable<Sandbox> make_box(Sandbox s, bool warm);
  // Marks a sandbox busy with an operation that keeps its state (pause, resume, resize,
  // snapshot, fork) for the guard's life; conflict when it already is.
  class BusyGuard {
   public:
    BusyGuard(Sandboxes& owner, const Sandbox& s, const std::string& what);
    ~BusyGuard() { owner_.in_flight_.erase(id_); }
    BusyGuard(const BusyGuard&) = delete;
    BusyGuard& operator=(const BusyGuard&) = delete;

   private:
    Sandboxes& owner_;
    std::string id_;
  };
  // Throws when `s` is in a transitional state or busy with an operation.
  void check_idle(const Sandbox& s) const;
  Sandbox& find(const std::string& id_or_name);
  const Sandbox& find(const std::string& id_or_name) const;
  void save(const Sandbox& s);
  void audit(const std::string& action, const std::string& target, const std::string& error = "");
  static node::BoxConfig config_for(const Sandbox& s);
  // Each marks the box busy before its first wait, so that a concurrent call sees the state.
  asio::awaitable<void> do_stop(std::string id, std::string why);
  asio::awaitable<void> do_delete(std::string id, std::string why);
  asio::awaitable<void> timers();
  asio::awaitable<void> auto_archive(std::string id);
  // Makes pool boxes one at a time until the pool is full.
  asio::awaitable<void> fill_pool();
  void refill_pool();
  // The image the pool's boxes are made of now (the default image's id; "" when it is gone).
  std::string pool_image_id() const;
  // Whether a pool box of `pool_image` can serve `spec` (that image, the default runtime).
  bool fits_pool(const SandboxSpec& spec, const std::string& pool_image) const;
  // The spec of a create that asks for nothing (the default image, resolved now).
  SandboxSpec default_spec() const;
  // Removes the pool's boxes when the default image changed since they were made.
  asio::awaitable<void> retire_stale_pool();
  void check_timers();

  asio::any_io_executor executor_;
  Store& store_;
  node::NodeClient& node_;
  Metrics& metrics_;
  Options options_;
  Sessions sessions_;
  std::map<std::string, Sandbox> boxes_;          // by id
  std::map<std::string, std::string> names_;      // name -> id
  std::set<std::string> dirty_activity_;          // touched since the last save
  std::map<std::string, std::string> in_flight_;  // id -> the operation it is busy with
  std::map<std::string, Snapshot> snapshots_;     // by id
  std::map<std::string, std::string> snapshot_names_;
  std::unique_ptr<asio::steady_timer> timer_;
  bool stopping_ = false;
  std::deque<Sandbox> pool_;  // started, nobody's yet; stored as "creating" so that a crash
                              // leaves them to recovery, which removes them
  bool filling_ = false;
  std::chrono::steady_clock::time_point last_take_;
  static constexpr std::chrono::milliseconds kPoolQuiet{50};
};

}  // namespace pitbox::control
