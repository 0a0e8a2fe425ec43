#include "node/boxes.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "runtime/container/container.h"
#include "storage/rootfs.h"
#include "sys/error.h"
#include "sys/fs.h"

namespace pitbox::node {

namespace {

constexpr const char* kOneShotOwner = "one-shot";

void make_private_dir(const std::string& path) {
  sys::make_dirs(path, 0700);
  ::chmod(path.c_str(), 0700);
}

}  // namespace

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

LocalBox::LocalBox(std::string id, std::string dir, sys::UniqueFd lock, IdLease ids,
                   storage::Image image, std::unique_ptr<runtime::Box> box,
                   runtime::Runtime& runtime)
    : id_(std::move(id)),
      dir_(std::move(dir)),
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
  step([&] { sys::remove_tree(dir_); });
  box_.reset();
  lock_.reset();
  ids_ = IdLease();
  if (first) std::rethrow_exception(first);
}

Boxes::Boxes(Options options)
    : options_(std::move(options)),
      boxes_dir_(options_.state_dir + "/boxes"),
      images_(options_.state_dir),
      id_allocator_(options_.ids_dir) {
  make_private_dir(options_.state_dir);
  make_private_dir(boxes_dir_);
  if (options_.init_path.empty()) options_.init_path = find_init_binary();
  runtime_ = std::make_unique<runtime::container::ContainerRuntime>(
      runtime::container::ContainerRuntime::Options{options_.init_path, options_.cgroup_parent});
}

Boxes::~Boxes() = default;

std::unique_ptr<LocalBox> Boxes::create(const BoxRequest& request) {
  storage::Image image = images_.get(request.image);
  std::string id = new_box_id();
  std::string dir = boxes_dir_ + "/" + id;
  if (::mkdir(dir.c_str(), 0700) != 0) throw_errno("mkdir " + dir);
  sys::UniqueFd lock;
  IdLease ids;
  try {
    // The lock is taken before box.json exists: a sweeper only looks at boxes with a box.json.
    lock = sys::UniqueFd(::open((dir + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!lock || ::flock(lock.get(), LOCK_EX) != 0) throw_errno("locking " + dir);
    ids = id_allocator_.acquire();
    std::string hostname = request.hostname.empty() ? id : request.hostname;
    nlohmann::json meta = {{"id", id},
                           {"image", image.name},
                           {"hostname", hostname},
                           {"owner", request.one_shot ? kOneShotOwner : "node"},
                           {"pid", ::getpid()}};
    sys::write_file(dir + "/box.json", meta.dump() + "\n", 0600);

    storage::WritableLayer layer = storage::create_writable_layer(dir);
    std::string mountpoint = dir + "/rootfs";
    if (::mkdir(mountpoint.c_str(), 0755) != 0) throw_errno("mkdir " + mountpoint);
    std::string hosts = dir + "/hosts";
    sys::write_file(hosts,
                    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" +
                        hostname + "\n",
                    0644);
    // The box's root may edit its /etc/hosts.
    if (::chown(hosts.c_str(), ids.ids().host_base, ids.ids().host_base) != 0)
      throw_errno("chown " + hosts);

    runtime::BoxSpec spec;
    spec.id = id;
    spec.hostname = hostname;
    spec.rootfs.layers = image.layers;
    spec.rootfs.upper = layer.upper;
    spec.rootfs.work = layer.work;
    spec.rootfs.mountpoint = mountpoint;
    spec.rootfs.binds = image.binds;
    spec.ids = ids.ids();
    spec.limits = request.limits;
    spec.hosts_file = hosts;
    spec.die_with_parent = request.one_shot;
    std::unique_ptr<runtime::Box> box = runtime_->start(spec);
    return std::make_unique<LocalBox>(id, dir, std::move(lock), std::move(ids), std::move(image),
                                      std::move(box), *runtime_);
  } catch (...) {
    try {
      runtime_->remove_leftovers(id);
    } catch (...) {
    }
    try {
      sys::remove_tree(dir);
    } catch (...) {
    }
    throw;
  }
}

int Boxes::sweep() {
  int swept = 0;
  DIR* d = ::opendir(boxes_dir_.c_str());
  if (!d) return 0;
  std::vector<std::string> ids;
  while (dirent* e = ::readdir(d)) {
    if (is_box_id(e->d_name)) ids.emplace_back(e->d_name);
  }
  ::closedir(d);
  for (const auto& id : ids) {
    std::string dir = boxes_dir_ + "/" + id;
    try {
      nlohmann::json meta = nlohmann::json::parse(sys::read_file(dir + "/box.json"));
      if (meta.value("owner", "") != kOneShotOwner) continue;
    } catch (const std::exception&) {
      // No (complete) box.json: being created right now, or its creator died in the first
      // microseconds. Only the latter is old.
      struct stat st;
      if (::stat(dir.c_str(), &st) == 0 &&
          std::chrono::system_clock::now() - std::chrono::system_clock::from_time_t(st.st_mtime) <
              std::chrono::minutes(1)) {
        continue;
      }
    }
    sys::UniqueFd lock(::open((dir + "/lock").c_str(), O_RDWR | O_CLOEXEC));
    if (lock && ::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) continue;  // its owner is alive
    try {
      runtime_->remove_leftovers(id);
      sys::remove_tree(dir);
      ++swept;
    } catch (const std::exception&) {
      // Try again next time.
    }
  }
  return swept;
}

}  // namespace pitbox::node
