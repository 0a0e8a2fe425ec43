#include "sys/loop.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "sys/error.h"
#include "sys/fs.h"

namespace pitbox::sys {
namespace {

// Attempts before giving up on free devices that keep being taken by others.
constexpr int kAttachAttempts = 64;

// Binds the open device `dev` to `file_fd`. Returns false when the device was taken (EBUSY).
bool bind(int dev, int file_fd, const std::string& file, const std::string& dev_path) {
  loop_config config{};
  config.fd = static_cast<__u32>(file_fd);
  config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
  std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name), file.c_str(), LO_NAME_SIZE - 1);
  if (::ioctl(dev, LOOP_CONFIGURE, &config) == 0) return true;
  if (errno == EBUSY) return false;
  if (errno != EINVAL && errno != ENOTTY) throw_errno("LOOP_CONFIGURE " + dev_path + " " + file);

  // Kernels before 5.8: two steps, with a window in which the device has no AUTOCLEAR.
  if (::ioctl(dev, LOOP_SET_FD, file_fd) != 0) {
    if (errno == EBUSY) return false;
    throw_errno("LOOP_SET_FD " + dev_path + " " + file);
  }
  if (::ioctl(dev, LOOP_SET_STATUS64, &config.info) != 0) {
    int err = errno;
    ::ioctl(dev, LOOP_CLR_FD, 0);
    throw_errno("LOOP_SET_STATUS64 " + dev_path, err);
  }
  return true;
}

}  // namespace

LoopDevice LoopDevice::attach(const std::string& file) {
  UniqueFd backing(::open(file.c_str(), O_RDWR | O_CLOEXEC));
  if (!backing) throw_errno("open " + file);
  UniqueFd control(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!control) throw_errno("open /dev/loop-control");
  int open_error = 0;
  for (int attempt = 0; attempt < kAttachAttempts; ++attempt) {
    int n = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
    if (n < 0) throw_errno("LOOP_CTL_GET_FREE");
    std::string path = "/dev/loop" + std::to_string(n);
    UniqueFd dev(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!dev) {
      // The node may be a moment behind the device (or the device already removed again).
      if (errno == ENOENT || errno == ENXIO) {
        open_error = errno;
        continue;
      }
      throw_errno("open " + path);
    }
    open_error = 0;
    if (bind(dev.get(), backing.get(), file, path)) return LoopDevice(std::move(dev), path);
  }
  if (open_error) throw_errno("open a free loop device for " + file, open_error);
  throw Error(ErrorCode::unavailable, "attach a loop device to " + file +
                                          ": every free device was taken by someone else first");
}

void LoopDevice::detach() {
  if (!fd_) return;
  // ENXIO: already detached (by autoclear or someone else).
  if (::ioctl(fd_.get(), LOOP_CLR_FD, 0) != 0 && errno != ENXIO) {
    throw_errno("LOOP_CLR_FD " + path_);
  }
  fd_.reset();
}

std::string loop_backing_file(const std::string& dev) {
  auto slash = dev.find_last_of('/');
  std::string name = slash == std::string::npos ? dev : dev.substr(slash + 1);
  if (name.empty() || name.find("..") != std::string::npos) {
    throw invalid_argument("not a loop device: " + dev);
  }
  UniqueFd fd(::open(("/sys/block/" + name + "/loop/backing_file").c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return "";  // unbound, or no such device
    throw_errno("read the backing file of " + dev);
  }
  std::string text = read_fd(fd.get(), PATH_MAX + 16);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

std::vector<std::string> loop_devices_of(const std::string& file) {
  std::string wanted = file;
  if (char* real = ::realpath(file.c_str(), nullptr)) {
    wanted = real;
    std::free(real);
  }
  std::vector<std::string> out;
  for (const auto& entry : read_dir("/sys/block")) {
    if (entry.name.rfind("loop", 0) != 0) continue;
    std::string backing = loop_backing_file(entry.name);
    if (backing == wanted || backing == wanted + " (deleted)") out.push_back("/dev/" + entry.name);
  }
  return out;
}

}  // namespace pitbox::sys
