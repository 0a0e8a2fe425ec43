#include "node/boxes.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "runtime/container/container.h"
#include "storage/layer.h"
#include "sys/error.h"
#include "sys/fs.h"
#include "sys/log.h"

namespace pitbox::node {

namespace {

void make_private_dir(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700) return;
  sys::make_dirs(path, 0700);
  if (::chmod(path.c_str(), 0700) != 0) throw_errno("chmod " + path);
}

// A directory older than this without its lock taken was left by a creator that died.
constexpr auto kAbandonedAfter = std::chrono::minutes(1);

bool older_than(const std::string& path, std::chrono::seconds age) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return false;
  return std::chrono::system_clock::now() - std::chrono::system_clock::from_time_t(st.st_mtime) >
         age;
}

}  // namespace

std::string etc_hosts(const std::string& hostname) {
  return "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + hostname +
         "\n";
}

std::string default_run_dir(const std::string& state_dir) {
  return "/run/pitbox/" + state_hash(state_dir);
}

std::string state_hash(const std::string& state_dir) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a: stable, and enough to keep instances apart
  for (unsigned char ch : state_dir) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string find_init_binary() { return sys::find_helper_binary("pitbox-init", "PITBOX_INIT"); }

nlohmann::json BoxLocation::to_json() const {
  nlohmann::json j = {
      {"init_pid", init.pid}, {"init_start", init.start_time}, {"id_slot", id_slot}};
  if (!address.empty()) j["address"] = address;
  return j;
}

BoxLocation BoxLocation::from_json(const nlohmann::json& j) {
  BoxLocation l;
  if (!j.is_object()) return l;  // unknown: a box that was never seen running
  l.init.pid = j.value("init_pid", 0);
  l.init.start_time = j.value("init_start", uint64_t{0});
  l.address = j.value("address", "");
  l.id_slot = j.value("id_slot", 0u);
  return l;
}

// ---------------------------------------------------------------------------------------------

std::string LocalBox::upper_dir() const {
  if (dir_.empty()) throw invalid_argument("box " + request_.id + " keeps its files in memory");
  return dir_ + "/upper";
}

LocalBox::LocalBox(Boxes& boxes, BoxRequest request, storage::Image image)
    : boxes_(boxes), request_(std::move(request)), image_(std::move(image)) {
  if (request_.hostname.empty()) request_.hostname = request_.id;
  if (!request_.one_shot) dir_ = boxes_.boxes_dir_ + "/" + request_.id;
}

LocalBox::~LocalBox() {
  try {
    destroy();
  } catch (...) {
  }
}

BoxLocation LocalBox::location() const {
  BoxLocation l;
  if (box_) l.init = sys::ProcessRef::of(box_->init_pid());
  l.id_slot = lease_.slot();
  if (networked_) l.address = sys::ipv4_str(boxes_.network_->address_of(lease_.slot()));
  return l;
}

void LocalBox::reconfigure(const std::string& hostname, const sys::CgroupLimits& limits,
                           uint64_t disk) {
  if (disk != request_.disk && !dir_.empty() && !archived()) {
    boxes_.storage_->set_quota(dir_ + "/upper", disk);
  }
  request_.disk = disk;
  if (!box_) {  // taken at the next start
    request_.hostname = hostname;
    request_.limits = limits;
    return;
  }
  if (hostname != request_.hostname) {
    box_->set_hostname(hostname);
    // Members of its box-to-box networks know it by its new name.
    if (networked_) boxes_.network_->apply(lease_.slot(), *request_.network, hostname);
  }
  request_.hostname = hostname;
  if (limits.millicpus != request_.limits.millicpus ||
      limits.memory_bytes != request_.limits.memory_bytes || limits.pids != request_.limits.pids) {
    box_->set_limits(limits);
  }
  request_.limits = limits;
}

std::string LocalBox::archive_path() const {
  return boxes_.archives_dir_ + "/" + request_.id + ".tar.zst";
}

bool LocalBox::archived() const {
  return !dir_.empty() && !sys::is_dir(dir_ + "/upper") && sys::exists(archive_path());
}

