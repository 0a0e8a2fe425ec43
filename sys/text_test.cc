#include "sys/text.h"

#include <gtest/gtest.h>

#include <vector>

#include "sys/error.h"

namespace pitbox::sys {
namespace {

TEST(Text, Sha256) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Text, Sha256InPiecesMatchesWhole) {
  std::string data;
  for (int i = 0; i < 100000; ++i) data += static_cast<char>(i * 7);
  Sha256 h;
  for (size_t pos = 0; pos < data.size(); pos += 4097)
    h.update(std::string_view(data).substr(pos, 4097));
  EXPECT_EQ(h.hex(), sha256_hex(data));
  EXPECT_EQ(h.hex(), sha256_hex(data));  // finished once, same answer again
  EXPECT_EQ(h.digest(), "sha256:" + sha256_hex(data));
  EXPECT_THROW(h.update("more"), Error);

  Sha256 empty;
  EXPECT_EQ(empty.digest(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Text, Base64RoundTripsAndRejectsJunk) {
  for (const std::string& s :
       std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)}) {
    auto back = base64_decode(base64_encode(s));
    ASSERT_TRUE(back) << s;
    EXPECT_EQ(*back, s);
  }
  EXPECT_EQ(base64_encode("hi"), "aGk=");
  EXPECT_FALSE(base64_decode("abc"));
  EXPECT_FALSE(base64_decode("a!c="));
}

TEST(Text, Utf8) {
  EXPECT_TRUE(is_valid_utf8("plain"));
  EXPECT_TRUE(is_valid_utf8("gr\xc3\xbc\xc3\x9f dich \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(is_valid_utf8("\xff"));
  EXPECT_FALSE(is_valid_utf8("\xc3"));          // cut short
  EXPECT_FALSE(is_valid_utf8("\xc0\xaf"));      // overlong
  EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));  // a surrogate
}

TEST(Text, FormatTime) { EXPECT_EQ(format_time(1795341600123), "2026-11-22T10:00:00.123Z"); }

}  // namespace
}  // namespace pitbox::sys
