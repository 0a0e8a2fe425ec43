// Small things the CLI's commands share: tables, times, progress on stderr, and a local
// directory streamed as a tar archive.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "client/client.h"
#include "storage/tar_writer.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/units.h"

namespace pitbox::cli {

// The API path of a sandbox named by id or name.
inline std::string sandbox_path(const std::string& box) {
  return "/v1/sandboxes/" + client::query_escape(box);
}

// "3 minutes ago" from an API time ("2026-11-22T10:00:00.123Z").
inline std::string ago(const nlohmann::json& time) {
  if (!time.is_string()) return "-";
  std::tm tm{};
  if (!::strptime(time.get<std::string>().c_str(), "%Y-%m-%dT%H:%M:%S", &tm)) return "-";
  int64_t seconds = static_cast<int64_t>(std::time(nullptr)) - static_cast<int64_t>(::timegm(&tm));
  if (seconds < 0) seconds = 0;
  auto unit = [](int64_t n, const char* what) {
    return std::to_string(n) + " " + what + (n == 1 ? "" : "s") + " ago";
  };
  if (seconds < 60) return unit(seconds, "second");
  if (seconds < 3600) return unit(seconds / 60, "minute");
  if (seconds < 86400) return unit(seconds / 3600, "hour");
  return unit(seconds / 86400, "day");
}

inline void print_table(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t i = 0; i < cells.size(); ++i) {
      out += cells[i];
      if (i + 1 < cells.size()) out += std::string(width[i] - cells[i].size() + 3, ' ');
    }
    std::cout << out << "\n";
  };
  line(header);
  for (const auto& row : rows) line(row);
}

// Shows how far a long transfer got, on stderr when it is a terminal.
class Progress {
 public:
  explicit Progress(std::string what) : what_(std::move(what)), shown_(::isatty(STDERR_FILENO)) {}
  ~Progress() {
    if (shown_ && drawn_) std::fprintf(stderr, "\r\033[K");
  }
  void add(uint64_t n) {
    bytes_ += n;
    auto now = std::chrono::steady_clock::now();
    if (!shown_ || now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    drawn_ = true;
    std::fprintf(stderr, "\r\033[K%s: %s", what_.c_str(), sys::format_size(bytes_).c_str());
  }
  uint64_t bytes() const { return bytes_; }

 private:
  std::string what_;
  bool shown_;
  bool drawn_ = false;
  uint64_t bytes_ = 0;
  std::chrono::steady_clock::time_point last_{};
};

// A local directory as a tar stream, made as it is read.
class LocalTar {
 public:
  // The contents of `dir`, each name under `prefix` ("" or "name/").
  // `skip` (when set) leaves out paths relative to `dir` ("a/b") and what is under them.
  LocalTar(const std::string& dir, const std::string& prefix,
           std::function<bool(const std::string&)> skip = nullptr)
      : root_(dir), skip_(std::move(skip)) {
    if (!prefix.empty()) add(dir, prefix);
    walk(dir, prefix);
  }

  size_t fill(char* buf, size_t size) {
    while (pending_.empty()) {
      if (file_) {
        char chunk[256 * 1024];
        size_t want = static_cast<size_t>(std::min<uint64_t>(sizeof chunk, left_));
        ssize_t n = want ? ::read(file_.get(), chunk, want) : 0;
        if (n < 0) throw_errno("reading " + current_);
        if (n == 0) {
          // Shorter than when it was listed: filled up with zeros, as tar does.
          pending_.assign(static_cast<size_t>(left_), '\0');
          pending_ += storage::tar_padding(size_);
          left_ = 0;
          file_.reset();
        } else {
          pending_.assign(chunk, static_cast<size_t>(n));
          left_ -= static_cast<uint64_t>(n);
          if (left_ == 0) {
            pending_ += storage::tar_padding(size_);
            file_.reset();
          }
        }
        continue;
      }
      if (next_ == entries_.size()) {
        if (ended_) return 0;
        ended_ = true;
        pending_ = storage::tar_end();
        continue;
      }
      const auto& [path, entry] = entries_[next_++];
      if (entry.type == storage::TarEntry::Type::file) {
        file_ = sys::UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!file_) throw_errno("opening " + path);
        current_ = path;
        size_ = left_ = entry.size;
        if (left_ == 0) file_.reset();
      }
      pending_ = storage::tar_header(entry);
      if (entry.type == storage::TarEntry::Type::file && entry.size == 0) {
        pending_ += storage::tar_padding(0);
      }
    }
    size_t n = std::min(size, pending_.size());
    std::memcpy(buf, pending_.data(), n);
    pending_.erase(0, n);
    return n;
  }

 private:
  void add(const std::string& path, const std::string& name) {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) throw_errno("reading " + path);
    storage::TarEntry e;
    e.name = name;
    e.mode = st.st_mode & 07777;
    e.mtime = st.st_mtime;
    if (S_ISDIR(st.st_mode)) {
      e.type = storage::TarEntry::Type::dir;
    } else if (S_ISLNK(st.st_mode)) {
      e.type = storage::TarEntry::Type::symlink;
      char target[4096];
      ssize_t n = ::readlink(path.c_str(), target, sizeof target);
      if (n < 0) throw_errno("reading the link " + path);
      e.link.assign(target, static_cast<size_t>(n));
    } else if (S_ISREG(st.st_mode)) {
      e.size = static_cast<uint64_t>(st.st_size);
    } else {
      return;  // devices, fifos and sockets are not copied
    }
    entries_.push_back({path, e});
  }
  void walk(const std::string& dir, const std::string& prefix) {
    DIR* d = ::opendir(dir.c_str());
    if (!d) throw_errno("reading the directory " + dir);
    std::vector<std::string> names;
    while (struct dirent* de = ::readdir(d)) {
      std::string n = de->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
      std::string path = dir + "/" + n;
      if (skip_ && skip_(path.substr(root_.size() + 1))) continue;
      struct stat st;
      if (::lstat(path.c_str(), &st) != 0) continue;
      if (S_ISDIR(st.st_mode)) {
        add(path, prefix + n + "/");
        walk(path, prefix + n + "/");
      } else {
        add(path, prefix + n);
      }
    }
  }

  std::string root_;
  std::function<bool(const std::string&)> skip_;
  std::vector<std::pair<std::string, storage::TarEntry>> entries_;
  size_t next_ = 0;
  std::string pending_;
  sys::UniqueFd file_;
  std::string current_;
  uint64_t size_ = 0, left_ = 0;
  bool ended_ = false;
};

}  // namespace pitbox::cli
