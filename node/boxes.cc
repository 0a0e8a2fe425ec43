#include "node/boxes.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "runtime/container/container.h"
#include "storage/rootfs.h"
#include "sys/error.h"
#include "sys/fs.h"

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
  uint64_t h = 1469598103934665603ull;  // FNV-1a: stable, and enough to keep instances apart
  for (unsigned char ch : state_dir) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return std::string("/run/pitbox/") + buf;
}

std::string find_init_binary() {
  if (const char* env = std::getenv("PITBOX_INIT"); env && *env) return env;
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = 0;
    std::string dir = sys::split_parent(self).first;
    for (const char* rel : {"/pitbox-init", "/../lib/pitbox/pitbox-init"}) {
      if (sys::exists(dir + rel)) return dir + rel;
    }
  }
  throw Error(ErrorCode::unavailable,
              "pitbox-init not found beside the pitbox binary (set PITBOX_INIT to its path)");
}

nlohmann::json BoxLocation::to_json() const {
  return {{"init_pid", init.pid}, {"init_start", init.start_time}, {"id_slot", id_slot}};
}

BoxLocation BoxLocation::from_json(const nlohmann::json& j) {
  BoxLocation l;
  if (!j.is_object()) return l;  // unknown: a box that was never seen running
  l.init.pid = j.value("init_pid", 0);
  l.init.start_time = j.value("init_start", uint64_t{0});
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
  return l;
}

void LocalBox::reconfigure(const std::string& hostname, const sys::CgroupLimits& limits) {
  if (!box_) {  // taken at the next start
    request_.hostname = hostname;
    request_.limits = limits;
    return;
  }
  if (hostname != request_.hostname) box_->set_hostname(hostname);
  request_.hostname = hostname;
  if (limits.millicpus != request_.limits.millicpus ||
      limits.memory_bytes != request_.limits.memory_bytes || limits.pids != request_.limits.pids) {
    box_->set_limits(limits);
  }
  request_.limits = limits;
}

void LocalBox::start() {
  if (gone_) throw Error(ErrorCode::conflict, "box " + id() + " is gone");
  if (box_) return;
  // Leased to us until init runs, then to init: the lease follows the box, not this process.
  IdLease lease = boxes_.id_allocator_.acquire(sys::ProcessRef::self());
  lease_ = std::move(lease);
  try {
    box_ = boxes_.runtime_->start(boxes_.spec_for(*this));
    if (!request_.one_shot) lease_.transfer(sys::ProcessRef::of(box_->init_pid()));
  } catch (...) {
    box_.reset();
    lease_.release();
    throw;
  }
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
  try {
    box_->destroy();  // kills what is left, removes the cgroup
  } catch (...) {
    failed = std::current_exception();
  }
  box_.reset();
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
    if (!dir_.empty()) sys::remove_tree(dir_);
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
  lease_.keep();
}

// ---------------------------------------------------------------------------------------------

Boxes::Boxes(Options options)
    : options_([](Options o) {
        if (o.run_dir.empty()) o.run_dir = default_run_dir(o.state_dir);
        return o;
      }(std::move(options))),
      boxes_dir_(options_.state_dir + "/boxes"),
      mount_dir_(options_.state_dir + "/mnt"),
      run_one_shot_dir_(options_.run_dir + "/one-shot"),
      images_(options_.state_dir),
      id_allocator_(options_.ids_dir) {
  // Box files are stored with in-box ids (a box's setuid-root binary is setuid root on disk):
  // nobody but root may walk into the state directory.
  for (const auto& d :
       {options_.state_dir, boxes_dir_, mount_dir_, options_.run_dir, run_one_shot_dir_}) {
    make_private_dir(d);
  }
  if (options_.init_path.empty()) options_.init_path = find_init_binary();
  runtime_ = std::make_unique<runtime::container::ContainerRuntime>(
      runtime::container::ContainerRuntime::Options{options_.init_path, options_.cgroup_parent});
}

Boxes::~Boxes() = default;

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
      storage::create_writable_layer(box->dir_);
    }
    box->start();
  } catch (...) {
    box.reset();  // its destructor removes what was made
    throw;
  }
  return box;
}

std::unique_ptr<LocalBox> Boxes::open_stopped(const BoxRequest& request) {
  auto box = std::make_unique<LocalBox>(*this, request, images_.get(request.image));
  if (request.one_shot || !sys::is_dir(box->dir_ + "/upper")) {
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
  if (!box->box_) box->lease_.release();
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
