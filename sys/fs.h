// Files and directories: whole-file reads and writes, trees made and removed without following
// symlinks, and path resolution confined to a root directory.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "sys/fd.h"

namespace pitbox::sys {

std::string read_file(const std::string& path);
// Reads at most `limit` bytes of an fd from its current offset.
std::string read_fd(int fd, size_t limit = SIZE_MAX);
void write_file(const std::string& path, std::string_view data, mode_t mode = 0644);
// Writes to a temporary file beside `path` and renames it over `path`.
void write_file_atomic(const std::string& path, std::string_view data, mode_t mode = 0644);
// Writes all of `data`, retrying on EINTR and short writes. Returns false with errno set on error.
bool write_all(int fd, std::string_view data, bool no_sigpipe = false);
// Reads exactly `len` bytes; false at an error or the end of the input before that.
bool read_exact(int fd, void* buf, size_t len);

struct DirEntry {
  std::string name;
  unsigned char type;  // DT_REG, DT_DIR, DT_LNK, ... or DT_UNKNOWN
};
// The entries of the directory open at `fd` (from its start; "." and ".." left out). Uses a small
// stack buffer: opendir's 32 KiB heap buffer costs page faults on every call.
std::vector<DirEntry> read_dir(int fd);
// The same for a path; a missing directory has no entries.
std::vector<DirEntry> read_dir(const std::string& path);

// mkdir -p; returns true when the last component was created by this call.
bool make_dirs(const std::string& path, mode_t mode = 0755);
bool exists(const std::string& path);
// The size of a file (stat); throws when it cannot be read.
uint64_t file_size(const std::string& path);
bool is_dir(const std::string& path);

// Removes a file or a whole tree. Never follows symlinks, never crosses into another mount;
// a missing path is not an error.
void remove_tree(const std::string& path);
// The same, for `name` inside the directory `dirfd`.
void remove_tree_at(int dirfd, const std::string& name);

// Opens `path` as if `rootfd` were "/": "..", absolute paths and symlinks never leave the root,
// magic links (/proc/*/fd/...) are refused (openat2 RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS).
UniqueFd open_in_root(int rootfd, std::string_view path, int flags, mode_t mode = 0);

// The directory part and the last component of a path ("a/b/c" -> "a/b", "c"; "c" -> ".", "c").
std::pair<std::string, std::string> split_parent(std::string_view path);

// Joins two paths with one slash between them.
std::string join_path(std::string_view a, std::string_view b);

}  // namespace pitbox::sys
