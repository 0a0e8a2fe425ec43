// The NodeClient of a single machine: boxes of this process's node::Boxes. Box set-up and
// teardown (blocking system calls) run on a small thread pool; channels live on the caller's
// executor.
#pragma once

#include <map>
#include <memory>

#include "node/boxes.h"
#include "node/node_client.h"

namespace pitbox::node {

class LocalNode final : public NodeClient {
 public:
  LocalNode(asio::any_io_executor executor, Boxes::Options options, size_t threads = 4);
  ~LocalNode() override;

  storage::ImageStore& images() override { return boxes_.images(); }
  storage::StorageDriver& storage() { return boxes_.storage(); }
  asio::awaitable<storage::LayerDesc> commit(const std::string& id) override;
  asio::awaitable<nlohmann::json> create(const BoxConfig& config) override;
  asio::awaitable<nlohmann::json> start(const BoxConfig& config) override;
  asio::awaitable<void> reconfigure(const BoxConfig& config) override;
  asio::awaitable<void> set_network(const std::string& id, const net::Policy& policy) override;
  net::Network* network() { return boxes_.network(); }
  asio::awaitable<uint64_t> snapshot(const std::string& id,
                                     const std::string& snapshot_id) override;
  asio::awaitable<void> remove_snapshot(const std::string& snapshot_id) override;
  asio::awaitable<void> restore(const std::string& id, const std::string& snapshot_id) override;
  asio::awaitable<uint64_t> archive(const std::string& id) override;
  asio::awaitable<void> pause(const std::string& id) override;
  asio::awaitable<void> resume(const std::string& id) override;
  asio::awaitable<void> stop(const std::string& id, std::chrono::milliseconds grace) override;
  asio::awaitable<void> destroy(const std::string& id) override;
  asio::awaitable<bool> recover(const BoxConfig& config, const nlohmann::json& location,
                                bool was_running) override;
  std::shared_ptr<Channel> channel(const std::string& id) override;
  sys::CgroupStats stats(const std::string& id) override;
  std::vector<int> listening_ports(const std::string& id) override;
  sys::UniqueFd box_socket(const std::string& id) override;
  void detach_all() override;

 private:
  struct Entry {
    std::unique_ptr<LocalBox> box;
    std::shared_ptr<Channel> channel;
    sys::UniqueFd netns;  // of the running box, opened at its first box_socket
    // Ends the channel (and what belongs to this run of the box).
    void disconnect();
  };
  // Runs `fn` on the pool and resumes on our executor with its result.
  template <typename F>
  asio::awaitable<std::invoke_result_t<F>> blocking(F fn);
  // Opens the channel of a box that just started (or was found again) and says hello.
  asio::awaitable<void> connect(Entry& entry);
  Entry& entry(const std::string& id);
  // The entry of a box that runs (conflict when it does not).
  Entry& running_entry(const std::string& id);

  asio::any_io_executor executor_;
  asio::thread_pool pool_;
  Boxes boxes_;
  std::map<std::string, Entry> entries_;
};

}  // namespace pitbox::node