uint64_t LocalBox::snapshot(const std::string& snapshot_id) {
  if (dir_.empty()) throw invalid_argument("box " + id() + " keeps its files in memory");
  if (archived()) throw Error(ErrorCode::conflict, "box " + id() + " is archived: start it first");
  std::string dest = boxes_.snapshot_dir(snapshot_id);
  if (sys::exists(dest)) throw Error(ErrorCode::conflict, "snapshot " + snapshot_id + " exists");
  // The files must not change while they are captured: the box is frozen for exactly that.
  bool freeze = box_ && !box_->frozen();
  if (freeze) box_->freeze();
  std::exception_ptr failed;
  try {
    boxes_.storage_->snapshot(dir_ + "/upper", dest);
  } catch (...) {
    failed = std::current_exception();
  }
  if (freeze) box_->thaw();
  if (failed) {
    try {
      boxes_.storage_->remove_layer(dest);
    } catch (...) {
    }
    std::rethrow_exception(failed);
  }
  return boxes_.storage_->usage(dest);
}

void LocalBox::restore(const std::string& snapshot_id) {
  if (box_) throw Error(ErrorCode::conflict, "box " + id() + " runs: stop it first");
  if (dir_.empty()) throw invalid_argument("box " + id() + " keeps its files in memory");
  std::string from = boxes_.snapshot_dir(snapshot_id);
  if (!sys::is_dir(from)) throw not_found("snapshot " + snapshot_id + " has no files on this node");
  // The snapshot's copy is made beside the box first: a failure leaves the box as it was.
  std::string staging = boxes_.boxes_dir_ + "/.restore-" + id();
  boxes_.storage_->remove_layer(staging + "/upper");
  sys::remove_tree(staging);
  if (::mkdir(staging.c_str(), 0700) != 0) throw_errno("mkdir " + staging);
  try {
    boxes_.storage_->create_writable(staging, from);
    if (request_.disk) boxes_.storage_->set_quota(staging + "/upper", request_.disk);
  } catch (...) {
    sys::remove_tree(staging);
    throw;
  }
  if (archived()) {
    sys::make_dirs(dir_, 0700);
  } else {
    boxes_.storage_->remove_layer(dir_ + "/upper");
    sys::remove_tree(dir_ + "/work");
  }
  for (const char* part : {"/upper", "/work"}) {
    std::string a = staging + part, b = dir_ + part;
    if (::rename(a.c_str(), b.c_str()) != 0) throw_errno("rename " + a + " to " + b);
  }
  sys::remove_tree(staging);
  sys::remove_tree(archive_path());
}

uint64_t LocalBox::archive() {
  if (box_) throw Error(ErrorCode::conflict, "box " + id() + " runs: stop it first");
  if (dir_.empty()) throw invalid_argument("box " + id() + " keeps its files in memory");
  std::string path = archive_path();
  if (archived()) return sys::file_size(path);
  make_private_dir(boxes_.archives_dir_);
  std::string tmp = path + ".tmp";
  try {
    sys::UniqueFd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!out) throw_errno("create " + tmp);
    storage::pack_layer(dir_ + "/upper", out.get(), storage::Compression::zstd);
    if (::fsync(out.get()) != 0) throw_errno("fsync " + tmp);
    if (::rename(tmp.c_str(), path.c_str()) != 0) throw_errno("rename " + tmp);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  // The archive is complete: the directory goes.
  boxes_.storage_->remove_layer(dir_ + "/upper");
  sys::remove_tree(dir_ + "/work");
  return sys::file_size(path);
}

void LocalBox::unarchive() {
  std::string path = archive_path();
  sys::make_dirs(dir_, 0700);
  storage::WritableLayer layer = boxes_.storage_->create_writable(dir_);
  try {
    sys::UniqueFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in) throw_errno("open " + path);
    storage::unpack_layer(in.get(), layer.upper);
    if (request_.disk) boxes_.storage_->set_quota(layer.upper, request_.disk);
  } catch (...) {
    // The archive stays; the half-unpacked layer goes, so the box is still archived.
    boxes_.storage_->remove_layer(layer.upper);
    sys::remove_tree(layer.work);
    throw;
  }
  ::unlink(path.c_str());
}

