// LoopDevice: a /dev/loopN backed by a file, set to clear itself once nothing holds it open.
#pragma once

#include <string>
#include <vector>

#include "sys/fd.h"

namespace pitbox::sys {

class LoopDevice {
 public:
  LoopDevice() = default;
  LoopDevice(LoopDevice&&) noexcept = default;
  LoopDevice& operator=(LoopDevice&&) noexcept = default;
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;
  // Only closes the device: with LO_FLAGS_AUTOCLEAR the kernel detaches it once the last
  // opener (this fd, a mount of it) goes.
  ~LoopDevice() = default;

  // Binds a free loop device to `file` (read-write) with LO_FLAGS_AUTOCLEAR. Retries when
  // another process takes the same free device first.
  static LoopDevice attach(const std::string& file);

  const std::string& path() const { return path_; }  // "/dev/loopN"
  int fd() const { return fd_.get(); }
  bool valid() const { return fd_.valid(); }

  // Detaches now (LOOP_CLR_FD) and closes the device; while others still hold it open the
  // kernel detaches it when they close it.
  void detach();

 private:
  LoopDevice(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}

  UniqueFd fd_;
  std::string path_;
};

// The file a loop device ("/dev/loop3" or "loop3") is bound to, as the kernel names it
// (/sys/block/loopN/loop/backing_file); "" when it is bound to nothing.
std::string loop_backing_file(const std::string& dev);

// The loop devices ("/dev/loopN") bound to `file` (compared by its canonical path).
std::vector<std::string> loop_devices_of(const std::string& file);

}  // namespace pitbox::sys
