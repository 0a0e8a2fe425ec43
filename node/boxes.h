// The boxes of this machine. A box has a directory under the run directory (memory backed:
// /run/pitbox/boxes/<id>, or /run/pitbox/one-shot/<id> for pitbox run) with its lock and small
// files such as its /etc/hosts. A persistent box also has <state>/boxes/<id> with its writable
// layer; a one-shot box keeps its writable layer in memory and has nothing on disk.
#pragma once

#include <memory>
#include <string>

#include "node/ids.h"
#include "runtime/runtime.h"
#include "storage/images.h"
#include "sys/cgroup.h"

namespace pitbox::node {

struct BoxRequest {
  std::string image = "host";
  std::string hostname;  // defaults to the box id
  sys::CgroupLimits limits;
  // A one-shot box (pitbox run) dies with the process that made it; whatever it leaves on
  // disk is swept by the next one.
  bool one_shot = false;
};

class LocalBox {
 public:
  LocalBox(std::string id, std::string dir, std::string run_dir, sys::UniqueFd lock, IdLease ids,
           storage::Image image, std::unique_ptr<runtime::Box> box, runtime::Runtime& runtime);
  ~LocalBox();
  LocalBox(const LocalBox&) = delete;
  LocalBox& operator=(const LocalBox&) = delete;

  const std::string& id() const { return id_; }
  const std::string& dir() const { return dir_; }  // "" for one-shot boxes
  const storage::Image& image() const { return image_; }
  const runtime::IdMapping& ids() const { return ids_.ids(); }
  runtime::Box& box() { return *box_; }
  sys::CgroupStats stats() const { return box_ ? box_->stats() : sys::CgroupStats{}; }

  // Kills the box and removes everything it had on this machine. Idempotent.
  void destroy();

 private:
  std::string id_;
  std::string dir_;
  std::string run_dir_;
  sys::UniqueFd lock_;
  IdLease ids_;
  storage::Image image_;
  std::unique_ptr<runtime::Box> box_;
  runtime::Runtime& runtime_;
  bool destroyed_ = false;
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
  };
  explicit Boxes(Options options);
  ~Boxes();

  // Makes and starts a box; when this throws, nothing of it is left.
  std::unique_ptr<LocalBox> create(const BoxRequest& request);
  // Removes what one-shot boxes of processes that died left behind. Returns how many.
  int sweep();

  storage::ImageStore& images() { return images_; }
  runtime::Runtime& runtime() { return *runtime_; }

 private:
  void remove_box_files(const std::string& id, const std::string& dir, const std::string& run_dir);

  Options options_;
  std::string boxes_dir_;  // <state>/boxes: writable layers of persistent boxes
  std::string mount_dir_;  // <state>/mnt: where boxes attach their root (each in its own namespace)
  std::string run_boxes_dir_;     // <run>/boxes
  std::string run_one_shot_dir_;  // <run>/one-shot
  storage::ImageStore images_;
  IdAllocator id_allocator_;
  std::unique_ptr<runtime::Runtime> runtime_;
};

// The default run directory of a state directory.
std::string default_run_dir(const std::string& state_dir);

// Where pitbox-init is: $PITBOX_INIT, else beside the running executable.
std::string find_init_binary();

}  // namespace pitbox::node
