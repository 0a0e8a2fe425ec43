#include "node/local_node.h"

#include <fcntl.h>
#include <sys/socket.h>

#include <set>
#include <sstream>

#include "node/blocking.h"
#include "sys/error.h"
#include "sys/fs.h"
#include "sys/netlink.h"

namespace pitbox::node {

namespace {

BoxRequest request_for(const BoxConfig& c) {
  BoxRequest r;
  r.id = c.id;
  r.image = c.image;
  r.hostname = c.hostname;
  r.limits = c.limits;
  r.disk = c.disk;
  r.snapshot = c.snapshot;
  r.network = c.network;
  return r;
}

}  // namespace

LocalNode::LocalNode(asio::any_io_executor executor, Boxes::Options options, size_t threads)
    : executor_(std::move(executor)), pool_(threads), boxes_(std::move(options)) {}

LocalNode::~LocalNode() {
  pool_.join();
  // Boxes not detached go with us (tests); a daemon detaches them first.
  for (auto& [id, e] : entries_) {
    if (e.channel) e.channel->close();
  }
}

template <typename F>
asio::awaitable<std::invoke_result_t<F>> LocalNode::blocking(F fn) {
  return run_blocking(pool_, std::move(fn));
}

LocalNode::Entry& LocalNode::entry(const std::string& id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) throw not_found("box " + id + " is not on this node");
  return it->second;
}

LocalNode::Entry& LocalNode::running_entry(const std::string& id) {
  auto it = entries_.find(id);
  if (it == entries_.end() || !it->second.box->running() || !it->second.channel) {
    throw Error(ErrorCode::conflict, "box " + id + " does not run");
  }
  return it->second;
}

asio::awaitable<uint64_t> LocalNode::snapshot(const std::string& id,
                                              const std::string& snapshot_id) {
  LocalBox* box = entry(id).box.get();
  auto task = [box, snapshot_id] { return box->snapshot(snapshot_id); };
  co_return co_await blocking(std::move(task));
}

asio::awaitable<void> LocalNode::remove_snapshot(const std::string& snapshot_id) {
  auto task = [this, snapshot_id] { boxes_.remove_snapshot(snapshot_id); };
  co_await blocking(std::move(task));
}

asio::awaitable<void> LocalNode::restore(const std::string& id, const std::string& snapshot_id) {
  LocalBox* box = entry(id).box.get();
  auto task = [box, snapshot_id] { box->restore(snapshot_id); };
  co_await blocking(std::move(task));
}

asio::awaitable<uint64_t> LocalNode::archive(const std::string& id) {
  LocalBox* box = entry(id).box.get();
  auto task = [box] { return box->archive(); };
  co_return co_await blocking(std::move(task));
}

asio::awaitable<void> LocalNode::pause(const std::string& id) {
  LocalBox* box = running_entry(id).box.get();
  auto task = [box] { box->pause(); };
  co_await blocking(std::move(task));
}

asio::awaitable<void> LocalNode::resume(const std::string& id) {
  LocalBox* box = running_entry(id).box.get();
  auto task = [box] { box->resume(); };
  co_await blocking(std::move(task));
}

asio::awaitable<storage::LayerDesc> LocalNode::commit(const std::string& id) {
  Entry& e = entry(id);
  if (e.box->running()) throw Error(ErrorCode::conflict, "box " + id + " runs: stop it first");
  LocalBox* box = e.box.get();
  auto task = [this, box] { return boxes_.images().add_layer_from_dir(box->upper_dir()); };
  co_return co_await blocking(std::move(task));
}

void LocalNode::Entry::disconnect() {
  if (channel) channel->close();
  channel.reset();
  netns.reset();
}

asio::awaitable<void> LocalNode::connect(Entry& e) {
  e.netns.reset();
  e.channel = std::make_shared<Channel>(executor_, e.box->box().take_channel());
  co_await e.channel->handshake();
}

asio::awaitable<nlohmann::json> LocalNode::create(const BoxConfig& config) {
  if (entries_.count(config.id)) throw Error(ErrorCode::conflict, "box " + config.id + " exists");
  BoxRequest request = request_for(config);
  auto task = [this, request] { return boxes_.create(request); };
  std::unique_ptr<LocalBox> box = co_await blocking(std::move(task));
  Entry& e = entries_[config.id];
  e.box = std::move(box);
  std::exception_ptr failed;
  try {
    co_await connect(e);
  } catch (...) {
    failed = std::current_exception();  // (no co_await inside a handler)
  }
  if (failed) {
    auto doomed = std::move(e.box);
    entries_.erase(config.id);
    auto destroy = [&doomed] { doomed->destroy(); };
    co_await blocking(std::move(destroy));
    std::rethrow_exception(failed);
  }
  co_return e.box->location().to_json();
}

asio::awaitable<nlohmann::json> LocalNode::start(const BoxConfig& config) {
  auto it = entries_.find(config.id);
  if (it == entries_.end()) {
    BoxRequest request = request_for(config);
    auto task = [this, request] { return boxes_.open_stopped(request); };
    auto box = co_await blocking(std::move(task));
    it = entries_.emplace(config.id, Entry{std::move(box), nullptr}).first;
  }
  Entry& e = it->second;
  if (!e.box->running()) {
    LocalBox* box = e.box.get();
    BoxConfig wanted = config;  // a stopped box may have been renamed or resized meanwhile
    auto task = [box, wanted] {
      box->reconfigure(wanted.hostname, wanted.limits, wanted.disk);
      box->set_network(wanted.network);
      box->start();
    };
    co_await blocking(std::move(task));
    co_await connect(e);
  }
  co_return e.box->location().to_json();
}

