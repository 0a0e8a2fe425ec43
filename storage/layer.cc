#include "storage/layer.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "storage/tar_writer.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/fs.h"
#include "sys/text.h"

namespace pitbox::storage {

namespace {

constexpr size_t kChunk = 128 * 1024;
constexpr size_t kTarBlock = 512;
constexpr const char* kOpaqueXattr = "trusted.overlay.opaque";
constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";
// AUFS kept its own metadata under names with this prefix; Docker skips them, and so do we.
constexpr std::string_view kAufsMetaPrefix = ".wh..wh.";

constexpr uint64_t kResolveSafely =
    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;

// A name from an archive, quoted for an error message: control bytes escaped, nothing dropped.
std::string quote_name(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

std::string entry_where(std::string_view name) { return "layer entry " + quote_name(name); }

Error entry_error(std::string_view name, const std::string& why) {
  return invalid_argument(entry_where(name) + ": " + why);
}

// The same error with `where` in front of its message.
Error prefixed(const Error& e, const std::string& where) {
  return Error(e.code(), where + ": " + e.message(), e.details());
}

// openat2 confined to `dirfd`: no "..", no symlinks, no magic links, no other mounts.
sys::UniqueFd open_beneath(int dirfd, const std::string& path, int flags) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = kResolveSafely;
  for (;;) {
    long fd = ::syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof how);
    if (fd >= 0) return sys::UniqueFd(static_cast<int>(fd));
    // openat2 asks to retry when a rename raced with the lookup.
    if (errno != EAGAIN && errno != EINTR) return sys::UniqueFd();
  }
}

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    size_t slash = path.find('/');
    std::string_view part = path.substr(0, slash);
    if (!part.empty()) parts.push_back(part);
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return parts;
}

// An archive name (`what`: the entry's name or its hard link target) made relative and plain:
// "./a//b/" -> "a/b"; "" is the layer's root. Absolute names and ".." are refused: a layer
// names things inside itself only.
std::string clean_name(std::string_view raw, std::string_view entry, std::string_view what) {
  if (raw.empty()) throw entry_error(entry, "empty " + std::string(what));
  if (raw.front() == '/') {
    throw entry_error(entry, "absolute " + std::string(what) + " " + quote_name(raw));
  }
  std::string out;
  for (std::string_view part : split_path(raw)) {
    if (part == ".") continue;
    if (part == "..") {
      throw entry_error(entry, "\"..\" in the " + std::string(what) + " " + quote_name(raw));
    }
    if (!out.empty()) out += '/';
    out += part;
  }
  return out;
}

std::pair<std::string, std::string> parent_and_base(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return {"", path};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

// ---- reading: the stored bytes, hashed, copied and decompressed

struct ZstdDCtxDeleter {
  void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};
struct ZstdCCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};

bool is_zstd_frame_start(const unsigned char* p) {
  // A zstd frame, or a skippable frame (magic 0x184D2A50..5F, little endian).
  return (p[0] == 0x28 && p[1] == 0xb5 && p[2] == 0x2f && p[3] == 0xfd) ||
         ((p[0] & 0xf0) == 0x50 && p[1] == 0x2a && p[2] == 0x4d && p[3] == 0x18);
}

// Reads a stored layer to EOF: hashes the bytes as stored, copies them to the blob file, and
// hands out the uncompressed tar in pieces, hashing those too. Errors are thrown without saying
// where in the archive: the caller knows.
class LayerInput {
 public:
  LayerInput(int in_fd, int copy_fd) : fd_(in_fd), copy_fd_(copy_fd), in_(kChunk) {
    // Pipes may hand out fewer bytes than the magic needs.
    ensure(4);
    const auto* p = reinterpret_cast<const unsigned char*>(in_.data() + in_pos_);
    size_t have = in_end_ - in_pos_;
    if (have >= 2 && p[0] == 0x1f && p[1] == 0x8b) {
      compression_ = Compression::gzip;
      if (::inflateInit2(&z_, 16 + MAX_WBITS) != Z_OK) throw internal_error("inflateInit2 failed");
      z_ready_ = true;
    } else if (have >= 4 && p[0] == 0x28 && p[1] == 0xb5 && p[2] == 0x2f && p[3] == 0xfd) {
      compression_ = Compression::zstd;
      zd_.reset(ZSTD_createDCtx());
      if (!zd_) throw internal_error("ZSTD_createDCtx failed");
    }
    if (compression_ != Compression::none) out_.resize(kChunk);
  }
  ~LayerInput() {
    if (z_ready_) ::inflateEnd(&z_);
  }
  LayerInput(const LayerInput&) = delete;
  LayerInput& operator=(const LayerInput&) = delete;

  // The next piece of the uncompressed tar, valid until the next call; empty at its end.
  std::string_view next() {
    std::string_view piece;
    switch (compression_) {
      case Compression::none:
        piece = next_plain();
        break;
      case Compression::gzip:
        piece = next_gzip();
        break;
      case Compression::zstd:
        piece = next_zstd();
        break;
    }
    tar_.update(piece);
    tar_size_ += piece.size();
    return piece;
  }

  // Reads what the tar reader left: the rest of the tar (it counts in the diff id), then any
  // bytes after the compressed stream (they count in the blob digest).
  void finish() {
    while (!next().empty()) {
    }
    while (!in_eof_) {
      in_pos_ = in_end_;
      read_more();
    }
  }

