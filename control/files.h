// The files of a running sandbox as the API shows them: entries, uploads that replace a file
// only once they are complete, and tar archives in and out. Paths are the box's; init resolves
// them inside the box root.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "node/channel.h"

namespace pitbox::control {

namespace asio = boost::asio;

// An entry of the API ({"name", "path", "type", "mode", "size", "mtime", "uid", "gid",
// "target"}) from one of init's, found at `path`.
nlohmann::json entry_to_api(const nlohmann::json& entry, const std::string& path);
// Permission bits given as a number or an octal string ("644", "0755"); names `field`.
uint32_t parse_mode(const nlohmann::json& value, const std::string& field);
// A path of a request: absolute, without NUL; names `field`.
std::string check_path(const nlohmann::json& value, const std::string& field);

// A file being uploaded: written beside its destination and renamed over it by commit(); one
// dropped before commit() leaves nothing behind. Missing parent directories are made.
class Upload {
 public:
  static asio::awaitable<std::unique_ptr<Upload>> begin(std::shared_ptr<node::Channel> channel,
                                                        std::string path,
                                                        std::optional<uint32_t> mode);
  ~Upload();
  asio::awaitable<void> write(std::string_view data);
  // The bytes written.
  asio::awaitable<uint64_t> commit();

 private:
  Upload(asio::any_io_executor executor, std::shared_ptr<node::Channel> channel, std::string path,
         std::string temp)
      : executor_(std::move(executor)),
        channel_(std::move(channel)),
        path_(std::move(path)),
        temp_(std::move(temp)) {}
  asio::any_io_executor executor_;
  std::shared_ptr<node::Channel> channel_;
  std::string path_, temp_;
  std::shared_ptr<node::FileWriter> writer_;
  bool done_ = false;
};

using Sink = std::function<asio::awaitable<void>(std::string_view)>;

// A tar archive of `path` (a directory: its contents, named relative to it; a file: that file
// under its own name), handed to `sink` piece by piece as it is made.
asio::awaitable<void> write_tar(std::shared_ptr<node::Channel> channel, std::string path,
                                Sink sink);

struct TarResult {
  uint64_t files = 0;    // regular files written
  uint64_t dirs = 0;     // directories made
  uint64_t links = 0;    // symbolic links made
  uint64_t skipped = 0;  // entries of other kinds (hard links, devices, fifos)
};
// Extracts the archive (tar, optionally compressed) read from `archive_fd` below `path`,
// making it when missing. Entries whose names lead out of `path` are refused.
asio::awaitable<TarResult> extract_tar(std::shared_ptr<node::Channel> channel, std::string path,
                                       int archive_fd);

}  // namespace pitbox::control
