// Writes tar archives (POSIX pax: ustar headers, with extended headers for long names, long
// link targets and large sizes). Reading uses libarchive; writing is done here because
// libarchive's writer drags every format it knows (and through xar, libxml2 and ICU) into the
// static pitbox binary.
#pragma once

#include <cstdint>
#include <string>

namespace pitbox::storage {

struct TarEntry {
  // A hardlink's `link` is the archive name of an entry written before it.
  enum class Type { file, dir, symlink, hardlink, fifo };
  Type type = Type::file;
  std::string name;  // relative, "/"-separated; directories may end in "/"
  uint32_t mode = 0644;
  uint32_t uid = 0, gid = 0;
  int64_t mtime = 0;  // seconds since the epoch
  uint64_t size = 0;  // files only
  std::string link;   // symlinks and hardlinks only
};

// The header blocks of `entry`; a file's `size` bytes follow, then tar_padding(size).
std::string tar_header(const TarEntry& entry);
// The zeros that fill a file's data up to a whole 512-byte block.
std::string tar_padding(uint64_t size);
// The two zero blocks that end an archive.
std::string tar_end();

}  // namespace pitbox::storage