  // Nothing at all was read.
  bool empty() const { return in_eof_ && blob_size_ == 0; }

  LayerDigests digests() {
    return {blob_.digest(), blob_size_, tar_.digest(), tar_size_, compression_};
  }

 private:
  // Reads more stored bytes after those buffered; false at EOF.
  bool read_more() {
    if (in_pos_ == in_end_) {
      in_pos_ = in_end_ = 0;
    } else if (in_end_ == in_.size()) {
      std::memmove(in_.data(), in_.data() + in_pos_, in_end_ - in_pos_);
      in_end_ -= in_pos_;
      in_pos_ = 0;
    }
    ssize_t n;
    do {
      n = ::read(fd_, in_.data() + in_end_, in_.size() - in_end_);
    } while (n < 0 && errno == EINTR);
    if (n < 0) throw_errno("reading the layer");
    if (n == 0) {
      in_eof_ = true;
      return false;
    }
    std::string_view got(in_.data() + in_end_, static_cast<size_t>(n));
    blob_.update(got);
    blob_size_ += got.size();
    if (copy_fd_ >= 0 && !sys::write_all(copy_fd_, got)) throw_errno("writing the layer blob");
    in_end_ += got.size();
    return true;
  }

  // At least `n` unread stored bytes buffered; false when the input ends first.
  bool ensure(size_t n) {
    while (in_end_ - in_pos_ < n) {
      if (in_eof_ || !read_more()) return false;
    }
    return true;
  }

  std::string_view next_plain() {
    if (in_pos_ == in_end_ && (in_eof_ || !read_more())) return {};
    std::string_view piece(in_.data() + in_pos_, in_end_ - in_pos_);
    in_pos_ = in_end_;
    return piece;
  }

  std::string_view next_gzip() {
    while (!stream_done_) {
      if (in_pos_ == in_end_ && !read_more()) throw invalid_argument("the gzip stream ends early");
      z_.next_in = reinterpret_cast<Bytef*>(in_.data() + in_pos_);
      z_.avail_in = static_cast<uInt>(in_end_ - in_pos_);
      z_.next_out = reinterpret_cast<Bytef*>(out_.data());
      z_.avail_out = static_cast<uInt>(out_.size());
      int rc = ::inflate(&z_, Z_NO_FLUSH);
      in_pos_ = in_end_ - z_.avail_in;
      size_t produced = out_.size() - z_.avail_out;
      if (rc == Z_STREAM_END) {
        // Another member may follow (gzip -d reads them all); anything else is trailing bytes.
        const auto* p = reinterpret_cast<const unsigned char*>(in_.data());
        if (ensure(2) && p[in_pos_] == 0x1f && p[in_pos_ + 1] == 0x8b) {
          ::inflateReset(&z_);
        } else {
          stream_done_ = true;
        }
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        throw invalid_argument(std::string("the gzip stream is corrupt: ") +
                               (z_.msg ? z_.msg : ::zError(rc)));
      }
      if (produced > 0) return {out_.data(), produced};
    }
    return {};
  }

  std::string_view next_zstd() {
    while (!stream_done_) {
      if (in_pos_ == in_end_ && !in_eof_) read_more();
      bool no_input = in_pos_ == in_end_;
      // Without input, a call can only flush what a full output buffer left inside.
      if (no_input && !zstd_flushing_) throw invalid_argument("the zstd stream ends early");
      ZSTD_inBuffer in{in_.data() + in_pos_, in_end_ - in_pos_, 0};
      ZSTD_outBuffer out{out_.data(), out_.size(), 0};
      size_t rc = ZSTD_decompressStream(zd_.get(), &out, &in);
      if (ZSTD_isError(rc)) {
        throw invalid_argument(std::string("the zstd stream is corrupt: ") + ZSTD_getErrorName(rc));
      }
      in_pos_ += in.pos;
      zstd_flushing_ = out.pos == out.size;
      if (rc == 0) {
        // A frame ended, wholly flushed. Another may follow; anything else is trailing bytes.
        const auto* p = reinterpret_cast<const unsigned char*>(in_.data());
        if (!ensure(4) || !is_zstd_frame_start(p + in_pos_)) stream_done_ = true;
      }
      if (out.pos > 0) return {out_.data(), out.pos};
    }
    return {};
  }

  int fd_;
  int copy_fd_;
  std::vector<char> in_;  // stored bytes; [in_pos_, in_end_) not yet used
  size_t in_pos_ = 0, in_end_ = 0;
  bool in_eof_ = false;
  std::vector<char> out_;  // decompressed bytes handed out by the last next()
  Compression compression_ = Compression::none;
  z_stream z_{};
  bool z_ready_ = false;
  std::unique_ptr<ZSTD_DCtx, ZstdDCtxDeleter> zd_;
  bool zstd_flushing_ = false;
  bool stream_done_ = false;  // the compressed stream ended; what follows is ignored
  sys::Sha256 blob_, tar_;
  uint64_t blob_size_ = 0, tar_size_ = 0;
};

// libarchive pulls the tar through this; an exception must not cross its C frames, so it is
// kept here and thrown again once libarchive has returned.
struct ReadContext {
  LayerInput* input;
  std::exception_ptr error;
};

