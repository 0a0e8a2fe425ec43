// The images service: the image store's operations for the API (off the executor, on a small
// thread pool), what uses an image (sandboxes, running builds), and builds — of the Debian base
// image with mmdebstrap and of Dockerfiles, each a build record with a log that streams while
// it runs and is kept after it ends (<state>/builds/<id>.log).
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "control/sandboxes.h"
#include "node/node_client.h"
#include "storage/images.h"

namespace pitbox::control {

// The tag the Debian base image gets; "base" names it.
constexpr const char* kBaseImage = "base:latest";

struct Build {
  enum class Status { running, succeeded, failed };
  std::string id;    // "bld-" + 12 base32
  std::string kind;  // "dockerfile" | "base"
  std::vector<std::string> tags;
  Status status = Status::running;
  std::string image_id;        // when it succeeded
  std::optional<Error> error;  // when it failed
  int64_t created_at = 0, finished_at = 0;
  std::string log;  // everything logged so far
  size_t steps = 0, cached_steps = 0;
  // Woken whenever the log grows or the build ends.
  std::shared_ptr<asio::steady_timer> changed;

  nlohmann::json to_api() const;
};

struct BuildRequest {
  std::string dockerfile;  // the text
  std::string context;     // a context id from add_context ("" = an empty context)
  std::vector<std::string> tags;
  std::map<std::string, std::string> args;
  bool no_cache = false;
};

class Images {
 public:
  struct Options {
    std::string state_dir;
    std::string default_image;  // "" = "base" once built, else "host"
    std::string debian_mirror;  // "" = mmdebstrap's default
    size_t builds_kept = 100;
  };
  Images(asio::any_io_executor executor, node::NodeClient& node, Sandboxes& sandboxes,
         Options options);
  ~Images();

  storage::ImageStore& store() { return node_.images(); }
  // The image of a create that names none.
  std::string default_image();

  asio::awaitable<std::vector<storage::ImageInfo>> list();
  asio::awaitable<storage::ImageInfo> inspect(std::string ref);
  asio::awaitable<storage::ImageInfo> tag(std::string ref, std::string tag);
  asio::awaitable<storage::ImageStore::Removed> remove(std::string ref);
  asio::awaitable<storage::ImageStore::Pruned> prune();
  // Imports the archive in the file `path` (an upload). Returns the images made.
  asio::awaitable<std::vector<storage::ImageInfo>> import_file(std::string path, std::string tag);
  // Writes `ref` as an OCI archive to the file `path`.
  asio::awaitable<void> export_file(std::string ref, std::string path);
  // What uses the image `id` ("sandbox sb-...", "a build"), or "".
  std::string user_of(const std::string& id) const;

  // A build context: the tar archive in the file `path`, unpacked once and kept by its digest.
  asio::awaitable<nlohmann::json> add_context(std::string path);
  // Starts a build; it runs in the background.
  std::shared_ptr<Build> start_build(BuildRequest request);
  std::shared_ptr<Build> start_base_build();
  std::shared_ptr<Build> get_build(const std::string& id) const;
  std::vector<std::shared_ptr<Build>> builds() const;  // newest first
  // Waits until the build's log is longer than `offset` or it ended.
  asio::awaitable<void> wait_build(std::shared_ptr<Build> build, size_t offset);

  // Builds the base image now unless it exists (make serve).
  void ensure_base_in_background();

 private:
  std::shared_ptr<Build> new_build(const std::string& kind, std::vector<std::string> tags);
  void append_log(Build& b, std::string_view text);
  void finish(Build& b, std::optional<Error> error, const std::string& image_id);
  asio::awaitable<void> run_dockerfile(std::shared_ptr<Build> b, BuildRequest request);
  asio::awaitable<void> run_base(std::shared_ptr<Build> b);
  template <typename F>
  asio::awaitable<std::invoke_result_t<F>> blocking(F fn);

  asio::any_io_executor executor_;
  node::NodeClient& node_;
  Sandboxes& sandboxes_;
  Options options_;
  std::unique_ptr<asio::thread_pool> pool_;
  std::map<std::string, std::shared_ptr<Build>> builds_;
  std::deque<std::string> build_order_;  // oldest first
  std::multiset<std::string> building_;  // image ids a running build stands on
  std::shared_ptr<Build> base_build_;    // the base build running, if any
  friend class BuildHost;
};

}  // namespace pitbox::control
