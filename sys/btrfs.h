// btrfs by ioctl: subvolumes, snapshots, quota limits, and a pool filesystem on a loop file.
#pragma once

#include <cstdint>
#include <string>

namespace pitbox::sys::btrfs {

// True when `path` is on a btrfs filesystem; false also when it does not exist.
bool is_btrfs(const std::string& path);

// True when `path` is the root directory of a subvolume (inode 256 on btrfs).
bool is_subvolume(const std::string& path);

// The id of the subvolume that holds `path` (5 for the top level).
uint64_t subvolume_id(const std::string& path);

// Creates an empty subvolume at `path`, whose parent must exist.
void create_subvolume(const std::string& path);

// Snapshots the subvolume `source` as a new subvolume `dest` on the same filesystem.
// Nested subvolumes of `source` appear in the snapshot as empty directories.
void snapshot(const std::string& source, const std::string& dest, bool read_only);

// Deletes the subvolume `path` with everything in it, read-only or not. A missing path is not
// an error; subvolumes nested inside it must be deleted first (ENOTEMPTY).
void delete_subvolume(const std::string& path);

// Makes a subvolume read-only or writable again.
void set_read_only(const std::string& path, bool read_only);
bool is_read_only(const std::string& path);

// Turns on quota accounting for the filesystem holding `path` and waits for the initial
// rescan. Doing it again is a no-op.
void enable_quota(const std::string& path);

// Limits the bytes a subvolume references (its 0/<id> qgroup) to `bytes`; writes beyond fail
// with EDQUOT. 0 removes the limit. Needs quota enabled.
void set_size_limit(const std::string& subvolume, uint64_t bytes);

// The bytes the subvolume references, as its qgroup counts them after a commit (this syncs
// the filesystem first). Needs quota enabled.
uint64_t referenced_bytes(const std::string& subvolume);

// A btrfs filesystem in a sparse file, mounted through a loop device.
struct PoolOptions {
  std::string file;        // the image file; created and formatted when missing
  uint64_t size = 0;       // its size when created (an existing file keeps its size)
  std::string mountpoint;  // created when missing
};

// Mounts the pool unless a btrfs is already mounted at the mountpoint. A missing file is
// created sparse and formatted with mkfs.btrfs. If the file is already bound to a loop device,
// that device is mounted (two devices of one file would be two filesystems writing into it).
// On failure nothing is left behind: no loop device, no mount, no file this call created.
void mount_pool(const PoolOptions& options);

// Unmounts the pool lazily (MNT_DETACH); its loop device goes once the last user of the
// filesystem does. Nothing mounted there is not an error.
void unmount_pool(const std::string& mountpoint);

}  // namespace pitbox::sys::btrfs
