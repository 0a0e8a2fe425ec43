// Where boxes keep their writable layers and snapshots, behind one interface with a driver per
// kind of filesystem. `overlay` keeps plain directories on any filesystem and copies them for a
// snapshot or a fork (time grows with the layer's size; no disk quotas). `btrfs` keeps each
// writable layer and snapshot as a subvolume of a btrfs filesystem (the state directory's own,
// or a pool in a loop file): snapshots and forks are copy-on-write and instant, and disk quotas
// are qgroup limits.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace pitbox::storage {

struct WritableLayer {
  std::string upper;
  std::string work;
};

class StorageDriver {
 public:
  virtual ~StorageDriver() = default;
  virtual std::string_view name() const = 0;
  virtual bool quotas() const = 0;
  // Where box directories and snapshots go (on the driver's filesystem).
  virtual const std::string& boxes_dir() const = 0;
  virtual const std::string& snapshots_dir() const = 0;

  // Makes the writable layer of a box under `box_dir` (which exists): empty, or a writable copy
  // of the layer `from` (a snapshot's). Its files keep the box's own ids (uid 0 = its root).
  // On failure nothing of it is left.
  virtual WritableLayer create_writable(const std::string& box_dir,
                                        const std::string& from = "") = 0;
  // Captures the layer `layer` at `dest` (which must not exist). The caller keeps the layer
  // from changing meanwhile (the box frozen or stopped), and nothing writes to the capture.
  virtual void snapshot(const std::string& layer, const std::string& dest) = 0;
  // Removes a layer made by create_writable or snapshot (also a plain directory). A missing
  // one is not an error.
  virtual void remove_layer(const std::string& layer) = 0;
  // Limits the bytes a writable layer may hold (0 = no limit); invalid_argument without quotas.
  virtual void set_quota(const std::string& layer, uint64_t bytes) = 0;
  // The bytes a layer takes.
  virtual uint64_t usage(const std::string& layer) = 0;
};

struct StorageOptions {
  std::string state_dir;
  // "overlay", "btrfs" (the state directory is on btrfs, or a pool is made) or "btrfs:SIZE"
  // (a pool file of that size, made when missing, mounted at <state>/pool).
  std::string driver = "overlay";
};

// The driver `options` names, ready (a btrfs pool mounted). invalid_argument for an unknown
// driver, naming the ones there are.
std::unique_ptr<StorageDriver> open_storage(const StorageOptions& options);

// Parses "overlay", "btrfs" or "btrfs:SIZE"; invalid_argument naming the flag otherwise.
// Returns the driver name and the pool size (0 = default or none).
std::pair<std::string, uint64_t> parse_storage_flag(const std::string& text);

}  // namespace pitbox::storage
