// Layer archives: round trips through pack and unpack, compression and digests, and hostile
// archives (built here byte by byte) that must be refused without touching anything outside.
#include "storage/layer.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "storage/tar_writer.h"
#include "sys/error.h"
#include "sys/fs.h"
#include "sys/text.h"

namespace pitbox::storage {
namespace {

// ---- archives built by hand

std::string file_entry(const std::string& name, const std::string& data, uint32_t mode = 0644) {
  return tar_header({TarEntry::Type::file, name, mode, 0, 0, 1700000000, data.size()}) + data +
         tar_padding(data.size());
}
std::string dir_entry(const std::string& name, uint32_t mode = 0755) {
  return tar_header({TarEntry::Type::dir, name, mode, 0, 0, 1700000000});
}
std::string symlink_entry(const std::string& name, const std::string& target) {
  return tar_header({TarEntry::Type::symlink, name, 0777, 0, 0, 1700000000, 0, target});
}
std::string hardlink_entry(const std::string& name, const std::string& target) {
  return tar_header({TarEntry::Type::hardlink, name, 0644, 0, 0, 1700000000, 0, target});
}

// A header with another type flag (TarEntry writes no devices), its checksum made right again.
std::string with_type(std::string header, char type) {
  char* h = header.data() + header.size() - 512;
  h[156] = type;
  std::memset(h + 148, ' ', 8);
  unsigned sum = 0;
  for (size_t i = 0; i < 512; ++i) sum += static_cast<unsigned char>(h[i]);
  std::snprintf(h + 148, 8, "%06o", sum);
  h[155] = ' ';
  return header;
}

std::string gzip(std::string_view data) {
  z_stream z{};
  EXPECT_EQ(::deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(::deflateBound(&z, data.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(::deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(out.size() - z.avail_out);
  ::deflateEnd(&z);
  return out;
}

std::string zstd(std::string_view data) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
  std::string out(ZSTD_compressBound(data.size()), '\0');
  size_t n = ZSTD_compress2(c, out.data(), out.size(), data.data(), data.size());
  ZSTD_freeCCtx(c);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

// Bytes in a memfd, at its start.
sys::UniqueFd memfd_with(std::string_view data) {
  sys::UniqueFd fd(::memfd_create("layer-test", MFD_CLOEXEC));
  EXPECT_TRUE(fd);
  EXPECT_TRUE(sys::write_all(fd.get(), data));
  ::lseek(fd.get(), 0, SEEK_SET);
  return fd;
}

std::string contents(int fd) {
  ::lseek(fd, 0, SEEK_SET);
  return sys::read_fd(fd);
}

std::string digest_of(std::string_view data) { return "sha256:" + sys::sha256_hex(data); }

// The archive's entry names, in order, with their type ("f", "d", "l", "h", "p").
std::vector<std::string> entry_names(const std::string& tar) {
  struct archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  EXPECT_EQ(archive_read_open_memory(a, tar.data(), tar.size()), ARCHIVE_OK);
  std::vector<std::string> out;
  struct archive_entry* e;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    std::string type = archive_entry_hardlink(e)               ? "h"
                       : archive_entry_filetype(e) == AE_IFDIR ? "d"
                       : archive_entry_filetype(e) == AE_IFLNK ? "l"
                       : archive_entry_filetype(e) == AE_IFIFO ? "p"
                       : archive_entry_filetype(e) == AE_IFREG ? "f"
                                                               : "?";
    out.push_back(type + " " + archive_entry_pathname(e));
  }
  archive_read_free(a);
  return out;
}

// ---- trees on disk

void make_file(const std::string& path, const std::string& data, mode_t mode, uid_t uid = 0,
               gid_t gid = 0) {
  sys::write_file(path, data, 0600);
  ASSERT_EQ(::chown(path.c_str(), uid, gid), 0) << path;
  ASSERT_EQ(::chmod(path.c_str(), mode), 0) << path;
}

void make_dir(const std::string& path, mode_t mode, uid_t uid = 0, gid_t gid = 0) {
  ASSERT_EQ(::mkdir(path.c_str(), 0700), 0) << path;
  ASSERT_EQ(::chown(path.c_str(), uid, gid), 0) << path;
  ASSERT_EQ(::chmod(path.c_str(), mode), 0) << path;
}

// Every mtime under `root` set to a fixed second, so that trees compare.
void fix_mtimes(const std::string& root, time_t t) {
  for (const auto& e : sys::read_dir(root)) {
    std::string path = root + "/" + e.name;
    if (e.type == DT_DIR) fix_mtimes(path, t);
    struct timespec times[2] = {{t, 0}, {t, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << path;
  }
}

bool is_opaque(const std::string& path) {
  char v[4];
  ssize_t n = ::lgetxattr(path.c_str(), "trusted.overlay.opaque", v, sizeof v);
  return n == 1 && v[0] == 'y';
}

bool is_whiteout(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == ::makedev(0, 0);
}

// Everything under `root` (not the root itself): type, mode, owner, mtime and contents.
std::map<std::string, std::string> describe(const std::string& root) {
  std::map<std::string, std::string> out;
  std::function<void(const std::string&)> walk = [&](const std::string& rel) {
    for (const auto& e : sys::read_dir(rel.empty() ? root : root + "/" + rel)) {
      std::string path = rel.empty() ? e.name : rel + "/" + e.name;
      std::string full = root + "/" + path;
      struct stat st;
      EXPECT_EQ(::lstat(full.c_str(), &st), 0) << full;
      char head[128];
      std::snprintf(head, sizeof head, "%06o %u:%u mtime=%lld", st.st_mode, st.st_uid, st.st_gid,
                    static_cast<long long>(st.st_mtim.tv_sec));
      std::string d = head;
      if (S_ISREG(st.st_mode)) d += " data=" + sys::sha256_hex(sys::read_file(full));
      if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
        d += " rdev=" + std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
      }
      if (S_ISLNK(st.st_mode)) {
        char target[4096];
        ssize_t n = ::readlink(full.c_str(), target, sizeof target);
        d += " -> " + std::string(target, n > 0 ? static_cast<size_t>(n) : 0);
      }
      if (S_ISDIR(st.st_mode) && is_opaque(full)) d += " opaque";
      out[path] = d;
      if (S_ISDIR(st.st_mode)) walk(path);
    }
  };
  walk("");
  return out;
}

ino_t inode_of(const std::string& path) {
  struct stat st {};
  ::lstat(path.c_str(), &st);
  return st.st_ino;
}

class LayerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pitbox-layer-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    layer_ = base_ + "/layer";
    outside_ = base_ + "/outside";
    ASSERT_EQ(::mkdir(layer_.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(outside_.c_str(), 0755), 0);
  }
  void TearDown() override {
    if (!base_.empty()) sys::remove_tree(base_);
  }

  LayerDigests unpack(std::string_view archive, const std::string& dir, int copy_fd = -1) {
    sys::UniqueFd fd = memfd_with(archive);
    return unpack_layer(fd.get(), dir, copy_fd);
  }

  // A fresh empty layer directory, for the next archive.
  void reset_layer() {
    sys::remove_tree(layer_);
    ASSERT_EQ(::mkdir(layer_.c_str(), 0755), 0);
  }

  // Unpacking `archive` fails with invalid_argument saying `what`, and outside the layer nothing
  // changed: `outside` still holds just `outside_names`, the test directory just the two.
  void expect_refused(const std::string& archive, const std::string& what,
                      std::vector<std::string> outside_names = {}) {
    SCOPED_TRACE(what);
    reset_layer();
    try {
      unpack(archive, layer_);
      ADD_FAILURE() << "unpacked, expected an error saying: " << what;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.message();
      EXPECT_NE(e.message().find(what), std::string::npos) << e.message();
      EXPECT_EQ(e.message().rfind("layer ", 0), 0u) << e.message();
    }
    std::vector<std::string> names;
    for (const auto& e : sys::read_dir(outside_)) names.push_back(e.name);
    std::sort(names.begin(), names.end());
    std::sort(outside_names.begin(), outside_names.end());
    EXPECT_EQ(names, outside_names);
    std::vector<std::string> top;
    for (const auto& e : sys::read_dir(base_)) top.push_back(e.name);
    std::sort(top.begin(), top.end());
    EXPECT_EQ(top, (std::vector<std::string>{"layer", "outside"}));
  }

  std::string base_, layer_, outside_;
};

// A tree with every kind of thing an upper directory holds.
void make_tree(const std::string& src) {
  make_dir(src, 0755);
  make_dir(src + "/bin", 0755);
  make_file(src + "/bin/tool", "#!/bin/sh\necho tool\n", 04755, 1000, 1000);
  ASSERT_EQ(::link((src + "/bin/tool").c_str(), (src + "/bin/tool-link").c_str()), 0);
  ASSERT_EQ(::symlink("tool", (src + "/bin/sh").c_str()), 0);
  make_dir(src + "/etc", 0755);
  make_file(src + "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0644);
  ASSERT_EQ(::symlink("/usr/share/zoneinfo/UTC", (src + "/etc/localtime").c_str()), 0);
  ASSERT_EQ(::lchown((src + "/etc/localtime").c_str(), 1000, 1000), 0);
  // An overlayfs whiteout, as overlayfs makes it.
  ASSERT_EQ(::mknod((src + "/etc/gone").c_str(), S_IFCHR | 0, ::makedev(0, 0)), 0);
  make_dir(src + "/run", 0755);
  ASSERT_EQ(::mkfifo((src + "/run/pipe").c_str(), 0600), 0);
  ASSERT_EQ(::chown((src + "/run/pipe").c_str(), 1000, 1000), 0);
  ASSERT_EQ(::chmod((src + "/run/pipe").c_str(), 0620), 0);
  make_dir(src + "/tmp", 01777);
  make_dir(src + "/shared", 02775, 0, 1000);
  make_dir(src + "/opaque", 0750, 1000, 1000);
  ASSERT_EQ(::setxattr((src + "/opaque").c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);
  make_file(src + "/opaque/kept", "kept\n", 0600, 1000, 1000);
  // Names and targets longer than a ustar header holds; ids beyond its octal fields.
  std::string long_dir = src + "/long/" + std::string(120, 'd');
  ASSERT_TRUE(sys::make_dirs(long_dir));
  std::string long_file = long_dir + "/" + std::string(130, 'f');
  make_file(long_file, "long\n", 0644, 3000000, 3000000);
  ASSERT_EQ(::link(long_file.c_str(), (src + "/bin/long-link").c_str()), 0);
  ASSERT_EQ(::symlink(("/" + std::string(200, 't')).c_str(), (src + "/long/target").c_str()), 0);
  std::string big;
  for (int i = 0; i < 300000; ++i) big += static_cast<char>('a' + i % 26 + (i / 4096) % 3);
  make_file(src + "/big", big, 0644);
  make_file(src + "/empty", "", 0400);
  // Neither belongs in a layer: both are left out.
  ASSERT_EQ(::mknod((src + "/null").c_str(), S_IFCHR | 0666, ::makedev(1, 3)), 0);
  int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(sock, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string sock_path = src + "/sock";
  std::strncpy(addr.sun_path, sock_path.c_str(), sizeof addr.sun_path - 1);
  EXPECT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(sock);
  fix_mtimes(src, 1700000000);
}

TEST_F(LayerTest, PackThenUnpackGivesTheSameTree) {
  std::string src = base_ + "/src";
  make_tree(src);

  sys::UniqueFd tar_fd(::memfd_create("tar", MFD_CLOEXEC));
  LayerDigests packed = pack_layer(src, tar_fd.get(), Compression::none);
  std::string tar = contents(tar_fd.get());
  EXPECT_EQ(packed.compression, Compression::none);
  EXPECT_EQ(packed.diff_id, digest_of(tar));
  EXPECT_EQ(packed.blob_digest, packed.diff_id);
  EXPECT_EQ(packed.tar_size, tar.size());
  EXPECT_EQ(packed.blob_size, tar.size());

  LayerDigests unpacked = unpack(tar, layer_);
  EXPECT_EQ(unpacked.diff_id, packed.diff_id);
  EXPECT_EQ(unpacked.blob_digest, packed.blob_digest);
  EXPECT_EQ(unpacked.tar_size, packed.tar_size);

  auto want = describe(src);
  want.erase("null");
  want.erase("sock");
  EXPECT_EQ(describe(layer_), want);
  EXPECT_TRUE(is_whiteout(layer_ + "/etc/gone"));
  EXPECT_TRUE(is_opaque(layer_ + "/opaque"));
  EXPECT_FALSE(is_opaque(layer_ + "/etc"));
  EXPECT_EQ(inode_of(layer_ + "/bin/tool"), inode_of(layer_ + "/bin/tool-link"));
  EXPECT_EQ(inode_of(layer_ + "/bin/long-link"),
            inode_of(layer_ + "/long/" + std::string(120, 'd') + "/" + std::string(130, 'f')));
  struct stat st;
  ASSERT_EQ(::stat((layer_ + "/bin/tool").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 04755u);
  EXPECT_EQ(st.st_uid, 1000u);

  // The same tree, packed again or packed from its copy, gives the same bytes.
  sys::UniqueFd again_fd(::memfd_create("tar", MFD_CLOEXEC));
  LayerDigests again = pack_layer(src, again_fd.get(), Compression::none);
  EXPECT_TRUE(contents(again_fd.get()) == tar);
  EXPECT_EQ(again.diff_id, packed.diff_id);
  sys::UniqueFd copy_fd(::memfd_create("tar", MFD_CLOEXEC));
  pack_layer(layer_, copy_fd.get(), Compression::none);
  EXPECT_TRUE(contents(copy_fd.get()) == tar);
}

TEST_F(LayerTest, PackSortsByNameAndWritesOverlayWhiteoutsAsFiles) {
  std::string src = base_ + "/src";
  make_dir(src, 0755);
  make_dir(src + "/a", 0755);
  ASSERT_EQ(::setxattr((src + "/a").c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);
  make_file(src + "/a/-x", "", 0644);
  make_file(src + "/a/c", "", 0644);
  make_file(src + "/a-b", "", 0644);
  // overlayfs links its whiteouts to one shared inode: they must not become hard links.
  ASSERT_EQ(::mknod((src + "/w1").c_str(), S_IFCHR | 0, ::makedev(0, 0)), 0);
  ASSERT_EQ(::link((src + "/w1").c_str(), (src + "/w2").c_str()), 0);
  sys::UniqueFd fd(::memfd_create("tar", MFD_CLOEXEC));
  pack_layer(src, fd.get(), Compression::none);
  std::string tar = contents(fd.get());
  EXPECT_EQ(entry_names(tar),
            (std::vector<std::string>{"f .wh.w1", "f .wh.w2", "d a/", "f a/.wh..wh..opq", "f a-b",
                                      "f a/-x", "f a/c"}));
  unpack(tar, layer_);
  EXPECT_TRUE(is_whiteout(layer_ + "/w1"));
  EXPECT_TRUE(is_whiteout(layer_ + "/w2"));
  EXPECT_TRUE(is_opaque(layer_ + "/a"));
}

TEST_F(LayerTest, CompressedBlobsHaveThePlainTarsDiffId) {
  std::string src = base_ + "/src";
  make_dir(src, 0755);
  std::string big;
  for (int i = 0; i < 500000; ++i) big += static_cast<char>(i * 31 % 251);
  make_file(src + "/big", big, 0644);
  make_file(src + "/small", "small\n", 0644);
  fix_mtimes(src, 1700000000);

  std::map<Compression, std::string> stored;
  std::map<Compression, LayerDigests> packed;
  for (Compression c : {Compression::none, Compression::gzip, Compression::zstd}) {
    sys::UniqueFd fd(::memfd_create("blob", MFD_CLOEXEC));
    packed[c] = pack_layer(src, fd.get(), c);
    stored[c] = contents(fd.get());
    EXPECT_EQ(packed[c].compression, c);
    EXPECT_EQ(packed[c].blob_digest, digest_of(stored[c]));
    EXPECT_EQ(packed[c].blob_size, stored[c].size());
    EXPECT_EQ(packed[c].diff_id, packed[Compression::none].diff_id);
    EXPECT_EQ(packed[c].tar_size, packed[Compression::none].tar_size);
    // Packed again: the same bytes.
    sys::UniqueFd again(::memfd_create("blob", MFD_CLOEXEC));
    EXPECT_EQ(pack_layer(src, again.get(), c).blob_digest, packed[c].blob_digest);
  }
  const std::string& gz = stored[Compression::gzip];
  ASSERT_GT(gz.size(), 10u);
  EXPECT_EQ(gz.substr(0, 2), "\x1f\x8b");
  EXPECT_EQ(gz.substr(4, 4), std::string(4, '\0'));  // no mtime
  EXPECT_EQ(stored[Compression::zstd].substr(0, 4), "\x28\xb5\x2f\xfd");
  EXPECT_LT(gz.size(), stored[Compression::none].size());
  EXPECT_LT(stored[Compression::zstd].size(), stored[Compression::none].size());

  for (Compression c : {Compression::none, Compression::gzip, Compression::zstd}) {
    reset_layer();
    sys::UniqueFd copy(::memfd_create("copy", MFD_CLOEXEC));
    LayerDigests got = unpack(stored[c], layer_, copy.get());
    EXPECT_TRUE(contents(copy.get()) == stored[c]);
    EXPECT_EQ(got.compression, c);
    EXPECT_EQ(got.blob_digest, packed[c].blob_digest);
    EXPECT_EQ(got.blob_size, packed[c].blob_size);
    EXPECT_EQ(got.diff_id, packed[c].diff_id);
    EXPECT_EQ(got.tar_size, packed[c].tar_size);
    EXPECT_EQ(sys::read_file(layer_ + "/big"), big);
  }

  // Compressed by someone else, in two gzip members: still the plain tar's diff id.
  std::string tar = stored[Compression::none];
  for (const std::string& blob :
       {gzip(tar), zstd(tar), gzip(tar.substr(0, 70000)) + gzip(tar.substr(70000)),
        zstd(tar.substr(0, 70000)) + zstd(tar.substr(70000))}) {
    reset_layer();
    LayerDigests got = unpack(blob, layer_);
    EXPECT_EQ(got.diff_id, packed[Compression::none].diff_id);
    EXPECT_EQ(got.blob_digest, digest_of(blob));
    EXPECT_EQ(sys::read_file(layer_ + "/small"), "small\n");
  }
}

TEST_F(LayerTest, MediaTypes) {
  for (Compression c : {Compression::none, Compression::gzip, Compression::zstd}) {
    EXPECT_EQ(compression_of_media_type(layer_media_type(c)), c);
  }
  EXPECT_EQ(layer_media_type(Compression::zstd), "application/vnd.oci.image.layer.v1.tar+zstd");
  EXPECT_EQ(compression_of_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Compression::gzip);
  try {
    compression_of_media_type("application/vnd.oci.image.layer.v1.tar+lz4");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(e.message().find("tar+lz4"), std::string::npos);
  }
}

TEST_F(LayerTest, OciWhiteoutsBecomeOverlayOnes) {
  std::string tar = dir_entry("./") + dir_entry("./a/") + file_entry("./a/b", "b") +
                    file_entry("./a/c", "c") + file_entry("./a/.wh.c", "") +
                    file_entry("./a/.wh..wh..opq", "") + file_entry("./.wh.top", "") +
                    file_entry("new/.wh.x", "") + file_entry(".wh..wh.plnk/123", "aufs") +
                    tar_end();
  unpack(tar, layer_);
  EXPECT_TRUE(is_opaque(layer_ + "/a"));
  EXPECT_TRUE(is_whiteout(layer_ + "/a/c"));
  EXPECT_EQ(sys::read_file(layer_ + "/a/b"), "b");
  EXPECT_TRUE(is_whiteout(layer_ + "/top"));
  EXPECT_TRUE(is_whiteout(layer_ + "/new/x"));
  EXPECT_FALSE(sys::exists(layer_ + "/a/.wh.c"));
  EXPECT_FALSE(sys::exists(layer_ + "/.wh..wh.plnk"));
  struct stat st;
  ASSERT_EQ(::stat((layer_ + "/a").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtime, 1700000000);  // set after its contents were made
}

TEST_F(LayerTest, ReadsGnuAndPaxLongNames) {
  std::string gnu_name = "gnu/" + std::string(150, 'g');
  std::string gnu_data = gnu_name + '\0';
  std::string gnu =
      with_type(tar_header({TarEntry::Type::file, "././@LongLink", 0644, 0, 0, 0, gnu_data.size()}),
                'L') +
      gnu_data + tar_padding(gnu_data.size()) + file_entry(gnu_name.substr(0, 100), "gnu");
  // Not UTF-8 in this locale: libarchive warns, the bytes are kept as they are.
  std::string pax_name = "pax/" + std::string(120, 'p') + "/gr\xc3\xbc\xc3\x9f\xff";
  unpack(dir_entry("gnu/") + gnu + file_entry(pax_name, "pax") + tar_end(), layer_);
  EXPECT_EQ(sys::read_file(layer_ + "/" + gnu_name), "gnu");
  EXPECT_EQ(sys::read_file(layer_ + "/" + pax_name), "pax");
}

TEST_F(LayerTest, LaterEntriesWin) {
  std::string tar = file_entry("x", "one") + file_entry("x", "two") +  //
                    dir_entry("d/", 0700) + file_entry("d/f", "f") + dir_entry("d/", 0751) +
                    dir_entry("e/") + file_entry("e/g", "g") + file_entry("e", "now a file") +
                    symlink_entry("s", outside_ + "/s") + file_entry("s", "not through") +
                    file_entry("h", "h") + hardlink_entry("h2", "h") + file_entry("h", "new h") +
                    tar_end();
  unpack(tar, layer_);
  EXPECT_EQ(sys::read_file(layer_ + "/x"), "two");
  EXPECT_EQ(sys::read_file(layer_ + "/d/f"), "f");
  struct stat st;
  ASSERT_EQ(::stat((layer_ + "/d").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0751u);
  EXPECT_EQ(sys::read_file(layer_ + "/e"), "now a file");
  ASSERT_EQ(::lstat((layer_ + "/s").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(sys::read_file(layer_ + "/s"), "not through");
  EXPECT_EQ(sys::read_file(layer_ + "/h"), "new h");
  EXPECT_EQ(sys::read_file(layer_ + "/h2"), "h");
  EXPECT_TRUE(sys::read_dir(outside_).empty());
}

TEST_F(LayerTest, TrailingBytesAfterTheEndAreFine) {
  std::string tar = file_entry("a", "a") + tar_end();
  std::string junk = "trailing junk";
  for (const std::string& blob : {tar + junk, gzip(tar) + junk, zstd(tar) + junk}) {
    reset_layer();
    sys::UniqueFd copy(::memfd_create("copy", MFD_CLOEXEC));
    LayerDigests got = unpack(blob, layer_, copy.get());
    EXPECT_EQ(sys::read_file(layer_ + "/a"), "a");
    EXPECT_EQ(got.blob_digest, digest_of(blob));
    EXPECT_EQ(got.blob_size, blob.size());
    EXPECT_EQ(contents(copy.get()), blob);
  }
}

TEST_F(LayerTest, RefusesAbsoluteNames) {
  expect_refused(file_entry("/etc/passwd", "x") + tar_end(),
                 "layer entry \"/etc/passwd\": absolute name");
  expect_refused(dir_entry("/") + tar_end(), "absolute name");
  expect_refused(file_entry("a", "a") + hardlink_entry("h", "/etc/passwd") + tar_end(),
                 "layer entry \"h\": absolute hard link target \"/etc/passwd\"");
}

TEST_F(LayerTest, RefusesDotDot) {
  expect_refused(file_entry("a/../../outside/x", "x") + tar_end(),
                 "layer entry \"a/../../outside/x\": \"..\" in the name");
  expect_refused(file_entry("../outside/x", "x") + tar_end(), "\"..\" in the name");
  expect_refused(dir_entry("..") + tar_end(), "\"..\" in the name");
  expect_refused(symlink_entry("./../outside/l", "/etc") + tar_end(), "\"..\" in the name");
  expect_refused(file_entry(".wh...", "") + tar_end(), "names nothing");
  expect_refused(file_entry("a/.wh..", "") + tar_end(), "names nothing");
  expect_refused(file_entry("a/.wh.", "") + tar_end(), "names nothing");
}

TEST_F(LayerTest, RefusesEntriesThroughSymlinks) {
  expect_refused(symlink_entry("lnk", outside_) + file_entry("lnk/passwd", "x") + tar_end(),
                 "layer entry \"lnk/passwd\": parent \"lnk\" is a symlink");
  expect_refused(symlink_entry("rel", "../outside") + dir_entry("rel/sub/") + tar_end(),
                 "parent \"rel\" is a symlink");
  expect_refused(dir_entry("d/") + symlink_entry("d/up", "../..") +
                     file_entry("d/up/outside/x", "x") + tar_end(),
                 "parent \"d/up\" is a symlink");
  expect_refused(symlink_entry("lnk", outside_) + file_entry("lnk/.wh.x", "") + tar_end(),
                 "parent \"lnk\" is a symlink");
  expect_refused(symlink_entry("lnk", outside_) + file_entry("lnk/.wh..wh..opq", "") + tar_end(),
                 "parent \"lnk\" is a symlink");
  expect_refused(file_entry("f", "f") + file_entry("f/x", "x") + tar_end(),
                 "parent \"f\" is not a directory");
}

TEST_F(LayerTest, RefusesHardLinksOutOfTheLayer) {
  std::string secret = outside_ + "/secret";
  sys::write_file(secret, "secret");
  std::vector<std::string> outside_names = {"secret"};
  expect_refused(hardlink_entry("h", "../outside/secret") + tar_end(),
                 "layer entry \"h\": \"..\" in the hard link target", outside_names);
  expect_refused(symlink_entry("lnk", outside_) + hardlink_entry("h", "lnk/secret") + tar_end(),
                 "hard link target's parent \"lnk\" is a symlink", outside_names);
  expect_refused(hardlink_entry("h", "missing") + tar_end(),
                 "hard link target \"missing\" does not exist", outside_names);
  expect_refused(hardlink_entry("h", "nodir/missing") + tar_end(), "does not exist", outside_names);
  expect_refused(dir_entry("d/") + hardlink_entry("h", "d") + tar_end(),
                 "hard link target \"d\" is a directory", outside_names);
  expect_refused(file_entry("h", "h") + hardlink_entry("h", "h") + tar_end(),
                 "a hard link to itself", outside_names);
  // A hard link to a symlink is the symlink itself, not where it points.
  reset_layer();
  unpack(symlink_entry("lnk", secret) + hardlink_entry("h", "lnk") + tar_end(), layer_);
  struct stat st;
  ASSERT_EQ(::lstat((layer_ + "/h").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  ASSERT_EQ(::stat(secret.c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 1u);
  EXPECT_EQ(sys::read_file(secret), "secret");
}

TEST_F(LayerTest, RefusesDevices) {
  std::string dev = tar_header({TarEntry::Type::file, "dev/null", 0666, 0, 0, 0, 0});
  expect_refused(with_type(dev, '3') + tar_end(),
                 "layer entry \"dev/null\": device nodes are not allowed");
  expect_refused(with_type(dev, '4') + tar_end(), "device nodes are not allowed");
  // Whiteouts are files named .wh.*, never devices in an archive.
  expect_refused(dir_entry("a/") + with_type(dev, '3') + tar_end(), "device nodes");
  EXPECT_FALSE(sys::exists(layer_ + "/dev"));
}

TEST_F(LayerTest, RefusesTruncatedArchives) {
  std::string a = file_entry("a", std::string(1000, 'a'));
  std::string b = file_entry("b", std::string(3000, 'b'));
  std::string tar = a + b + tar_end();
  expect_refused(tar.substr(0, a.size() + 512 + 100), "layer entry \"b\": Truncated");
  expect_refused(tar.substr(0, a.size() + 100), "Truncated");
  expect_refused(a + b, "layer archive: truncated after entry \"b\"");
  expect_refused(a.substr(0, 512), "layer entry \"a\": Truncated");
  expect_refused("", "layer archive: empty");
  expect_refused(std::string(100, 'x'), "layer archive");
}

TEST_F(LayerTest, RefusesCompressedStreamsCutShortOrCorrupt) {
  std::string tar;
  for (int i = 0; i < 20; ++i) tar += file_entry("f" + std::to_string(i), std::string(5000, 'x'));
  tar += tar_end();
  std::string gz = gzip(tar), zs = zstd(tar);
  expect_refused(gz.substr(0, gz.size() / 2), "the gzip stream ends early");
  // Everything the tar needs is there, only the trailer is missing.
  expect_refused(gz.substr(0, gz.size() - 4), "the gzip stream ends early");
  expect_refused(zs.substr(0, zs.size() / 2), "the zstd stream ends early");
  expect_refused(zs.substr(0, zs.size() - 2), "the zstd stream ends early");
  std::string bad_method = gz;
  bad_method[2] = 9;
  expect_refused(bad_method, "the gzip stream is corrupt");
  std::string bad_crc = gz;
  bad_crc[gz.size() - 6] ^= 0x55;
  expect_refused(bad_crc, "the gzip stream is corrupt");
  std::string bad_checksum = zs;
  bad_checksum[zs.size() - 1] ^= 0x55;
  expect_refused(bad_checksum, "the zstd stream is corrupt");
  std::string bad_frame = zs;
  bad_frame[4] |= 0x08;  // a reserved bit of the frame header
  expect_refused(bad_frame, "the zstd stream is corrupt");
}

TEST_F(LayerTest, WriteErrorsAreReported) {
  sys::UniqueFd full(::open("/dev/full", O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(full);
  try {
    unpack(file_entry("a", "a") + tar_end(), layer_, full.get());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::resource_exhausted) << e.message();
    EXPECT_NE(e.message().find("writing the layer blob"), std::string::npos) << e.message();
  }
  try {
    pack_layer(layer_, full.get(), Compression::zstd);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::resource_exhausted) << e.message();
    EXPECT_NE(e.message().find("writing the layer"), std::string::npos) << e.message();
  }
}

}  // namespace
}  // namespace pitbox::storage
