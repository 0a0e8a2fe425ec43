// Images a box can start from. For now the two built-in ones, made on first use under the
// state directory: "busybox" (Debian's static busybox and a minimal /etc) and "host" (the
// host's /usr bound read-only with a fresh /etc; see docs/security.md for what it exposes).
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/runtime.h"

namespace pitbox::storage {

struct ImageConfig {
  std::vector<std::string> env;  // "KEY=value"
  std::string workdir = "/";
  std::string user;  // "" = root
};

struct Image {
  std::string name;
  std::vector<std::string> layers;   // directories, topmost first
  std::vector<runtime::Bind> binds;  // host paths the image needs at run time
  ImageConfig config;
};

class ImageStore {
 public:
  explicit ImageStore(std::string state_dir);

  // The image called `name`, built first if needed. Throws not_found naming the images there are.
  Image get(const std::string& name);
  static std::vector<std::string> builtin_names();

 private:
  Image busybox();
  Image host();
  // Builds `name`-`fingerprint` with `fill` unless it exists; returns its directory.
  std::string ensure_layer(const std::string& name, const std::string& fingerprint,
                           void (*fill)(const std::string& dir));

  std::string dir_;  // <state>/images/builtin
  // Images checked against the host a moment ago: a burst of creates checks once.
  std::mutex mu_;
  std::map<std::string, std::pair<Image, std::chrono::steady_clock::time_point>> recent_;
};

// Whether an ELF file is statically linked (has no program interpreter).
bool is_static_elf(const std::string& path);

}  // namespace pitbox::storage
