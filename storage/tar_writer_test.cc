// Archives written by tar_writer read back with libarchive, an independent reader.
#include "storage/tar_writer.h"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>

#include <vector>

namespace pitbox::storage {
namespace {

struct Read {
  std::string name, link, hardlink, data;
  int type = 0;
  unsigned mode = 0;
  int64_t size = 0, mtime = 0;
};

std::vector<Read> read_back(const std::string& archive) {
  struct archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  EXPECT_EQ(archive_read_open_memory(a, archive.data(), archive.size()), ARCHIVE_OK);
  std::vector<Read> out;
  struct archive_entry* e;
  int rc;
  while ((rc = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
    Read r;
    r.name = archive_entry_pathname(e);
    r.type = archive_entry_filetype(e);
    r.mode = archive_entry_perm(e);
    r.size = archive_entry_size(e);
    r.mtime = archive_entry_mtime(e);
    if (archive_entry_symlink(e)) r.link = archive_entry_symlink(e);
    if (archive_entry_hardlink(e)) r.hardlink = archive_entry_hardlink(e);
    char buf[4096];
    la_ssize_t n;
    while ((n = archive_read_data(a, buf, sizeof buf)) > 0) r.data.append(buf, n);
    out.push_back(r);
  }
  EXPECT_EQ(rc, ARCHIVE_EOF) << archive_error_string(a);
  archive_read_free(a);
  return out;
}

TEST(TarWriter, FilesDirectoriesAndLinksReadBack) {
  std::string tar;
  tar += tar_header({TarEntry::Type::dir, "src", 0750, 0, 0, 1700000000});
  std::string content = "hello, tar\n";
  tar +=
      tar_header({TarEntry::Type::file, "src/a.txt", 0640, 1000, 1000, 1700000001, content.size()});
  tar += content + tar_padding(content.size());
  tar += tar_header({TarEntry::Type::symlink, "src/link", 0777, 0, 0, 0, 0, "a.txt"});
  tar += tar_end();
  EXPECT_EQ(tar.size() % 512, 0u);
  auto entries = read_back(tar);
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].name, "src/");
  EXPECT_EQ(entries[0].type, AE_IFDIR);
  EXPECT_EQ(entries[0].mode, 0750u);
  EXPECT_EQ(entries[1].name, "src/a.txt");
  EXPECT_EQ(entries[1].type, AE_IFREG);
  EXPECT_EQ(entries[1].data, content);
  EXPECT_EQ(entries[1].mode, 0640u);
  EXPECT_EQ(entries[1].mtime, 1700000001);
  EXPECT_EQ(entries[2].type, AE_IFLNK);
  EXPECT_EQ(entries[2].link, "a.txt");
}

TEST(TarWriter, LongNamesAndTargetsUsePaxHeaders) {
  std::string dir(150, 'd');
  std::string name = dir + "/" + std::string(120, 'f');
  std::string target(300, 't');
  std::string tar = tar_header({TarEntry::Type::file, name, 0644, 0, 0, 0, 3});
  tar += "abc" + tar_padding(3);
  tar += tar_header({TarEntry::Type::symlink, "l", 0777, 0, 0, 0, 0, target});
  tar += tar_end();
  auto entries = read_back(tar);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].name, name);
  EXPECT_EQ(entries[0].data, "abc");
  EXPECT_EQ(entries[1].link, target);
}

TEST(TarWriter, HardLinksAndFifos) {
  std::string long_target = std::string(120, 'x') + "/file";
  std::string tar = tar_header({TarEntry::Type::file, "a", 04755, 0, 0, 0, 2});
  tar += "hi" + tar_padding(2);
  tar += tar_header({TarEntry::Type::hardlink, "b", 04755, 0, 0, 0, 0, "a"});
  tar += tar_header({TarEntry::Type::hardlink, "c", 0644, 0, 0, 0, 0, long_target});
  tar += tar_header({TarEntry::Type::fifo, "pipe", 0620, 5, 6, 7});
  tar += tar_end();
  auto entries = read_back(tar);
  ASSERT_EQ(entries.size(), 4u);
  EXPECT_EQ(entries[0].mode, 04755u);
  EXPECT_EQ(entries[1].name, "b");
  EXPECT_EQ(entries[1].hardlink, "a");
  EXPECT_EQ(entries[1].link, "");
  EXPECT_EQ(entries[1].data, "");
  EXPECT_EQ(entries[2].hardlink, long_target);
  EXPECT_EQ(entries[3].name, "pipe");
  EXPECT_EQ(entries[3].type, AE_IFIFO);
  EXPECT_EQ(entries[3].mode, 0620u);
  EXPECT_EQ(entries[3].mtime, 7);
}

TEST(TarWriter, PaddingFillsBlocks) {
  EXPECT_EQ(tar_padding(0).size(), 0u);
  EXPECT_EQ(tar_padding(1).size(), 511u);
  EXPECT_EQ(tar_padding(512).size(), 0u);
  EXPECT_EQ(tar_end(), std::string(1024, '\0'));
}

}  // namespace
}  // namespace pitbox::storage
