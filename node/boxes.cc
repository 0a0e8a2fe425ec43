#include "node/boxes.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
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

LocalBox::LocalBox(std::string id, std::string dir, std::string run_dir, sys::UniqueFd lock,
                   IdLease ids, storage::Image image, std::unique_ptr<runtime::Box> box,
                   runtime::Runtime& runtime)
    : id_(std::move(id)),
      dir_(std::move(dir)),
      run_dir_(std::move(run_dir)),
      lock_(std::move(lock)),
      ids_(std::move(ids)),
      image_(std::move(image)),
      box_(std::move(box)),
      runtime_(runtime) {}

LocalBox::~LocalBox() {
  try {
    destroy();
  } catch (...) {
  }
}

void LocalBox::destroy() {
  if (destroyed_) return;
  destroyed_ = true;
  // Every step runs even if an earlier one failed; the first failure is reported.
  std::exception_ptr first;
  auto step = [&](auto&& fn) {
    try {
      fn();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  };
  step([&] {
    if (box_) box_->destroy();
  });
  step([&] { runtime_.remove_leftovers(id_); });
  step([&] {
    if (!dir_.empty()) sys::remove_tree(dir_);
  });
  step([&] { sys::remove_tree(run_dir_); });
  box_.reset();
  lock_.reset();
  ids_ = IdLease();
  if (first) std::rethrow_exception(first);
}

Boxes::Boxes(Options options)
    : options_([](Options o) {
        if (o.run_dir.empty()) o.run_dir = default_run_dir(o.state_dir);
        return o;
      }(std::move(options))),
      boxes_dir_(options_.state_dir + "/boxes"),
      mount_dir_(options_.state_dir + "/mnt"),
      run_boxes_dir_(options_.run_dir + "/boxes"),
      run_one_shot_dir_(options_.run_dir + "/one-shot"),
      images_(options_.state_dir),
      id_allocator_(options_.ids_dir) {
  // Box files are stored with in-box ids (a box's setuid-root binary is setuid root on disk):
  // nobody but root may walk into the state directory.
  for (const auto& d : {options_.state_dir, boxes_dir_, mount_dir_, options_.run_dir,
                        run_boxes_dir_, run_one_shot_dir_}) {
    make_private_dir(d);
  }
  if (options_.init_path.empty()) options_.init_path = find_init_binary();
  runtime_ = std::make_unique<runtime::container::ContainerRuntime>(
      runtime::container::ContainerRuntime::Options{options_.init_path, options_.cgroup_parent});
}

Boxes::~Boxes() = default;

void Boxes::remove_box_files(const std::string& id, const std::string& dir,
                             const std::string& run_dir) {
  runtime_->remove_leftovers(id);
  if (!dir.empty()) sys::remove_tree(dir);
  sys::remove_tree(run_dir);
}

std::unique_ptr<LocalBox> Boxes::create(const BoxRequest& request) {
  storage::Image image = images_.get(request.image);
  std::string id = new_box_id();
  const std::string& run_parent = request.one_shot ? run_one_shot_dir_ : run_boxes_dir_;
  std::string run_dir = run_parent + "/" + id;
  std::string dir = request.one_shot ? std::string() : boxes_dir_ + "/" + id;
  // The run directory gets its name only once its lock is held, so that a sweeper never takes
  // a box being made for one left behind.
  std::string staging = run_parent + "/.new-" + id;
  if (::mkdir(staging.c_str(), 0700) != 0) throw_errno("mkdir " + staging);
  bool named = false;
  try {
    sys::UniqueFd lock(::open((staging + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!lock || ::flock(lock.get(), LOCK_EX) != 0) throw_errno("locking " + staging);
    if (::rename(staging.c_str(), run_dir.c_str()) != 0) throw_errno("rename " + staging);
    named = true;
    IdLease ids = id_allocator_.acquire();
    std::string hostname = request.hostname.empty() ? id : request.hostname;
    runtime::BoxSpec spec;
    spec.id = id;
    spec.hostname = hostname;
    spec.rootfs.layers = image.layers;
    spec.rootfs.binds = image.binds;
    spec.rootfs.mountpoint = mount_dir_;
    if (request.one_shot) {
      spec.rootfs.ephemeral = true;
      spec.rootfs.ephemeral_size = request.limits.memory_bytes;
    } else {
      if (::mkdir(dir.c_str(), 0700) != 0) throw_errno("mkdir " + dir);
      storage::WritableLayer layer = storage::create_writable_layer(dir);
      spec.rootfs.upper = layer.upper;
      spec.rootfs.work = layer.work;
    }
    spec.ids = ids.ids();
    spec.limits = request.limits;
    spec.accounting = !request.one_shot;
    spec.etc_hosts =
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + hostname +
        "\n";
    spec.die_with_parent = request.one_shot;
    std::unique_ptr<runtime::Box> box = runtime_->start(spec);
    return std::make_unique<LocalBox>(id, dir, run_dir, std::move(lock), std::move(ids),
                                      std::move(image), std::move(box), *runtime_);
  } catch (...) {
    try {
      remove_box_files(id, dir, named ? run_dir : staging);
    } catch (...) {
    }
    throw;
  }
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
      remove_box_files(id, "", run_dir);
      ++swept;
    } catch (const std::exception&) {
      // Try again next time.
    }
  }
  return swept;
}

}  // namespace pitbox::node
