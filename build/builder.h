// Builds an image from a Dockerfile and a build context, one step at a time. Each step makes an
// image (RUN and COPY/ADD a layer, the others only config) and is cached by (the image it
// stands on, the step as expanded, the hash of its inputs), so an unchanged rebuild only looks
// its steps up. RUN steps run in boxes made by the caller (BuildHost), COPY and ADD write into
// an overlay of the image's layers mounted (detached) by the builder itself.
#pragma once

// clang-format off
#include <utility>  // before Boost 1.74's asio, whose awaitable.hpp uses std::exchange without it
// clang-format on

#include <boost/asio.hpp>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "storage/images.h"

namespace pitbox::build {

namespace asio = boost::asio;

struct RunStep {
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "KEY=value"
  std::string workdir = "/";
  std::string user;
};

// What a build needs from whoever runs it.
class BuildHost {
 public:
  virtual ~BuildHost() = default;
  virtual asio::awaitable<void> log(std::string text) = 0;
  // Runs `step` in a box of image `image_id` and returns its exit status (shell style) and, on
  // success, the layer of the files it changed.
  virtual asio::awaitable<std::pair<int, storage::LayerDesc>> run(const std::string& image_id,
                                                                  const RunStep& step) = 0;
  // Runs blocking work off the caller's executor.
  virtual asio::awaitable<void> offload(std::function<void()> fn) = 0;
  // The build now stands on image `id` (so that nothing removes it meanwhile); "" = none.
  virtual void standing_on(const std::string& id) = 0;
};

struct BuildOptions {
  std::string dockerfile;
  std::string context_dir;  // "" = an empty context
  std::vector<std::string> tags;
  std::map<std::string, std::string> args;
  bool no_cache = false;
};

struct BuildResult {
  std::string image_id;
  size_t steps = 0;
  size_t cached = 0;
};

// Errors name the Dockerfile line ("Dockerfile line 4: ...", details {"line": 4}).
asio::awaitable<BuildResult> build_image(storage::ImageStore& store, BuildOptions options,
                                         BuildHost& host);

}  // namespace pitbox::build
