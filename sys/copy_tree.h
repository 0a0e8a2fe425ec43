// Exact copies of directory trees, made as root: every file type, owner, mode, timestamp,
// extended attribute and hard link, for moving a box's overlayfs upper directory into a snapshot
// and back.
#pragma once

#include <cstdint>
#include <string>

namespace pitbox::sys {

struct CopyStats {
  uint64_t files = 0;      // entries made other than directories, hard-link names included
  uint64_t bytes = 0;      // the sizes of the regular files copied, each inode once, holes included
  bool reflinked = false;  // every regular file's data was shared with FICLONE, none was copied
};

// Copies the directory `source` to `dest`, which must not exist (its parent must). Never follows
// a symlink below `source`, never crosses into another mount (entries mounted over are left out),
// keeps holes in sparse files. On an error nothing is left at `dest` and the error names the path
// that failed. The copy is exact only if nothing changes `source` meanwhile (reading a symlink
// does set its atime there). Needs /proc: the extended attributes of symlinks, devices, fifos and
// sockets are reached through /proc/self/fd. Holds two fds per directory level.
CopyStats copy_tree(const std::string& source, const std::string& dest);

// The space the regular files below `path` take on disk (st_blocks * 512, hard links counted
// once), not crossing into other mounts.
uint64_t tree_size(const std::string& path);

}  // namespace pitbox::sys
