#include "storage/rootfs.h"

#include <sys/stat.h>

#include <cerrno>

#include "sys/btrfs.h"
#include "sys/copy_tree.h"
#include "sys/error.h"
#include "sys/fs.h"
#include "sys/units.h"

namespace pitbox::storage {

namespace {

constexpr uint64_t kDefaultPoolSize = 16ull << 30;  // sparse: takes only what is used

void make_dir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0) throw_errno("mkdir " + path);
  // The upper directory's mode is the box root's mode; the umask must not change it.
  if (::chmod(path.c_str(), mode) != 0) throw_errno("chmod " + path);
}

class DriverBase : public StorageDriver {
 public:
  DriverBase(std::string boxes, std::string snapshots)
      : boxes_(std::move(boxes)), snapshots_(std::move(snapshots)) {
    for (const auto& d : {boxes_, snapshots_}) {
      sys::make_dirs(d, 0700);
      if (::chmod(d.c_str(), 0700) != 0) throw_errno("chmod " + d);
    }
  }
  const std::string& boxes_dir() const override { return boxes_; }
  const std::string& snapshots_dir() const override { return snapshots_; }

  WritableLayer create_writable(const std::string& box_dir, const std::string& from) override {
    WritableLayer layer{box_dir + "/upper", box_dir + "/work"};
    try {
      if (from.empty()) {
        make_empty(layer.upper);
      } else {
        copy_layer(from, layer.upper);
      }
      make_dir(layer.work, 0755);
    } catch (...) {
      try {
        remove_layer(layer.upper);
        sys::remove_tree(layer.work);
      } catch (...) {
      }
      throw;
    }
    return layer;
  }

 protected:
  virtual void make_empty(const std::string& upper) = 0;
  virtual void copy_layer(const std::string& from, const std::string& to) = 0;

 private:
  std::string boxes_, snapshots_;
};

class OverlayDriver final : public DriverBase {
 public:
  explicit OverlayDriver(const std::string& state)
      : DriverBase(state + "/boxes", state + "/snapshots") {}
  std::string_view name() const override { return "overlay"; }
  bool quotas() const override { return false; }

  void snapshot(const std::string& layer, const std::string& dest) override {
    sys::copy_tree(layer, dest);
  }
  void remove_layer(const std::string& layer) override { sys::remove_tree(layer); }
  void set_quota(const std::string&, uint64_t bytes) override {
    if (bytes) throw invalid_argument("the overlay storage driver has no disk quotas");
  }
  uint64_t usage(const std::string& layer) override { return sys::tree_size(layer); }

 protected:
  void make_empty(const std::string& upper) override { make_dir(upper, 0755); }
  void copy_layer(const std::string& from, const std::string& to) override {
    sys::copy_tree(from, to);
  }
};

class BtrfsDriver final : public DriverBase {
 public:
  explicit BtrfsDriver(const std::string& root)
      : DriverBase(root + "/boxes", root + "/snapshots"), root_(root) {}
  std::string_view name() const override { return "btrfs"; }
  bool quotas() const override { return true; }

  void snapshot(const std::string& layer, const std::string& dest) override {
    // Not flagged read-only: deleting a read-only subvolume first commits a transaction to
    // clear the flag (~10 ms), and a fork deletes its capture at once. Nothing writes to it.
    sys::btrfs::snapshot(layer, dest, false);
  }
  void remove_layer(const std::string& layer) override {
    if (sys::btrfs::is_subvolume(layer)) {
      sys::btrfs::delete_subvolume(layer);
    } else {
      sys::remove_tree(layer);
    }
  }
  void set_quota(const std::string& layer, uint64_t bytes) override {
    // Quota accounting slows every snapshot down: turned on only when a box asks for a limit.
    if (bytes && !quota_on_) {
      sys::btrfs::enable_quota(root_);
      quota_on_ = true;
    }
    if (quota_on_) sys::btrfs::set_size_limit(layer, bytes);
  }
  uint64_t usage(const std::string& layer) override {
    return quota_on_ ? sys::btrfs::referenced_bytes(layer) : sys::tree_size(layer);
  }

 protected:
  void make_empty(const std::string& upper) override {
    sys::btrfs::create_subvolume(upper);
    if (::chmod(upper.c_str(), 0755) != 0) throw_errno("chmod " + upper);
  }
  void copy_layer(const std::string& from, const std::string& to) override {
    sys::btrfs::snapshot(from, to, false);
  }

 private:
  std::string root_;
  bool quota_on_ = false;
};

}  // namespace

std::pair<std::string, uint64_t> parse_storage_flag(const std::string& text) {
  auto colon = text.find(':');
  std::string name = text.substr(0, colon);
  uint64_t size = 0;
  if (name != "overlay" && name != "btrfs") {
    throw invalid_argument("--storage: unknown driver \"" + name +
                           "\" (overlay, btrfs, btrfs:SIZE)");
  }
  if (colon != std::string::npos) {
    if (name != "btrfs") throw invalid_argument("--storage: only btrfs takes a size");
    try {
      size = sys::parse_size(text.substr(colon + 1));
    } catch (const Error& e) {
      throw invalid_argument("--storage: " + e.message());
    }
    if (size < (128ull << 20))
      throw invalid_argument("--storage: a btrfs pool needs at least 128M");
  }
  return {name, size};
}

std::unique_ptr<StorageDriver> open_storage(const StorageOptions& options) {
  auto [name, size] = parse_storage_flag(options.driver);
  if (name == "overlay") return std::make_unique<OverlayDriver>(options.state_dir);
  if (size == 0 && sys::btrfs::is_btrfs(options.state_dir)) {
    return std::make_unique<BtrfsDriver>(options.state_dir);
  }
  std::string mountpoint = options.state_dir + "/pool";
  sys::btrfs::mount_pool(
      {options.state_dir + "/pool.img", size ? size : kDefaultPoolSize, mountpoint});
  return std::make_unique<BtrfsDriver>(mountpoint);
}

}  // namespace pitbox::storage
