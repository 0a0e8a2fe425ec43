#include "proto/frame.h"

#include <gtest/gtest.h>

#include "sys/error.h"

namespace pitbox::proto {
namespace {

TEST(Frame, EncodesHeaderBigEndian) {
  std::string f = encode_frame(FrameType::stdout, 0x01020304, "hi");
  ASSERT_EQ(f.size(), kHeaderSize + 2);
  EXPECT_EQ(f.substr(0, 4), std::string("\0\0\0\2", 4));
  EXPECT_EQ(f[4], 6);
  EXPECT_EQ(f.substr(5, 4), std::string("\1\2\3\4", 4));
  EXPECT_EQ(f.substr(9), "hi");
}

TEST(FrameDecoder, ReassemblesFramesFedOneByteAtATime) {
  std::string stream = encode_frame(FrameType::hello, 0, R"({"version":1})") +
                       encode_frame(FrameType::stdin, 7, "") +
                       encode_frame(FrameType::data, 9, std::string(100000, 'x'));
  FrameDecoder d;
  std::vector<Frame> got;
  for (char c : stream) {
    d.feed(std::string_view(&c, 1));
    while (auto f = d.next()) got.push_back(std::move(*f));
  }
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].type, FrameType::hello);
  EXPECT_EQ(got[0].payload, R"({"version":1})");
  EXPECT_EQ(got[1].type, FrameType::stdin);
  EXPECT_EQ(got[1].stream, 7u);
  EXPECT_TRUE(got[1].payload.empty());
  EXPECT_EQ(got[2].payload.size(), 100000u);
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(FrameDecoder, WaitsForTheRestOfAPartialFrame) {
  std::string f = encode_frame(FrameType::stdout, 1, "hello world");
  FrameDecoder d;
  d.feed(std::string_view(f).substr(0, 5));
  EXPECT_FALSE(d.next());
  d.feed(std::string_view(f).substr(5, 6));
  EXPECT_FALSE(d.next());
  d.feed(std::string_view(f).substr(11));
  auto frame = d.next();
  ASSERT_TRUE(frame);
  EXPECT_EQ(frame->payload, "hello world");
}

TEST(FrameDecoder, RejectsOversizedFramesBeforeBufferingThem) {
  FrameDecoder d(1024);
  std::string header =
      encode_frame(FrameType::data, 1, std::string(1025, 'x')).substr(0, kHeaderSize);
  d.feed(header);
  try {
    d.next();
    FAIL() << "accepted an oversized frame";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(e.message().find("1025"), std::string::npos) << e.message();
  }
  // The stream stays broken: nothing after the bad header can be trusted.
  d.feed(encode_frame(FrameType::stdout, 1, "ok"));
  EXPECT_THROW(d.next(), Error);
}

TEST(FrameDecoder, RejectsUnknownTypes) {
  std::string f = encode_frame(FrameType::stdout, 1, "x");
  f[4] = 42;
  FrameDecoder d;
  d.feed(f);
  EXPECT_THROW(d.next(), Error);
  std::string zero = encode_frame(FrameType::stdout, 1, "x");
  zero[4] = 0;
  FrameDecoder d2;
  d2.feed(zero);
  EXPECT_THROW(d2.next(), Error);
}

TEST(Window, RoundTrips) {
  EXPECT_EQ(decode_window(encode_window(123456)), 123456u);
  EXPECT_FALSE(decode_window("abc"));
}

}  // namespace
}  // namespace pitbox::proto
