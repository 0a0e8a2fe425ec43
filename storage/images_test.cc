#include "storage/images.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sys/error.h"
#include "sys/fs.h"

namespace pitbox::storage {
namespace {

class ImagesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pitbox-images-test-XXXXXX";
    state_ = ::mkdtemp(tmpl);
  }
  void TearDown() override { sys::remove_tree(state_); }
  std::string state_;
};

TEST_F(ImagesTest, UnknownImageNamesTheAvailableOnes) {
  ImageStore store(state_);
  try {
    store.get("ubuntu");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::not_found);
    EXPECT_NE(e.message().find("ubuntu"), std::string::npos);
    EXPECT_NE(e.message().find("busybox"), std::string::npos);
  }
}

TEST_F(ImagesTest, BusyboxIsStaticWithAppletsAndAnEtc) {
  ImageStore store(state_);
  Image img = store.get("busybox");
  ASSERT_EQ(img.layers.size(), 1u);
  const std::string& dir = img.layers[0];
  EXPECT_TRUE(is_static_elf(dir + "/bin/busybox"));
  char target[256] = {};
  ASSERT_GT(::readlink((dir + "/bin/sh").c_str(), target, sizeof target - 1), 0);
  EXPECT_STREQ(target, "/bin/busybox");
  EXPECT_NE(sys::read_file(dir + "/etc/passwd").find("root:x:0:0"), std::string::npos);
  struct stat st;
  ASSERT_EQ(::stat((dir + "/tmp").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 01777u);
  // The second get reuses what the first built.
  EXPECT_EQ(store.get("busybox").layers, img.layers);
}

TEST_F(ImagesTest, HostCopiesOnlyTheAllowlistOfEtc) {
  ImageStore store(state_);
  Image img = store.get("host");
  const std::string& dir = img.layers[0];
  EXPECT_FALSE(sys::exists(dir + "/etc/shadow"));
  EXPECT_FALSE(sys::exists(dir + "/etc/ssh"));
  EXPECT_FALSE(sys::exists(dir + "/etc/ssl/private"));
  EXPECT_TRUE(sys::exists(dir + "/etc/ld.so.cache"));
  EXPECT_EQ(sys::read_file(dir + "/etc/passwd").find("/home/"), std::string::npos);
  ASSERT_FALSE(img.binds.empty());
  EXPECT_EQ(img.binds[0].source, "/usr");
  EXPECT_TRUE(img.binds[0].read_only);
  // With merged /usr, /bin is a symlink in the image, not a bind.
  struct stat st;
  if (::lstat("/bin", &st) == 0 && S_ISLNK(st.st_mode)) {
    ASSERT_EQ(::lstat((dir + "/bin").c_str(), &st), 0);
    EXPECT_TRUE(S_ISLNK(st.st_mode));
  }
}

}  // namespace
}  // namespace pitbox::storage
