// The boxes of this machine. A persistent box (made through the daemon) keeps its writable
// layer in <state>/boxes/<id> and can be stopped, started again and found again after the
// daemon restarts. A one-shot box (pitbox run) keeps its writable layer in memory, dies with
// the process that made it, and has only a lock under the run directory
// (/run/pitbox/<hash of the state directory>/one-shot/<id>) for a later sweep.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "net/network.h"
#include "net/resolver.h"
#include "node/ids.h"
#include "runtime/runtime.h"
#include "storage/images.h"
#include "storage/rootfs.h"
#include "sys/cgroup.h"

namespace pitbox::node {

struct BoxRequest {
  std::string id;  // "" = a new one
  std::string image = "host";
  std::string hostname;  // defaults to the box id
  sys::CgroupLimits limits;
  uint64_t disk = 0;  // bytes the writable layer may hold (0 = no limit; needs quotas)
  bool one_shot = false;
  // A snapshot (its id) whose files a new box starts with.
  std::string snapshot;
  // The box's network policy: it gets an address and eth0 (Boxes::Options::network). None: a
  // namespace of its own with only loopback (one-shot boxes, build steps).
  std::optional<net::Policy> network;
};

// Where a running box is, for a node that restarts: its init and its host id range.
struct BoxLocation {
  sys::ProcessRef init;
  uint32_t id_slot = 0;
  std::string address;  // its IPv4 address when it has a network

  nlohmann::json to_json() const;
  static BoxLocation from_json(const nlohmann::json& j);
};

class Boxes;

class LocalBox {
 public:
  LocalBox(Boxes& boxes, BoxRequest request, storage::Image image);
  ~LocalBox();
  LocalBox(const LocalBox&) = delete;
  LocalBox& operator=(const LocalBox&) = delete;

  const std::string& id() const { return request_.id; }
  const BoxRequest& request() const { return request_; }
  const storage::Image& image() const { return image_; }
  const std::string& dir() const { return dir_; }  // "" for one-shot boxes
  std::string upper_dir() const;                   // the writable layer's files
  bool running() const { return box_ != nullptr; }
  runtime::Box& box() { return *box_; }
  BoxLocation location() const;
  sys::CgroupStats stats() const { return box_ ? box_->stats() : sys::CgroupStats{}; }

  // A fresh init on the box's files.
  void start();
  // Gives the box another hostname and limits, now when it runs and at its later starts (its
  // /etc/hosts follows at the next start; etc_hosts() says what to write there now).
  void reconfigure(const std::string& hostname, const sys::CgroupLimits& limits, uint64_t disk = 0);
  // Changes the box's network policy, at once when it runs. A running box cannot get a network
  // or lose it before its next start (conflict).
  void set_network(const std::optional<net::Policy>& policy);
  // Waits up to `grace` for init to end (after being asked to shut down), then kills what is
  // left and removes the runtime's leftovers. The files stay.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(0));
  // Captures the box's files as the snapshot `snapshot_id` (the box frozen meanwhile when it
  // runs and is not paused). Returns the bytes it holds.
  uint64_t snapshot(const std::string& snapshot_id);
  // Puts the files of snapshot `snapshot_id` in place of the box's (a stopped box).
  void restore(const std::string& snapshot_id);
  // Packs a stopped box's writable layer (tar + zstd) into <state>/archives and frees its
  // directory; start() unpacks it again. Returns the archive's bytes.
  uint64_t archive();
  bool archived() const;
  // Freezes every process of a running box (nothing runs, memory stays) / lets them go on.
  void pause();
  void resume();
  bool paused() const { return box_ && box_->frozen(); }
  // Stops the box and removes everything it had on this machine. Idempotent.
  void destroy();
  // Leaves the box running for a later node (a daemon shutting down).
  void detach();