void LocalBox::start() {
  if (gone_) throw Error(ErrorCode::conflict, "box " + id() + " is gone");
  if (box_) return;
  if (archived()) unarchive();
  std::optional<Boxes::PreparedNet> net;
  if (request_.network) {
    if (!boxes_.network_) {
      throw Error(ErrorCode::unavailable,
                  "this node has no network for boxes (box " + id() + " asked for one)");
    }
    boxes_.network_->check(*request_.network);
    net = boxes_.take_net();
    lease_ = std::move(net->lease);
  } else {
    // Leased to us until init runs, then to init: the lease follows the box, not this process.
    IdLease lease = boxes_.id_allocator_.acquire(sys::ProcessRef::self());
    lease_ = std::move(lease);
  }
  try {
    runtime::BoxSpec spec = boxes_.spec_for(*this);
    if (net) {
      networked_ = true;
      if (boxes_.resolver_) {
        spec.resolv_conf = "nameserver " + sys::ipv4_str(boxes_.network_->gateway()) + "\n";
      }
      boxes_.network_->apply(lease_.slot(), *request_.network, request_.hostname);
      spec.netns_fd = net->attachment.netns.get();
    }
    box_ = boxes_.runtime_->start(spec);
    if (!request_.one_shot) lease_.transfer(sys::ProcessRef::of(box_->init_pid()));
  } catch (...) {
    box_.reset();
    release_network();
    lease_.release();
    throw;
  }
  // The namespace's fd closes with `net`: the box's processes hold it now, and it ends with them.
}

void LocalBox::release_network() {
  if (!networked_) return;
  networked_ = false;
  boxes_.network_->release(lease_.slot());
}

void LocalBox::set_network(const std::optional<net::Policy>& policy) {
  if (policy && boxes_.network_) boxes_.network_->check(*policy);
  if (box_ && networked_ != policy.has_value()) {
    throw Error(ErrorCode::conflict, "box " + id() +
                                         (networked_ ? " runs with a network; it can lose it"
                                                     : " runs without a network; it can get one") +
                                         " only at its next start");
  }
  if (networked_) boxes_.network_->apply(lease_.slot(), *policy, request_.hostname);
  request_.network = policy;
}

void LocalBox::pause() {
  if (!box_) throw Error(ErrorCode::conflict, "box " + id() + " does not run");
  box_->freeze();
}

void LocalBox::resume() {
  if (!box_) throw Error(ErrorCode::conflict, "box " + id() + " does not run");
  box_->thaw();
}

void LocalBox::stop(std::chrono::milliseconds grace) {
  if (!box_) return;
  if (grace.count() > 0) box_->wait(grace);
  std::exception_ptr failed;
  // The slot is ours (not init's) until its network is gone: once init has ended, another box
  // could take the slot, and its link and rules would be the ones removed. If init ended and
  // another box has the slot already, nothing of the slot is ours to remove.
  bool ours = true;
  try {
    ours = lease_.take_back(sys::ProcessRef::self());
  } catch (...) {
    failed = std::current_exception();
  }
  try {
    box_->destroy();  // kills what is left, removes the cgroup
  } catch (...) {
    if (!failed) failed = std::current_exception();
  }
  box_.reset();
  try {
    if (ours) {
      release_network();
    } else {
      networked_ = false;
    }
  } catch (...) {
    if (!failed) failed = std::current_exception();
  }
  lease_.release();
  if (failed) std::rethrow_exception(failed);
}

