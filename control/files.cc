#include "control/files.h"

#include <archive.h>
#include <archive_entry.h>

#include <set>

#include "storage/tar_writer.h"
#include "sys/random.h"
#include "sys/text.h"

namespace pitbox::control {

using nlohmann::json;

namespace {

std::string join(const std::string& dir, const std::string& name) {
  return dir == "/" ? "/" + name : dir + "/" + name;
}

std::string parent_of(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

// Owns a libarchive reader.
struct ArchiveDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
using ArchivePtr = std::unique_ptr<struct archive, ArchiveDeleter>;

Error archive_error(struct archive* a, const std::string& what) {
  const char* msg = archive_error_string(a);
  return invalid_argument(what + ": " + (msg ? msg : "unknown archive error"));
}

}  // namespace

json entry_to_api(const json& entry, const std::string& path) {
  json j = {{"name", entry.value("name", std::string())},
            {"path", path},
            {"type", entry.value("type", std::string())},
            {"mode", entry.value("mode", 0u)},
            {"size", entry.value("size", uint64_t{0})},
            {"mtime", sys::format_time(entry.value("mtime_ns", int64_t{0}) / 1000000)},
            {"uid", entry.value("uid", 0u)},
            {"gid", entry.value("gid", 0u)}};
  std::string target = entry.value("target", std::string());
  j["target"] = target.empty() ? json(nullptr) : json(target);
  return j;
}

uint32_t parse_mode(const json& value, const std::string& field) {
  int64_t mode = -1;
  if (value.is_number_integer()) {
    mode = value.get<int64_t>();
  } else if (value.is_string()) {
    const std::string& s = value.get_ref<const std::string&>();
    if (!s.empty() && s.size() <= 5 && s.find_first_not_of("01234567") == std::string::npos) {
      mode = std::stol(s, nullptr, 8);
    }
  }
  if (mode < 0 || mode > 07777) {
    throw invalid_argument("\"" + field +
                               "\" must be permission bits: an octal string like \"644\" or a "
                               "number from 0 to 4095",
                           {{"field", field}});
  }
  return static_cast<uint32_t>(mode);
}

std::string check_path(const json& value, const std::string& field) {
  if (!value.is_string() || value.get_ref<const std::string&>().empty() ||
      value.get_ref<const std::string&>()[0] != '/') {
    throw invalid_argument("\"" + field + "\" must be an absolute path", {{"field", field}});
  }
  const std::string& s = value.get_ref<const std::string&>();
  if (s.find('\0') != std::string::npos) {
    throw invalid_argument("\"" + field + "\" must not contain NUL bytes", {{"field", field}});
  }
  return s;
}

// --- uploads

asio::awaitable<std::unique_ptr<Upload>> Upload::begin(std::shared_ptr<node::Channel> channel,
                                                       std::string path,
                                                       std::optional<uint32_t> mode) {
  std::string parent = parent_of(path);
  std::string name = path.substr(path.rfind('/') + 1);
  if (name.empty() || name == "." || name == "..") {
    throw invalid_argument("cannot write to " + path + ": not a file name", {{"field", "path"}});
  }
  // The destination must not be a directory (the rename would say so only at the end).
  json existing;
  bool exists = true;
  try {
    json stat_request = {{"op", "stat"}, {"path", path}, {"follow", true}};
    existing = co_await channel->call(stat_request);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::not_found) throw;
    exists = false;
  }
  if (exists && existing.value("type", "") == "dir") {
    throw Error(ErrorCode::conflict, "cannot write to " + path + ": it is a directory",
                {{"path", path}});
  }
  if (!exists && parent != "/") {
    json mkdir_request = {{"op", "mkdir"}, {"path", parent}, {"mode", 0755}, {"parents", true}};
    co_await channel->call(mkdir_request);
  }
  if (!mode && exists) mode = existing.value("mode", 0644u);
  std::string temp = join(parent, "." + name + ".pitbox-upload-" + sys::random_base32(8));
  std::unique_ptr<Upload> upload(
      new Upload(co_await asio::this_coro::executor, channel, path, temp));
  upload->writer_ = co_await channel->write_file(temp, mode.value_or(0644));
  co_return upload;
}

Upload::~Upload() {
  if (done_) return;
  writer_.reset();  // ends the stream
  // Removes what was written so far; nobody waits for it.
  auto channel = channel_;
  json request = {{"op", "remove"}, {"path", temp_}};
  asio::co_spawn(
      executor_,
      [channel, request]() -> asio::awaitable<void> {
        try {
          co_await channel->call(request);
        } catch (const std::exception&) {
        }
      },
      asio::detached);
}

asio::awaitable<void> Upload::write(std::string_view data) { co_await writer_->write(data); }

asio::awaitable<uint64_t> Upload::commit() {
  uint64_t written = co_await writer_->finish();
  json rename_request = {{"op", "rename"}, {"from", temp_}, {"to", path_}, {"overwrite", true}};
  co_await channel_->call(rename_request);
  done_ = true;
  co_return written;
}

// --- tar out

asio::awaitable<void> write_tar(std::shared_ptr<node::Channel> channel, std::string path,
                                Sink sink) {
  json stat_request = {{"op", "stat"}, {"path", path}, {"follow", true}};
  json top = co_await channel->call(stat_request);
  std::string pending;
  auto flush = [&]() -> asio::awaitable<void> {
    if (pending.empty()) co_return;
    std::string piece;
    piece.swap(pending);
    co_await sink(piece);
  };
  // Adds the entry found at `box_path` under `name`.
  auto add = [&](const std::string& box_path, const std::string& name,
                 const json& en) -> asio::awaitable<void> {
    std::string type = en.value("type", "");
    storage::TarEntry e;
    e.name = name;
    e.mode = en.value("mode", 0644u);
    e.uid = en.value("uid", 0u);
    e.gid = en.value("gid", 0u);
    e.mtime = en.value("mtime_ns", int64_t{0}) / 1000000000;
    if (type == "dir") {
      e.type = storage::TarEntry::Type::dir;
    } else if (type == "symlink") {
      e.type = storage::TarEntry::Type::symlink;
      e.link = en.value("target", "");
    } else if (type != "file") {
      co_return;  // fifos, sockets and devices are not archived
    }
    if (type != "file") {
      pending += storage::tar_header(e);
      co_return;
    }
    std::shared_ptr<node::FileReader> reader;
    try {
      reader = co_await channel->read_file(box_path);
    } catch (const Error& err) {
      if (err.code() != ErrorCode::not_found) throw;
    }
    if (!reader) co_return;  // gone since it was listed
    e.size = reader->info().size;
    pending += storage::tar_header(e);
    uint64_t done = 0;
    // The file may change while it is read: exactly `size` bytes go into the archive.
    while (auto chunk = co_await reader->next()) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(chunk->size(), e.size - done));
      pending.append(*chunk, 0, n);
      done += n;
      if (pending.size() >= (256u << 10)) co_await flush();
    }
    while (done < e.size) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(64u << 10, e.size - done));
      pending.append(n, '\0');
      done += n;
      if (pending.size() >= (256u << 10)) co_await flush();
    }
    pending += storage::tar_padding(e.size);
  };

  if (top.value("type", "") != "dir") {
    std::string name = path.substr(path.rfind('/') + 1);
    co_await add(path, name.empty() ? "file" : name, top);
  } else {
    // Depth first; a directory's entries come before its subdirectories' contents.
    std::vector<std::pair<std::string, std::string>> dirs = {{path, ""}};
    while (!dirs.empty()) {
      auto [dir, prefix] = dirs.back();
      dirs.pop_back();
      std::vector<std::pair<std::string, std::string>> subdirs;
      json after = nullptr;
      for (;;) {
        json request = {{"op", "list"}, {"path", dir}, {"limit", 1000}};
        if (!after.is_null()) request["after"] = after;
        json page;
        try {
          page = co_await channel->call(request);
        } catch (const Error& err) {
          if (err.code() != ErrorCode::not_found || dir == path) throw;
          break;  // removed while we walked
        }
        for (const auto& en : page["entries"]) {
          std::string name = en.value("name", "");
          std::string box_path = join(dir, name);
          bool is_dir = en.value("type", "") == "dir";
          co_await add(box_path, prefix + name + (is_dir ? "/" : ""), en);
          if (is_dir) subdirs.push_back({box_path, prefix + name + "/"});
          if (pending.size() >= (64u << 10)) co_await flush();
        }
        after = page.value("next", json(nullptr));
        if (after.is_null()) break;
      }
      dirs.insert(dirs.end(), subdirs.rbegin(), subdirs.rend());
    }
  }
  pending += storage::tar_end();
  co_await flush();
}

