// Image layer archives: an untrusted tar (plain, gzip or zstd) unpacked into a layer directory
// without ever writing outside it, and a directory (an overlayfs upper, a layer) packed into one,
// byte for byte the same every time. Both give the digests that address the layer.
#pragma once

#include <cstdint>
#include <string>

namespace pitbox::storage {

enum class Compression { none, gzip, zstd };

// OCI media types: application/vnd.oci.image.layer.v1.tar, ...tar+gzip, ...tar+zstd
std::string layer_media_type(Compression c);
// The compression of a layer media type (OCI's, their non-distributable variants, Docker's
// application/vnd.docker.image.rootfs.diff.tar.gzip); invalid_argument when unknown.
Compression compression_of_media_type(const std::string& media_type);

struct LayerDigests {
  std::string blob_digest;  // "sha256:<hex>" of the bytes as stored (compressed)
  uint64_t blob_size = 0;
  std::string diff_id;  // "sha256:<hex>" of the uncompressed tar
  uint64_t tar_size = 0;
  Compression compression = Compression::none;
};

// Reads a layer archive from `in_fd` (to EOF; compression detected from the magic bytes:
// gzip 1f 8b, zstd 28 b5 2f fd, else plain tar) and unpacks it into the existing empty
// directory `dir`. When `blob_copy_fd` >= 0 every byte read is also written there (so a blob is
// stored and unpacked in one pass). OCI whiteouts become overlayfs ones: "D/.wh.NAME" -> a
// character device 0/0 "D/NAME"; "D/.wh..wh..opq" -> xattr trusted.overlay.opaque="y" on D.
// Owners, modes (setuid/setgid/sticky included) and mtimes are kept (directories' mtimes set
// after their contents); xattrs in the archive are not applied.
//
// The archive is hostile: absolute names, "..", parents or hard link targets through symlinks,
// hard links to directories or to nothing, device nodes, and truncated or corrupt streams are
// refused with invalid_argument naming the entry. Nothing is ever created outside `dir`; on an
// error `dir` is left half made and the caller removes it.
LayerDigests unpack_layer(int in_fd, const std::string& dir, int blob_copy_fd = -1);

// Packs directory `dir` (an overlayfs upper directory or a layer) as a tar (via the TarEntry
// writer), compressed as asked, into `out_fd`. Entries sorted by path (byte order), parents
// before children, so the same tree always gives the same bytes; overlay whiteouts (char 0/0)
// become ".wh.NAME" empty files, dirs with trusted.overlay.opaque="y" get a "D/.wh..wh..opq"
// entry right after the dir entry; files with the same inode become hard links to the first;
// sockets and other device nodes are skipped; other xattrs are not carried. Symlinks inside
// `dir` are never followed; an upper directory holding overlayfs redirects or metacopy files
// (which need the lower layers to make sense) is refused.
LayerDigests pack_layer(const std::string& dir, int out_fd, Compression compression);

}  // namespace pitbox::storage