void LocalBox::destroy() {
  if (gone_) return;
  gone_ = true;
  // Every step runs even if an earlier one failed; the first failure is reported.
  std::exception_ptr first;
  auto step = [&](auto&& fn) {
    try {
      fn();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  };
  step([&] { stop(); });
  step([&] { boxes_.runtime_->remove_leftovers(id()); });
  step([&] {
    if (dir_.empty()) return;
    boxes_.storage_->remove_layer(dir_ + "/upper");
    sys::remove_tree(dir_);
  });
  step([&] {
    if (!dir_.empty()) sys::remove_tree(archive_path());
  });
  step([&] {
    if (!run_dir_.empty()) sys::remove_tree(run_dir_);
  });
  lock_.reset();
  if (first) std::rethrow_exception(first);
}

void LocalBox::detach() {
  if (gone_) return;
  gone_ = true;
  if (box_) box_->detach();
  box_.reset();
  networked_ = false;  // its rules stay for the node that finds it again
  lease_.keep();
}

// ---------------------------------------------------------------------------------------------

Boxes::Boxes(Options options)
    : options_([](Options o) {
        if (o.run_dir.empty()) o.run_dir = default_run_dir(o.state_dir);
        return o;
      }(std::move(options))),
      mount_dir_(options_.state_dir + "/mnt"),
      run_one_shot_dir_(options_.run_dir + "/one-shot"),
      archives_dir_(options_.state_dir + "/archives"),
      images_(options_.state_dir),
      id_allocator_(options_.ids_dir) {
  // Box files are stored with in-box ids (a box's setuid-root binary is setuid root on disk):
  // nobody but root may walk into the state directory.
  for (const auto& d : {options_.state_dir, mount_dir_, options_.run_dir, run_one_shot_dir_}) {
    make_private_dir(d);
  }
  storage_ = storage::open_storage({options_.state_dir, options_.storage});
  boxes_dir_ = storage_->boxes_dir();
  if (options_.init_path.empty()) options_.init_path = find_init_binary();
  runtime_ = std::make_unique<runtime::container::ContainerRuntime>(
      runtime::container::ContainerRuntime::Options{options_.init_path, options_.cgroup_parent});
  if (options_.network) {
    if (options_.network->tag.empty())
      options_.network->tag = state_hash(options_.state_dir).substr(0, 4);
    network_ = std::make_unique<net::Network>(*options_.network);
    start_resolver();
    if (options_.network_pool > 0) pool_thread_ = std::thread([this] { fill_pool(); });
  }
}

void Boxes::start_resolver() {
  if (options_.dns_upstream == "off") return;
  std::vector<net::Upstream> upstreams;
  if (options_.dns_upstream.empty()) {
    upstreams = net::resolv_conf_servers(
        sys::exists("/etc/resolv.conf") ? sys::read_file("/etc/resolv.conf") : std::string());
  } else {
    std::string list = options_.dns_upstream;
    for (size_t start = 0; start <= list.size();) {
      size_t comma = list.find(',', start);
      std::string item = list.substr(start, comma == std::string::npos ? comma : comma - start);
      if (!item.empty()) upstreams.push_back(net::parse_upstream(item, "--dns-upstream"));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  try {
    resolver_ = std::make_unique<net::Resolver>(*network_, upstreams);
  } catch (const Error& e) {
    // Another daemon on this machine with the same range holds the gateway's port 53.
    sys::log(sys::LogLevel::warn,
             "no DNS resolver for boxes: their names will not resolve (give this daemon a "
             "--network-range of its own)",
             {{"error", e.message()}});
  }
}

Boxes::~Boxes() {
  resolver_.reset();
  {
    std::lock_guard lock(pool_mu_);
    pool_stopping_ = true;
  }
  pool_cv_.notify_all();
  if (pool_thread_.joinable()) pool_thread_.join();
  for (auto& prepared : pool_) {
    try {
      network_->release(prepared.attachment.slot);
    } catch (const std::exception& e) {
      sys::log(sys::LogLevel::warn, "could not remove a prepared network",
               {{"link", prepared.attachment.host_link}, {"error", e.what()}});
    }
  }
  pool_.clear();
}

Boxes::PreparedNet Boxes::prepare_net() {
  PreparedNet p;
  p.lease = id_allocator_.acquire(sys::ProcessRef::self());
  p.attachment = network_->prepare(p.lease.slot());
  return p;
}

Boxes::PreparedNet Boxes::take_net() {
  {
    std::lock_guard lock(pool_mu_);
    if (!pool_.empty()) {
      PreparedNet p = std::move(pool_.front());
      pool_.pop_front();
      pool_cv_.notify_all();
      return p;
    }
  }
  pool_cv_.notify_all();
  return prepare_net();
}

void Boxes::fill_pool() {
  std::unique_lock lock(pool_mu_);
  while (!pool_stopping_) {
    if (pool_.size() >= options_.network_pool) {
      pool_cv_.wait(lock);
      continue;
    }
    lock.unlock();
    std::optional<PreparedNet> made;
    try {
      made = prepare_net();
    } catch (const std::exception& e) {
      sys::log(sys::LogLevel::warn, "could not prepare a network namespace ahead",
               {{"error", e.what()}});
    }
    lock.lock();
    if (made) {
      pool_.push_back(std::move(*made));
    } else {
      pool_cv_.wait_for(lock, std::chrono::seconds(1), [&] { return pool_stopping_; });
    }
  }
}

runtime::BoxSpec Boxes::spec_for(const LocalBox& box) const {
  const BoxRequest& r = box.request_;
  runtime::BoxSpec spec;
  spec.id = r.id;
  spec.hostname = r.hostname;
  spec.rootfs.layers = box.image_.layers;
  spec.rootfs.binds = box.image_.binds;
  spec.rootfs.mountpoint = mount_dir_;
  if (r.one_shot) {
    spec.rootfs.ephemeral = true;
    spec.rootfs.ephemeral_size = r.limits.memory_bytes;
  } else {
    spec.rootfs.upper = box.dir_ + "/upper";
    spec.rootfs.work = box.dir_ + "/work";
  }
  spec.ids = box.lease_.ids();
  spec.limits = r.limits;
  spec.accounting = !r.one_shot;
  spec.etc_hosts = etc_hosts(r.hostname);
  spec.die_with_parent = r.one_shot;
  return spec;
}

std::unique_ptr<LocalBox> Boxes::create(const BoxRequest& request) {
  BoxRequest r = request;
  if (r.id.empty()) r.id = new_box_id();
  if (!is_box_id(r.id)) throw invalid_argument("\"" + r.id + "\" is not a box id");
  auto box = std::make_unique<LocalBox>(*this, r, images_.get(r.image));
  try {
    if (r.one_shot) {
      // The run directory gets its name only once its lock is held, so that a sweeper never
      // takes a box being made for one left behind.
      std::string staging = run_one_shot_dir_ + "/.new-" + r.id;
      if (::mkdir(staging.c_str(), 0700) != 0) throw_errno("mkdir " + staging);
      box->run_dir_ = staging;
      box->lock_ =
          sys::UniqueFd(::open((staging + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
      if (!box->lock_ || ::flock(box->lock_.get(), LOCK_EX) != 0) throw_errno("locking " + staging);
      std::string named = run_one_shot_dir_ + "/" + r.id;
      if (::rename(staging.c_str(), named.c_str()) != 0) throw_errno("rename " + staging);
      box->run_dir_ = named;
    } else {
      if (::mkdir(box->dir_.c_str(), 0700) != 0) {
        if (errno == EEXIST) throw Error(ErrorCode::conflict, "box " + r.id + " already exists");
        std::string dir = box->dir_;
        box->dir_.clear();  // not ours to remove
        throw_errno("mkdir " + dir);
      }
      std::string from = r.snapshot.empty() ? "" : snapshot_dir(r.snapshot);
      if (!from.empty() && !sys::is_dir(from))
        throw not_found("snapshot " + r.snapshot + " has no files on this node");
      storage_->create_writable(box->dir_, from);
      if (r.disk) storage_->set_quota(box->dir_ + "/upper", r.disk);
    }
    box->start();
  } catch (...) {
    box.reset();  // its destructor removes what was made
    throw;
  }
  return box;
}

std::string Boxes::snapshot_dir(const std::string& id) const {
  if (!is_snapshot_id(id)) throw invalid_argument("\"" + id + "\" is not a snapshot id");
  return storage_->snapshots_dir() + "/" + id;
}

void Boxes::remove_snapshot(const std::string& id) { storage_->remove_layer(snapshot_dir(id)); }

std::unique_ptr<LocalBox> Boxes::open_stopped(const BoxRequest& request) {
  auto box = std::make_unique<LocalBox>(*this, request, images_.get(request.image));
  if (request.one_shot || (!sys::is_dir(box->dir_ + "/upper") && !box->archived())) {
    box->gone_ = true;  // nothing of it to remove on our account
    throw not_found("box " + request.id + " has no files on this node");
  }
  return box;
}

std::unique_ptr<LocalBox> Boxes::reattach(const BoxRequest& request, const BoxLocation& where) {
  auto box = open_stopped(request);
  if (!where.init.alive()) {
    runtime_->remove_leftovers(request.id);
    return box;  // it ended while nobody watched: stopped
  }
  box->lease_ = id_allocator_.reclaim(where.id_slot, where.init);
  runtime::BoxSpec spec = spec_for(*box);
  box->box_ = runtime_->reattach(spec, where.init);
  if (!box->box_) {
    box->lease_.release();
    return box;
  }
  if (!where.address.empty() && network_ && request.network) {
    // Its rules again (the table was started afresh).
    box->networked_ = true;
    network_->apply(where.id_slot, *request.network, box->request_.hostname);
  }
  return box;
}

int Boxes::sweep() {
  int swept = 0;
  for (const auto& entry : sys::read_dir(run_one_shot_dir_)) {
    std::string run_dir = run_one_shot_dir_ + "/" + entry.name;
    std::string id = entry.name;
    if (entry.name.rfind(".new-", 0) == 0) {
      // A creator that died between mkdir and rename; young ones may still be in the making.
      if (!older_than(run_dir, kAbandonedAfter)) continue;
      id = entry.name.substr(5);
    } else if (!is_box_id(entry.name)) {
      continue;
    }
    sys::UniqueFd lock(::open((run_dir + "/lock").c_str(), O_RDWR | O_CLOEXEC));
    if (lock && ::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) continue;  // its owner lives
    try {
      runtime_->remove_leftovers(id);
      sys::remove_tree(run_dir);
      ++swept;
    } catch (const std::exception&) {
      // Try again next time.
    }
  }
  return swept;
}

}  // namespace pitbox::node
