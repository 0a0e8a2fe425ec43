#include "sys/units.h"

#include <gtest/gtest.h>

#include "sys/error.h"

namespace pitbox::sys {
namespace {

TEST(ParseSize, AcceptsCommonSpellings) {
  EXPECT_EQ(parse_size("1024"), 1024u);
  EXPECT_EQ(parse_size("512k"), 512u << 10);
  EXPECT_EQ(parse_size("64M"), 64u << 20);
  EXPECT_EQ(parse_size("64MiB"), 64u << 20);
  EXPECT_EQ(parse_size("64mb"), 64u << 20);
  EXPECT_EQ(parse_size("1.5g"), 3ull << 29);
  EXPECT_EQ(parse_size("2 GiB"), 2ull << 30);
  EXPECT_EQ(parse_size("100b"), 100u);
}

TEST(ParseSize, RejectsNonsenseWithTheTextInTheMessage) {
  for (const char* bad : {"", "m", "12x", "1.5", "-1", "1e9", "64 MBs", "99999999999999999g"}) {
    try {
      parse_size(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(e.message().find(std::string("\"") + bad + "\""), std::string::npos) << e.message();
    }
  }
}

TEST(FormatSize, RoundTripsReadably) {
  EXPECT_EQ(format_size(512), "512 B");
  EXPECT_EQ(format_size(64u << 20), "64 MiB");
  EXPECT_EQ(format_size(3ull << 29), "1.5 GiB");
}

TEST(MilliCpus, ParsesAndFormats) {
  EXPECT_EQ(parse_millicpus("0.5"), 500u);
  EXPECT_EQ(parse_millicpus("2"), 2000u);
  EXPECT_EQ(parse_millicpus("1.25"), 1250u);
  EXPECT_EQ(parse_millicpus(".1"), 100u);
  EXPECT_EQ(format_millicpus(1250), "1.25");
  EXPECT_EQ(format_millicpus(2000), "2");
  for (const char* bad : {"0", "0.0001", "abc", "-1", "1.2.3", ""}) {
    EXPECT_THROW(parse_millicpus(bad), Error) << bad;
  }
}

}  // namespace
}  // namespace pitbox::sys