 private:
  friend class Boxes;
  Boxes& boxes_;
  BoxRequest request_;
  storage::Image image_;
  std::string dir_;      // persistent boxes: the writable layer's directory
  std::string run_dir_;  // one-shot boxes: the lock's directory
  std::string archive_path() const;
  void unarchive();
  void release_network();
  sys::UniqueFd lock_;
  IdLease lease_;
  bool networked_ = false;  // runs with a network of the node's (rules for lease_'s slot)
  std::unique_ptr<runtime::Box> box_;
  bool gone_ = false;  // destroyed or detached
};

class Boxes {
 public:
  struct Options {
    std::string state_dir;
    std::string init_path;  // default: find_init_binary()
    // Memory-backed directory for this state directory's small runtime files; default:
    // /run/pitbox/<a hash of state_dir>.
    std::string run_dir;
    // Host id ranges are leased machine-wide, whatever the state directory.
    std::string ids_dir = "/run/pitbox/ids";
    std::string cgroup_parent = "pitbox";
    // The storage driver: "overlay", "btrfs" or "btrfs:SIZE" (storage::open_storage).
    std::string storage = "overlay";
    // Networks for boxes that ask for one (BoxRequest::network); none: every box has only
    // loopback. The tag defaults to one derived from state_dir.
    std::optional<net::NetworkOptions> network;
    // How many namespaces with links are kept ready ahead of creates.
    size_t network_pool = 4;
    // Where the node's DNS resolver for boxes asks: "IP[:PORT],..."; "" = the host's
    // /etc/resolv.conf; "off" = no resolver (boxes resolve no names).
    std::string dns_upstream;
  };
  explicit Boxes(Options options);
  ~Boxes();

  // Makes and starts a box; when this throws, nothing of it is left.
  std::unique_ptr<LocalBox> create(const BoxRequest& request);
  // A persistent box whose files exist but which does not run.
  std::unique_ptr<LocalBox> open_stopped(const BoxRequest& request);
  // A persistent box that was running when the previous node went away; stopped if its init is
  // gone meanwhile.
  std::unique_ptr<LocalBox> reattach(const BoxRequest& request, const BoxLocation& where);
  // Removes what one-shot boxes of processes that died left behind. Returns how many.
  int sweep();

  storage::ImageStore& images() { return images_; }
  storage::StorageDriver& storage() { return *storage_; }
  // Where snapshot `id` keeps its files; removes one (a missing one is not an error).
  std::string snapshot_dir(const std::string& id) const;
  void remove_snapshot(const std::string& id);
  runtime::Runtime& runtime() { return *runtime_; }
  net::Network* network() { return network_.get(); }
  const std::string& state_dir() const { return options_.state_dir; }

 private:
  friend class LocalBox;
  runtime::BoxSpec spec_for(const LocalBox& box) const;
  // A namespace with links, leased id slot included: from the pool, else made now.
  struct PreparedNet {
    IdLease lease;
    net::Attachment attachment;
  };
  PreparedNet take_net();
  void start_resolver();
  PreparedNet prepare_net();
  void fill_pool();

  Options options_;
  std::string boxes_dir_;  // <state>/boxes: writable layers of persistent boxes
  std::string mount_dir_;  // <state>/mnt: where boxes attach their root (each in its own namespace)
  std::string run_one_shot_dir_;  // <run>/one-shot
  std::string archives_dir_;      // <state>/archives: packed writable layers of archived boxes
  std::unique_ptr<storage::StorageDriver> storage_;
  storage::ImageStore images_;
  IdAllocator id_allocator_;
  std::unique_ptr<runtime::Runtime> runtime_;
  std::unique_ptr<net::Network> network_;
  std::unique_ptr<net::Resolver> resolver_;
  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::deque<PreparedNet> pool_;
  bool pool_stopping_ = false;
  std::thread pool_thread_;  // keeps pool_ full
};

// The /etc/hosts of a box called `hostname`.
std::string etc_hosts(const std::string& hostname);

// The default run directory of a state directory.
std::string default_run_dir(const std::string& state_dir);
// 16 hex digits naming a state directory (its run directory, its network's tag).
std::string state_hash(const std::string& state_dir);

// Where pitbox-init is: $PITBOX_INIT, else beside the running executable.
std::string find_init_binary();

}  // namespace pitbox::node