la_ssize_t read_callback(struct archive* a, void* client, const void** buf) {
  auto* ctx = static_cast<ReadContext*>(client);
  try {
    std::string_view piece = ctx->input->next();
    *buf = piece.data();
    return static_cast<la_ssize_t>(piece.size());
  } catch (...) {
    ctx->error = std::current_exception();
    archive_set_error(a, EIO, "reading the layer failed");
    return ARCHIVE_FATAL;
  }
}

struct ArchiveDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
using ArchivePtr = std::unique_ptr<struct archive, ArchiveDeleter>;

// Throws what made libarchive fail at `where`: our own read error, or libarchive's.
[[noreturn]] void archive_failed(struct archive* a, const ReadContext& ctx,
                                 const std::string& where) {
  if (ctx.error) {
    try {
      std::rethrow_exception(ctx.error);
    } catch (const Error& e) {
      throw prefixed(e, where);
    }
  }
  const char* msg = archive_error_string(a);
  throw invalid_argument(where + ": " + (msg ? msg : "unreadable tar archive"));
}

// ---- unpacking

class Unpacker {
 public:
  explicit Unpacker(const std::string& dir)
      : root_(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {
    if (!root_) throw_errno("open " + dir);
  }

  // Unpacks the entry `e` just read from `a`, reading all of its data (which is how a truncated
  // entry is noticed, even when the data is not needed).
  void entry(struct archive* a, struct archive_entry* e, const ReadContext& ctx);

  // Sets the mtimes of the directories, now that nothing more is made inside them.
  void finish() {
    for (const auto& [path, mtime] : dir_times_) {
      sys::UniqueFd fd = open_beneath(root_.get(), path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      if (!fd) {
        // Replaced by a later entry, or removed by a whiteout of it.
        if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) continue;
        throw_errno(entry_where(path) + ": open");
      }
      set_times(fd.get(), path, mtime);
    }
  }

 private:
  // The directory `path` ("" is the root), opened without following any symlink. With `create`,
  // missing directories are made (0755, owned by whoever unpacks: root).
  sys::UniqueFd open_dir(const std::string& path, bool create, std::string_view entry,
                         std::string_view role) {
    sys::UniqueFd fd = open_beneath(root_.get(), path.empty() ? "." : path, O_RDONLY | O_DIRECTORY);
    if (fd) return fd;
    // One component at a time, to make what is missing and to say what is in the way.
    fd = open_beneath(root_.get(), ".", O_RDONLY | O_DIRECTORY);
    if (!fd) throw_errno("open the layer directory");
    std::string so_far;
    for (std::string_view part_view : split_path(path)) {
      std::string part(part_view);
      so_far += (so_far.empty() ? "" : "/") + part;
      sys::UniqueFd next = open_beneath(fd.get(), part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      if (!next && errno == ENOENT && create) {
        if (::mkdirat(fd.get(), part.c_str(), 0755) != 0 && errno != EEXIST) {
          throw_errno(entry_where(entry) + ": mkdir " + quote_name(so_far));
        }
        next = open_beneath(fd.get(), part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        // The umask must not change it.
        if (next && ::fchmod(next.get(), 0755) != 0) {
          throw_errno(entry_where(entry) + ": chmod " + quote_name(so_far));
        }
      }
      if (!next) {
        int err = errno;
        struct stat st;
        // O_DIRECTORY reports a symlink as "not a directory".
        if (err == ENOTDIR && ::fstatat(fd.get(), part.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISLNK(st.st_mode)) {
          err = ELOOP;
        }
        std::string what = std::string(role) + " " + quote_name(so_far);
        if (err == ELOOP) throw entry_error(entry, what + " is a symlink");
        if (err == ENOTDIR) throw entry_error(entry, what + " is not a directory");
        if (err == ENOENT) throw entry_error(entry, what + " does not exist");
        if (err == EXDEV) throw entry_error(entry, what + " is another filesystem");
        throw_errno(entry_where(entry) + ": open " + quote_name(so_far), err);
      }
      fd = std::move(next);
    }
    return fd;
  }

  // Makes room for `base` in `parent`: a later entry wins over an earlier one of the same name.
  // Returns true when a directory is there and stays (`keep_dir`).
  bool clear(int parent, const std::string& base, bool keep_dir, std::string_view entry) {
    struct stat st;
    if (::fstatat(parent, base.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return false;
      throw_errno(entry_where(entry) + ": stat");
    }
    if (S_ISDIR(st.st_mode)) {
      if (keep_dir) return true;
      sys::remove_tree_at(parent, base);
    } else if (::unlinkat(parent, base.c_str(), 0) != 0) {
      throw_errno(entry_where(entry) + ": remove the earlier entry");
    }
    return false;
  }

  void set_times(int fd, std::string_view entry, const struct timespec& mtime) {
    struct timespec times[2] = {mtime, mtime};
    if (::futimens(fd, times) != 0) throw_errno(entry_where(entry) + ": set times");
  }

  // Owner first: chown clears the setuid and setgid bits.
  void set_owner_mode(int fd, std::string_view entry, uint32_t uid, uint32_t gid, mode_t mode) {
    if (::fchown(fd, uid, gid) != 0) throw_errno(entry_where(entry) + ": chown");
    if (::fchmod(fd, mode) != 0) throw_errno(entry_where(entry) + ": chmod");
  }

  void whiteout(const std::string& parent_path, const std::string& base, std::string_view entry,
                uint32_t uid, uint32_t gid, const struct timespec& mtime);

  sys::UniqueFd root_;
  std::map<std::string, struct timespec> dir_times_;
};

// Reads the rest of the entry's data, keeping none of it.
void skip_data(struct archive* a, const ReadContext& ctx, std::string_view entry) {
  for (;;) {
    const void* buf;
    size_t size;
    la_int64_t offset;
    int rc = archive_read_data_block(a, &buf, &size, &offset);
    if (rc == ARCHIVE_EOF) return;
    if (rc != ARCHIVE_OK) archive_failed(a, ctx, entry_where(entry));
  }
}

void Unpacker::whiteout(const std::string& parent_path, const std::string& name,
                        std::string_view entry, uint32_t uid, uint32_t gid,
                        const struct timespec& mtime) {
  // ".wh.." and ".wh..." would name the directory itself or its parent.
  if (name.empty() || name == "." || name == "..") {
    throw entry_error(entry, "a whiteout of " + quote_name(name) + " names nothing");
  }
  sys::UniqueFd parent = open_dir(parent_path, true, entry, "parent");
  clear(parent.get(), name, false, entry);
  if (::mknodat(parent.get(), name.c_str(), S_IFCHR | 0, ::makedev(0, 0)) != 0) {
    throw_errno(entry_where(entry) + ": make the whiteout");
  }
  if (::fchownat(parent.get(), name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
    throw_errno(entry_where(entry) + ": chown");
  }
  struct timespec times[2] = {mtime, mtime};
  if (::utimensat(parent.get(), name.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
    throw_errno(entry_where(entry) + ": set times");
  }
}

void Unpacker::entry(struct archive* a, struct archive_entry* e, const ReadContext& ctx) {
  const char* raw_name = archive_entry_pathname(e);
  if (!raw_name) throw invalid_argument("layer archive: an entry has no name");
  std::string raw = raw_name;
  std::string path = clean_name(raw, raw, "name");

  const char* hardlink = archive_entry_hardlink(e);
  mode_t type = archive_entry_filetype(e);
  if (!hardlink) {
    switch (type) {
      case AE_IFREG:
      case AE_IFDIR:
      case AE_IFLNK:
      case AE_IFIFO:
        break;
      case AE_IFCHR:
      case AE_IFBLK:
        throw entry_error(raw, "device nodes are not allowed in a layer");
      case AE_IFSOCK:
        throw entry_error(raw, "sockets are not allowed in a layer");
      default:
        throw entry_error(raw, "unsupported entry type");
    }
  }
  la_int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
  // (uid_t)-1 means "leave unchanged" to chown.
  if (uid < 0 || uid >= 0xffffffffLL || gid < 0 || gid >= 0xffffffffLL) {
    throw entry_error(raw, "owner out of range");
  }
  auto owner = static_cast<uint32_t>(uid), group = static_cast<uint32_t>(gid);
  mode_t mode = archive_entry_perm(e) & 07777;
  bool has_mtime = archive_entry_mtime_is_set(e);
  struct timespec mtime {};
  if (has_mtime) {
    mtime.tv_sec = archive_entry_mtime(e);
    mtime.tv_nsec = archive_entry_mtime_nsec(e);
  } else {
    mtime.tv_nsec = UTIME_OMIT;
  }

  if (path.empty()) {
    // "./": the layer's root. Its metadata is not the layer's to set (overlayfs shows the upper
    // layer's root), so it is left as made.
    if (hardlink || type != AE_IFDIR) throw entry_error(raw, "names the layer's root");
    skip_data(a, ctx, raw);
    return;
  }
  auto [parent_path, base] = parent_and_base(path);
  std::vector<std::string_view> parts = split_path(parent_path);
  if (std::any_of(parts.begin(), parts.end(),
                  [](std::string_view p) { return p.starts_with(kAufsMetaPrefix); }) ||
      (base.starts_with(kAufsMetaPrefix) && base != kOpaqueMarker)) {
    skip_data(a, ctx, raw);
    return;
  }
  if (std::any_of(parts.begin(), parts.end(),
                  [](std::string_view p) { return p.starts_with(kWhiteoutPrefix); })) {
    throw entry_error(raw, "a whiteout cannot hold entries");
  }
  if (base == kOpaqueMarker) {
    skip_data(a, ctx, raw);
    sys::UniqueFd dir = open_dir(parent_path, true, raw, "parent");
    if (::fsetxattr(dir.get(), kOpaqueXattr, "y", 1, 0) != 0) {
      throw_errno(entry_where(raw) + ": set " + kOpaqueXattr);
    }
    return;
  }
  if (base.starts_with(kWhiteoutPrefix)) {
    if (!hardlink && type == AE_IFDIR) throw entry_error(raw, "a whiteout must not be a directory");
    skip_data(a, ctx, raw);
    whiteout(parent_path, base.substr(kWhiteoutPrefix.size()), raw, owner, group, mtime);
    return;
  }

  if (hardlink) {
    std::string target = clean_name(hardlink, raw, "hard link target");
    if (target.empty()) throw entry_error(raw, "a hard link to the layer's root");
    if (target == path) throw entry_error(raw, "a hard link to itself");
    auto [target_parent_path, target_base] = parent_and_base(target);
    std::string what = "hard link target " + quote_name(target);
    sys::UniqueFd target_parent =
        open_dir(target_parent_path, false, raw, "hard link target's parent");
    struct stat st;
    if (::fstatat(target_parent.get(), target_base.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) throw entry_error(raw, what + " does not exist");
      throw_errno(entry_where(raw) + ": stat " + what);
    }
    if (S_ISDIR(st.st_mode)) throw entry_error(raw, what + " is a directory");
    if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode) && !S_ISFIFO(st.st_mode)) {
      throw entry_error(raw, what + " is not a file");
    }
    skip_data(a, ctx, raw);
    sys::UniqueFd parent = open_dir(parent_path, true, raw, "parent");
    clear(parent.get(), base, false, raw);
    if (::linkat(target_parent.get(), target_base.c_str(), parent.get(), base.c_str(), 0) != 0) {
      throw_errno(entry_where(raw) + ": link to " + quote_name(target));
    }
    return;
  }

  sys::UniqueFd parent = open_dir(parent_path, true, raw, "parent");
  switch (type) {
    case AE_IFREG: {
      clear(parent.get(), base, false, raw);
      // O_EXCL: never write through anything already there.
      sys::UniqueFd fd(::openat(parent.get(), base.c_str(),
                                O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!fd) throw_errno(entry_where(raw) + ": create");
      int64_t end = 0;
      for (;;) {
        const void* buf;
        size_t size;
        la_int64_t offset;
        int rc = archive_read_data_block(a, &buf, &size, &offset);
        if (rc == ARCHIVE_EOF) break;
        if (rc != ARCHIVE_OK) archive_failed(a, ctx, entry_where(raw));
        // Blocks come with offsets: sparse files leave holes between them.
        const char* p = static_cast<const char*>(buf);
        while (size > 0) {
          ssize_t n = ::pwrite(fd.get(), p, size, offset);
          if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno(entry_where(raw) + ": write");
          }
          p += n;
          size -= static_cast<size_t>(n);
          offset += n;
        }
        end = std::max<int64_t>(end, offset);
      }
      if (archive_entry_size_is_set(e) && archive_entry_size(e) > end &&
          ::ftruncate(fd.get(), archive_entry_size(e)) != 0) {
        throw_errno(entry_where(raw) + ": write");
      }
      set_owner_mode(fd.get(), raw, owner, group, mode);
      if (has_mtime) set_times(fd.get(), raw, mtime);
      break;
    }
    case AE_IFDIR: {
      skip_data(a, ctx, raw);
      if (!clear(parent.get(), base, true, raw) &&
          ::mkdirat(parent.get(), base.c_str(), 0700) != 0) {
        throw_errno(entry_where(raw) + ": mkdir");
      }
      sys::UniqueFd fd(
          ::openat(parent.get(), base.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd) throw_errno(entry_where(raw) + ": open");
      set_owner_mode(fd.get(), raw, owner, group, mode);
      if (has_mtime) dir_times_.insert_or_assign(path, mtime);
      break;
    }
    case AE_IFLNK: {
      skip_data(a, ctx, raw);
      // Stored as it is, wherever it points: it is resolved inside the box's root at run time.
      const char* target = archive_entry_symlink(e);
      if (!target || !*target) throw entry_error(raw, "a symlink without a target");
      clear(parent.get(), base, false, raw);
      if (::symlinkat(target, parent.get(), base.c_str()) != 0) {
        throw_errno(entry_where(raw) + ": symlink");
      }
      if (::fchownat(parent.get(), base.c_str(), owner, group, AT_SYMLINK_NOFOLLOW) != 0) {
        throw_errno(entry_where(raw) + ": chown");
      }
      struct timespec times[2] = {mtime, mtime};
      if (has_mtime && ::utimensat(parent.get(), base.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
        throw_errno(entry_where(raw) + ": set times");
      }
      break;
    }
    case AE_IFIFO: {
      skip_data(a, ctx, raw);
      clear(parent.get(), base, false, raw);
      if (::mknodat(parent.get(), base.c_str(), S_IFIFO | 0600, 0) != 0) {
        throw_errno(entry_where(raw) + ": mkfifo");
      }
      // O_NONBLOCK: opening a fifo to read would otherwise wait for a writer.
      sys::UniqueFd fd(
          ::openat(parent.get(), base.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
      if (!fd) throw_errno(entry_where(raw) + ": open");
      set_owner_mode(fd.get(), raw, owner, group, mode);
      if (has_mtime) set_times(fd.get(), raw, mtime);
      break;
    }
    default:
      throw entry_error(raw, "unsupported entry type");
  }
}

// ---- writing: tar bytes hashed, compressed, hashed again and written

class LayerOutput {
 public:
  LayerOutput(int fd, Compression compression) : fd_(fd), compression_(compression) {
    staged_.reserve(kChunk);
    stored_.reserve(kChunk);
    if (compression != Compression::none) zbuf_.resize(kChunk);
    if (compression == Compression::gzip) {
      if (::deflateInit2(&z_, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8,
                         Z_DEFAULT_STRATEGY) != Z_OK) {
        throw internal_error("deflateInit2 failed");
      }
      z_ready_ = true;
      // No name, no mtime, "unknown" OS: the same tree gives the same bytes on any host.
      gz_header_.os = 255;
      if (::deflateSetHeader(&z_, &gz_header_) != Z_OK) {
        throw internal_error("deflateSetHeader failed");
      }
    } else if (compression == Compression::zstd) {
      zc_.reset(ZSTD_createCCtx());
      if (!zc_ || ZSTD_isError(ZSTD_CCtx_setParameter(zc_.get(), ZSTD_c_compressionLevel, 3)) ||
          ZSTD_isError(ZSTD_CCtx_setParameter(zc_.get(), ZSTD_c_checksumFlag, 1))) {
        throw internal_error("cannot set up zstd compression");
      }
    }
  }
  ~LayerOutput() {
    if (z_ready_) ::deflateEnd(&z_);
  }
  LayerOutput(const LayerOutput&) = delete;
  LayerOutput& operator=(const LayerOutput&) = delete;

  void write(std::string_view tar) {
    tar_.update(tar);
    tar_size_ += tar.size();
    // Small pieces (headers) are gathered first: fewer compressor calls and writes.
    if (staged_.size() + tar.size() < kChunk) {
      staged_.append(tar);
      return;
    }
    compress(staged_, false);
    staged_.clear();
    compress(tar, false);
  }

  LayerDigests finish() {
    compress(staged_, true);
    staged_.clear();
    flush_stored();
    return {blob_.digest(), blob_size_, tar_.digest(), tar_size_, compression_};
  }

 private:
  void compress(std::string_view in, bool last) {
    if (in.empty() && !last) return;
    switch (compression_) {
      case Compression::none:
        store(in);
        break;
      case Compression::gzip: {
        z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
        z_.avail_in = static_cast<uInt>(in.size());
        for (;;) {
          z_.next_out = reinterpret_cast<Bytef*>(zbuf_.data());
          z_.avail_out = static_cast<uInt>(zbuf_.size());
          int rc = ::deflate(&z_, last ? Z_FINISH : Z_NO_FLUSH);
          if (rc == Z_STREAM_ERROR) throw internal_error("deflate failed");
          store({zbuf_.data(), zbuf_.size() - z_.avail_out});
          if (last ? rc == Z_STREAM_END : (z_.avail_in == 0 && z_.avail_out != 0)) break;
        }
        break;
      }
      case Compression::zstd: {
        ZSTD_inBuffer zin{in.data(), in.size(), 0};
        for (;;) {
          ZSTD_outBuffer zout{zbuf_.data(), zbuf_.size(), 0};
          size_t rc =
              ZSTD_compressStream2(zc_.get(), &zout, &zin, last ? ZSTD_e_end : ZSTD_e_continue);
          if (ZSTD_isError(rc)) {
            throw internal_error(std::string("zstd compression failed: ") + ZSTD_getErrorName(rc));
          }
          store({zbuf_.data(), zout.pos});
          if (last ? rc == 0 : zin.pos == zin.size) break;
        }
        break;
      }
    }
  }

  void store(std::string_view bytes) {
    blob_.update(bytes);
    blob_size_ += bytes.size();
    stored_.append(bytes);
    if (stored_.size() >= kChunk) flush_stored();
  }

  void flush_stored() {
    if (!sys::write_all(fd_, stored_)) throw_errno("writing the layer");
    stored_.clear();
  }

  int fd_;
  Compression compression_;
  std::string staged_;      // tar bytes not yet compressed
  std::string stored_;      // compressed bytes not yet written
  std::vector<char> zbuf_;  // the compressor's output
  z_stream z_{};
  gz_header gz_header_{};
  bool z_ready_ = false;
  std::unique_ptr<ZSTD_CCtx, ZstdCCtxDeleter> zc_;
  sys::Sha256 blob_, tar_;
  uint64_t blob_size_ = 0, tar_size_ = 0;
};

// ---- packing

struct PackItem {
  enum class Kind { file, dir, symlink, fifo, whiteout };
  Kind kind = Kind::file;
  std::string name;  // in the archive: `path`, but ".wh.NAME" for a whiteout
  std::string path;  // on disk, relative to the packed directory
  uint32_t mode = 0, uid = 0, gid = 0;
  int64_t mtime = 0;
  uint64_t size = 0;  // files
  dev_t dev = 0;
  ino_t ino = 0;
  nlink_t nlink = 0;
  std::string link;  // symlinks
  bool opaque = false;
};

bool has_xattr(int fd, const char* name, std::string_view value = {}) {
  char buf[8];
  ssize_t n = ::fgetxattr(fd, name, buf, sizeof buf);
  if (n < 0) return errno == ERANGE;  // present but longer than any value we look for
  return value.empty() || std::string_view(buf, static_cast<size_t>(n)) == value;
}

std::string read_link_at(int dirfd, const std::string& name, const std::string& where) {
  std::string target(256, '\0');
  for (;;) {
    ssize_t n = ::readlinkat(dirfd, name.c_str(), target.data(), target.size());
    if (n < 0) throw_errno("packing the layer: readlink " + quote_name(where));
    if (static_cast<size_t>(n) < target.size()) {
      target.resize(static_cast<size_t>(n));
      return target;
    }
    target.resize(target.size() * 2);
  }
}

// Everything under `root` except the root itself, in no particular order. Directories are
// opened one at a time from the root (never following symlinks), so a deep tree costs no more
// than one fd.
std::vector<PackItem> list_tree(int root, bool& root_opaque) {
  std::vector<PackItem> items;
  // Directories still to read: their path and their item (SIZE_MAX for the root).
  std::vector<std::pair<std::string, size_t>> todo = {{"", SIZE_MAX}};
  while (!todo.empty()) {
    auto [dir_path, item] = todo.back();
    todo.pop_back();
    sys::UniqueFd dir =
        open_beneath(root, dir_path.empty() ? "." : dir_path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (!dir) throw_errno("packing the layer: open " + quote_name(dir_path));
    // A renamed directory of an upper layer (redirect_dir) only makes sense with its lowers.
    if (has_xattr(dir.get(), "trusted.overlay.redirect")) {
      throw invalid_argument("packing the layer: " + quote_name(dir_path) +
                             " is an overlayfs redirect; it cannot be packed on its own");
    }
    bool opaque = has_xattr(dir.get(), kOpaqueXattr, "y");
    if (item == SIZE_MAX) {
      root_opaque = opaque;
    } else {
      items[item].opaque = opaque;
    }
    for (const sys::DirEntry& entry : sys::read_dir(dir.get())) {
      std::string path = dir_path.empty() ? entry.name : dir_path + "/" + entry.name;
      struct stat st;
      if (::fstatat(dir.get(), entry.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        throw_errno("packing the layer: stat " + quote_name(path));
      }
      PackItem it;
      it.name = it.path = path;
      it.mode = st.st_mode & 07777;
      it.uid = st.st_uid;
      it.gid = st.st_gid;
      it.mtime = st.st_mtim.tv_sec;
      it.dev = st.st_dev;
      it.ino = st.st_ino;
      it.nlink = st.st_nlink;
      if (S_ISREG(st.st_mode)) {
        it.size = static_cast<uint64_t>(st.st_size);
      } else if (S_ISDIR(st.st_mode)) {
        it.kind = PackItem::Kind::dir;
        todo.push_back({path, items.size()});
      } else if (S_ISLNK(st.st_mode)) {
        it.kind = PackItem::Kind::symlink;
        it.link = read_link_at(dir.get(), entry.name, path);
      } else if (S_ISFIFO(st.st_mode)) {
        it.kind = PackItem::Kind::fifo;
      } else if (S_ISCHR(st.st_mode) && st.st_rdev == ::makedev(0, 0)) {
        it.kind = PackItem::Kind::whiteout;
        it.name =
            (dir_path.empty() ? "" : dir_path + "/") + std::string(kWhiteoutPrefix) + entry.name;
      } else {
        continue;  // sockets and devices have no place in a layer
      }
      items.push_back(std::move(it));
    }
  }
  return items;
}

TarEntry opaque_marker(const std::string& dir_name, const PackItem* dir) {
  TarEntry marker;
  marker.name =
      dir_name.empty() ? std::string(kOpaqueMarker) : dir_name + "/" + std::string(kOpaqueMarker);
  if (dir) {
    marker.mode = dir->mode & 0777;
    marker.uid = dir->uid;
    marker.gid = dir->gid;
    marker.mtime = dir->mtime;
  }
  return marker;
}

// Writes the data of a regular file: exactly `item.size` bytes, whatever it holds now.
void write_file_data(int root, const PackItem& item, LayerOutput& out) {
  // O_NONBLOCK: should it have become a fifo, opening it must not wait.
  sys::UniqueFd fd = open_beneath(root, item.path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  struct stat st;
  if (!fd || ::fstat(fd.get(), &st) != 0) {
    throw_errno("packing the layer: open " + quote_name(item.path));
  }
  if (!S_ISREG(st.st_mode) || st.st_ino != item.ino) {
    throw Error(ErrorCode::conflict,
                "packing the layer: " + quote_name(item.path) + " changed while it was packed");
  }
  // A metacopy file of an upper layer holds no data: it lives in the lower layers.
  if (has_xattr(fd.get(), "trusted.overlay.metacopy")) {
    throw invalid_argument("packing the layer: " + quote_name(item.path) +
                           " is an overlayfs metacopy file; it cannot be packed on its own");
  }
  std::vector<char> buf(kChunk);
  uint64_t done = 0;
  while (done < item.size) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), item.size - done));
    ssize_t n = ::read(fd.get(), buf.data(), want);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("packing the layer: read " + quote_name(item.path));
    }
    if (n == 0) {
      // Shorter than when it was listed: filled up with zeros, as tar does.
      std::memset(buf.data(), 0, want);
      n = static_cast<ssize_t>(want);
    }
    out.write({buf.data(), static_cast<size_t>(n)});
    done += static_cast<uint64_t>(n);
  }
  out.write(tar_padding(item.size));
}

}  // namespace

std::string layer_media_type(Compression c) {
  switch (c) {
    case Compression::none:
      return "application/vnd.oci.image.layer.v1.tar";
    case Compression::gzip:
      return "application/vnd.oci.image.layer.v1.tar+gzip";
    case Compression::zstd:
      return "application/vnd.oci.image.layer.v1.tar+zstd";
  }
  throw internal_error("unknown layer compression");
}

Compression compression_of_media_type(const std::string& media_type) {
  static const std::pair<std::string_view, Compression> kTypes[] = {
      {"application/vnd.oci.image.layer.v1.tar", Compression::none},
      {"application/vnd.oci.image.layer.v1.tar+gzip", Compression::gzip},
      {"application/vnd.oci.image.layer.v1.tar+zstd", Compression::zstd},
      {"application/vnd.oci.image.layer.nondistributable.v1.tar", Compression::none},
      {"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", Compression::gzip},
      {"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", Compression::zstd},
      {"application/vnd.docker.image.rootfs.diff.tar.gzip", Compression::gzip},
      {"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", Compression::gzip},
  };
  for (const auto& [type, compression] : kTypes) {
    if (media_type == type) return compression;
  }
  throw invalid_argument("unknown layer media type " + quote_name(media_type));
}

LayerDigests unpack_layer(int in_fd, const std::string& dir, int blob_copy_fd) {
  Unpacker unpacker(dir);
  std::unique_ptr<LayerInput> input;
  try {
    input = std::make_unique<LayerInput>(in_fd, blob_copy_fd);
  } catch (const Error& e) {
    throw prefixed(e, "layer archive");
  }
  if (input->empty()) throw invalid_argument("layer archive: empty");
  ReadContext ctx{input.get(), nullptr};
  ArchivePtr a(archive_read_new());
  if (!a) throw internal_error("archive_read_new failed");
  // Tar only (pax and GNU long names included); decompression is ours, and no filter that could
  // run an outside program is ever enabled.
  archive_read_support_format_tar(a.get());
  archive_read_support_format_gnutar(a.get());
  if (archive_read_open(a.get(), &ctx, nullptr, read_callback, nullptr) != ARCHIVE_OK) {
    archive_failed(a.get(), ctx, "layer archive");
  }
  std::string last;         // the name of the last entry, for errors after it
  int64_t entries_end = 0;  // where, in the tar, the last entry's data ended
  for (;;) {
    struct archive_entry* e = nullptr;
    int rc = archive_read_next_header(a.get(), &e);
    if (rc == ARCHIVE_EOF) break;
    // A warning is a name libarchive could not convert to the locale's charset: the bytes are
    // kept as they are.
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
      archive_failed(
          a.get(), ctx,
          last.empty() ? "layer archive" : "layer archive, after entry " + quote_name(last));
    }
    const char* name = archive_entry_pathname(e);
    last = name ? name : "";
    unpacker.entry(a.get(), e, ctx);
    entries_end = archive_filter_bytes(a.get(), 0);
  }
  // libarchive takes an archive that stops right after an entry for a whole one; real writers
  // always end with zero blocks, so without them it was cut short.
  if (archive_filter_bytes(a.get(), 0) < entries_end + static_cast<int64_t>(kTarBlock)) {
    throw invalid_argument("layer archive: truncated" +
                           (last.empty() ? std::string() : " after entry " + quote_name(last)) +
                           " (no end-of-archive blocks)");
  }
  unpacker.finish();
  try {
    input->finish();
  } catch (const Error& e) {
    throw prefixed(e, "layer archive");
  }
  return input->digests();
}

LayerDigests pack_layer(const std::string& dir, int out_fd, Compression compression) {
  sys::UniqueFd root(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) throw_errno("open " + dir);
  bool root_opaque = false;
  std::vector<PackItem> items = list_tree(root.get(), root_opaque);
  // Byte order of the names: a parent, a prefix of its children's names, comes first.
  std::sort(items.begin(), items.end(),
            [](const PackItem& x, const PackItem& y) { return x.name < y.name; });

  LayerOutput out(out_fd, compression);
  if (root_opaque) out.write(tar_header(opaque_marker("", nullptr)));
  std::map<std::pair<dev_t, ino_t>, std::string> first_links;
  for (const PackItem& item : items) {
    TarEntry e;
    e.name = item.name;
    e.mode = item.mode;
    e.uid = item.uid;
    e.gid = item.gid;
    e.mtime = item.mtime;
    // Whiteouts share one inode (overlayfs links them to save inodes): never hard links.
    if (item.nlink > 1 && item.kind != PackItem::Kind::dir &&
        item.kind != PackItem::Kind::whiteout) {
      auto [it, first] = first_links.try_emplace({item.dev, item.ino}, item.name);
      if (!first) {
        e.type = TarEntry::Type::hardlink;
        e.link = it->second;
        out.write(tar_header(e));
        continue;
      }
    }
    switch (item.kind) {
      case PackItem::Kind::file:
        e.type = TarEntry::Type::file;
        e.size = item.size;
        out.write(tar_header(e));
        write_file_data(root.get(), item, out);
        break;
      case PackItem::Kind::dir:
        e.type = TarEntry::Type::dir;
        out.write(tar_header(e));
        if (item.opaque) out.write(tar_header(opaque_marker(item.name, &item)));
        break;
      case PackItem::Kind::symlink:
        e.type = TarEntry::Type::symlink;
        e.link = item.link;
        out.write(tar_header(e));
        break;
      case PackItem::Kind::fifo:
        e.type = TarEntry::Type::fifo;
        out.write(tar_header(e));
        break;
      case PackItem::Kind::whiteout:
        // As Docker writes them: an empty file, readable by its owner.
        e.type = TarEntry::Type::file;
        e.mode = 0600;
        out.write(tar_header(e));
        break;
    }
  }
  out.write(tar_end());
  return out.finish();
}

}  // namespace pitbox::storage
