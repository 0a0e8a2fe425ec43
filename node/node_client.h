// What the control plane asks of a node: make, start, stop and destroy boxes, and reach their
// init. In-process on one machine (LocalNode); over HTTP for a cluster later, behind the same
// interface. Everything is called on, and answers on, the control plane's executor.
#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "net/policy.h"
#include "node/channel.h"
#include "storage/images.h"
#include "sys/cgroup.h"

namespace pitbox::node {

struct BoxConfig {
  std::string id;
  std::string image;
  std::string hostname;
  sys::CgroupLimits limits;
  uint64_t disk = 0;     // bytes its writable layer may hold; 0 = no limit
  std::string snapshot;  // create: a snapshot id whose files the box starts with
  // Its network policy; none: only loopback. Changed on a running box with set_network().
  std::optional<net::Policy> network;
};

class NodeClient {
 public:
  virtual ~NodeClient() = default;

  // The images boxes are made from (BoxConfig::image names one by id or reference).
  virtual storage::ImageStore& images() = 0;
  // Makes and starts a box; when it returns the box can run processes. Returns where the box
  // is (for recover()).
  virtual asio::awaitable<nlohmann::json> create(const BoxConfig& config) = 0;
  // Starts a stopped box again on its files.
  virtual asio::awaitable<nlohmann::json> start(const BoxConfig& config) = 0;
  // Gives a running box the hostname and limits of `config` (its /etc/hosts too).
  virtual asio::awaitable<void> reconfigure(const BoxConfig& config) = 0;
  // Gives the box another network policy: at once when it runs, else at its next start.
  virtual asio::awaitable<void> set_network(const std::string& id, const net::Policy& policy) = 0;
  // Ends every process of the box (SIGTERM, SIGKILL after `grace`); the files stay.
  virtual asio::awaitable<void> stop(const std::string& id, std::chrono::milliseconds grace) = 0;
  // Captures a box's files (frozen meanwhile if it runs) as snapshot `snapshot_id`; returns
  // the bytes it holds.
  virtual asio::awaitable<uint64_t> snapshot(const std::string& id,
                                             const std::string& snapshot_id) = 0;
  virtual asio::awaitable<void> remove_snapshot(const std::string& snapshot_id) = 0;
  // Puts a snapshot's files in place of a stopped box's.
  virtual asio::awaitable<void> restore(const std::string& id, const std::string& snapshot_id) = 0;
  // Packs a stopped box's files into an archive and frees its directory (start() unpacks them);
  // returns the archive's bytes.
  virtual asio::awaitable<uint64_t> archive(const std::string& id) = 0;
  // Freezes every process of a running box / lets them go on where they were.
  virtual asio::awaitable<void> pause(const std::string& id) = 0;
  virtual asio::awaitable<void> resume(const std::string& id) = 0;
  // Stops the box and removes everything it had. A box the node does not know is not an error.
  virtual asio::awaitable<void> destroy(const std::string& id) = 0;
  // After the control plane restarted: finds the box again. True when it still runs (and its
  // processes are listed in channel(id)->hello()), false when it stopped meanwhile. A paused
  // box is resumed to be reached (pause it again after).
  virtual asio::awaitable<bool> recover(const BoxConfig& config, const nlohmann::json& location,
                                        bool was_running) = 0;
  // The channel to a running box's init; null when the box does not run.
  virtual std::shared_ptr<Channel> channel(const std::string& id) = 0;
  virtual sys::CgroupStats stats(const std::string& id) = 0;
  // The TCP ports something listens on in a running box (any address, its loopback included),
  // ascending.
  virtual std::vector<int> listening_ports(const std::string& id) = 0;
  // A TCP socket made in a running box's network namespace, not yet connected: connected to
  // 127.0.0.1:PORT it reaches what listens there, on any address of the box (preview links).
  virtual sys::UniqueFd box_socket(const std::string& id) = 0;
  // Adds what a stopped box changed in its files (its writable layer) to the image store as a
  // layer: how builds make their layers.
  virtual asio::awaitable<storage::LayerDesc> commit(const std::string& id) = 0;
  // Lets go of every box and leaves them running (the control plane is shutting down).
  virtual void detach_all() = 0;
};

}  // namespace pitbox::node