asio::awaitable<void> LocalNode::reconfigure(const BoxConfig& config) {
  Entry& e = running_entry(config.id);
  LocalBox* box = e.box.get();
  std::shared_ptr<Channel> channel = e.channel;
  bool renamed = box->request().hostname != config.hostname;
  BoxConfig wanted = config;
  auto task = [box, wanted] { box->reconfigure(wanted.hostname, wanted.limits, wanted.disk); };
  co_await blocking(std::move(task));
  if (renamed) {
    std::string content = etc_hosts(config.hostname);
    auto hosts = co_await channel->write_file("/etc/hosts", 0644u);
    co_await hosts->write(content);
    co_await hosts->finish();
  }
}

asio::awaitable<void> LocalNode::set_network(const std::string& id, const net::Policy& policy) {
  auto it = entries_.find(id);
  if (it == entries_.end()) co_return;  // taken from the config at its next start
  LocalBox* box = it->second.box.get();
  auto task = [box, policy] { box->set_network(policy); };
  co_await blocking(std::move(task));
}

asio::awaitable<void> LocalNode::stop(const std::string& id, std::chrono::milliseconds grace) {
  auto it = entries_.find(id);
  if (it == entries_.end() || !it->second.box->running()) co_return;
  Entry& e = it->second;
  LocalBox* box = e.box.get();
  if (box->paused()) {
    // A frozen init cannot be asked to shut down.
    auto thaw = [box] { box->resume(); };
    co_await blocking(std::move(thaw));
  }
  bool asked = false;
  if (e.channel && !e.channel->error()) {
    try {
      co_await e.channel->shutdown(grace);
      asked = true;
    } catch (const Error&) {
      // init is not answering: it is killed below
    }
  }
  e.disconnect();
  auto wait = asked ? grace + std::chrono::seconds(2) : std::chrono::milliseconds(0);
  auto task = [box, wait] { box->stop(wait); };
  co_await blocking(std::move(task));
}

asio::awaitable<void> LocalNode::destroy(const std::string& id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) co_return;
  Entry e = std::move(it->second);
  entries_.erase(it);
  if (e.channel) e.channel->close();
  auto task = [&e] { e.box->destroy(); };
  co_await blocking(std::move(task));
}

asio::awaitable<bool> LocalNode::recover(const BoxConfig& config, const nlohmann::json& location,
                                         bool was_running) {
  BoxRequest request = request_for(config);
  BoxLocation where = BoxLocation::from_json(location);
  auto task = [this, request, where, was_running] {
    return was_running ? boxes_.reattach(request, where) : boxes_.open_stopped(request);
  };
  auto box = co_await blocking(std::move(task));
  Entry& e = entries_[config.id];
  e.box = std::move(box);
  if (!e.box->running()) co_return false;
  if (e.box->paused()) {
    LocalBox* b = e.box.get();
    auto thaw = [b] { b->resume(); };
    co_await blocking(std::move(thaw));
  }
  bool answered = true;
  try {
    co_await connect(e);
  } catch (const Error&) {
    answered = false;  // init does not answer: the box is treated as stopped
  }
  if (!answered) {
    e.disconnect();
    LocalBox* b = e.box.get();
    auto stop = [b] { b->stop(); };
    co_await blocking(std::move(stop));
  }
  co_return answered;
}

std::shared_ptr<Channel> LocalNode::channel(const std::string& id) {
  auto it = entries_.find(id);
  if (it == entries_.end() || !it->second.box->running()) return nullptr;
  return it->second.channel;
}

sys::CgroupStats LocalNode::stats(const std::string& id) {
  auto it = entries_.find(id);
  return it == entries_.end() ? sys::CgroupStats{} : it->second.box->stats();
}

std::vector<int> LocalNode::listening_ports(const std::string& id) {
  pid_t init = running_entry(id).box->box().init_pid();
  std::set<int> ports;
  for (const char* table : {"tcp", "tcp6"}) {
    std::string text;
    try {
      text = sys::read_file("/proc/" + std::to_string(init) + "/net/" + table);
    } catch (const Error&) {
      continue;  // no IPv6 in this kernel
    }
    // "  sl  local_address rem_address   st ...": "0100007F:1F40 00000000:0000 0A" (0A: LISTEN)
    std::istringstream lines(text);
    std::string line;
    std::getline(lines, line);
    while (std::getline(lines, line)) {
      std::istringstream fields(line);
      std::string sl, local, remote, state;
      if (!(fields >> sl >> local >> remote >> state) || state != "0A") continue;
      size_t colon = local.rfind(':');
      if (colon != std::string::npos) ports.insert(std::stoi(local.substr(colon + 1), nullptr, 16));
    }
  }
  return {ports.begin(), ports.end()};
}

sys::UniqueFd LocalNode::box_socket(const std::string& id) {
  Entry& e = running_entry(id);
  if (!e.netns) {
    std::string path = "/proc/" + std::to_string(e.box->box().init_pid()) + "/ns/net";
    e.netns = sys::UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!e.netns) throw_errno("opening the network namespace of box " + id);
  }
  sys::EnterNetns in_box(e.netns.get());
  sys::UniqueFd socket(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!socket) throw_errno("a socket in box " + id);
  return socket;
}

void LocalNode::detach_all() {
  for (auto& [id, e] : entries_) {
    e.disconnect();
    e.box->detach();
  }
  entries_.clear();
}

}  // namespace pitbox::node