// --- tar in

asio::awaitable<TarResult> extract_tar(std::shared_ptr<node::Channel> channel, std::string path,
                                       int archive_fd) {
  ArchivePtr a(archive_read_new());
  archive_read_support_format_tar(a.get());
  archive_read_support_format_gnutar(a.get());
  // Only the filters built into libarchive: never one that runs an outside program.
  archive_read_support_filter_gzip(a.get());
  archive_read_support_filter_bzip2(a.get());
  archive_read_support_filter_xz(a.get());
  archive_read_support_filter_zstd(a.get());
  if (archive_read_open_fd(a.get(), archive_fd, 64 * 1024) != ARCHIVE_OK) {
    throw archive_error(a.get(), "reading the tar archive");
  }
  TarResult result;
  std::set<std::string> made;  // directories known to exist
  auto mkdirs = [&](const std::string& dir, uint32_t mode) -> asio::awaitable<void> {
    if (dir == "/" || made.count(dir)) co_return;
    json mkdir_request = {{"op", "mkdir"}, {"path", dir}, {"mode", mode}, {"parents", true}};
    co_await channel->call(mkdir_request);
    made.insert(dir);
  };
  co_await mkdirs(path, 0755);
  for (;;) {
    struct archive_entry* e = nullptr;
    int rc = archive_read_next_header(a.get(), &e);
    if (rc == ARCHIVE_EOF) break;
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN)
      throw archive_error(a.get(), "reading the tar archive");
    const char* raw = archive_entry_pathname(e);
    std::string name = raw ? raw : "";
    // Clean the name: no leading "/" or "./", and nothing that climbs out.
    std::vector<std::string> parts;
    size_t pos = 0;
    while (pos <= name.size()) {
      size_t end = name.find('/', pos);
      if (end == std::string::npos) end = name.size();
      std::string part = name.substr(pos, end - pos);
      if (part == "..") {
        throw invalid_argument("the archive's entry \"" + name + "\" leads out of " + path,
                               {{"entry", name}});
      }
      if (!part.empty() && part != ".") parts.push_back(part);
      pos = end + 1;
    }
    if (parts.empty()) continue;  // the top directory itself
    std::string dest = path;
    for (const auto& p : parts) dest = join(dest, p);
    uint32_t mode = archive_entry_perm(e) & 07777;
    auto type = archive_entry_filetype(e);
    if (archive_entry_hardlink(e)) {
      ++result.skipped;
    } else if (type == AE_IFDIR) {
      co_await mkdirs(dest, mode ? mode : 0755);
      ++result.dirs;
    } else if (type == AE_IFREG) {
      co_await mkdirs(parent_of(dest), 0755);
      auto writer = co_await channel->write_file(dest, mode);
      const void* buf = nullptr;
      size_t size = 0;
      la_int64_t offset = 0;
      la_int64_t written = 0;
      for (;;) {
        int r = archive_read_data_block(a.get(), &buf, &size, &offset);
        if (r == ARCHIVE_EOF) break;
        if (r != ARCHIVE_OK) throw archive_error(a.get(), "reading " + name + " from the archive");
        if (offset > written) {
          // A sparse file's hole.
          co_await writer->write(std::string(static_cast<size_t>(offset - written), '\0'));
          written = offset;
        }
        co_await writer->write(std::string_view(static_cast<const char*>(buf), size));
        written += static_cast<la_int64_t>(size);
      }
      co_await writer->finish();
      ++result.files;
    } else if (type == AE_IFLNK) {
      co_await mkdirs(parent_of(dest), 0755);
      const char* target = archive_entry_symlink(e);
      if (!target || !*target) {
        ++result.skipped;
        continue;
      }
      json request = {{"op", "symlink"}, {"path", dest}, {"target", target}};
      bool exists = false;
      try {
        co_await channel->call(request);
      } catch (const Error& err) {
        if (err.code() != ErrorCode::conflict) throw;
        exists = true;
      }
      if (exists) {
        // Something was there: replaced, as tar does.
        json remove_request = {{"op", "remove"}, {"path", dest}, {"recursive", false}};
        co_await channel->call(remove_request);
        co_await channel->call(request);
      }
      ++result.links;
    } else {
      ++result.skipped;
    }
  }
  co_return result;
}

}  // namespace pitbox::control
