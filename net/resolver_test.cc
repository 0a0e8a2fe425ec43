#include "net/resolver.h"

#include <gtest/gtest.h>

#include "sys/error.h"

namespace pitbox::net {
namespace {

std::string query(const std::string& name, uint16_t type) {
  std::string q("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", 12);
  size_t start = 0;
  while (start < name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    q += static_cast<char>(dot - start);
    q += name.substr(start, dot - start);
    start = dot + 1;
  }
  q += '\0';
  q += static_cast<char>(type >> 8);
  q += static_cast<char>(type & 0xff);
  q += std::string("\x00\x01", 2);
  return q;
}

TEST(DnsTest, ReadsQuestionsAndAnswers) {
  std::string q = query("Example.TEST", 1);
  std::string name;
  uint16_t type = 0;
  ASSERT_TRUE(dns::question(q, name, type));
  EXPECT_EQ(name, "example.test");
  EXPECT_EQ(type, 1);
  EXPECT_FALSE(dns::question(q.substr(0, 14), name, type));

  std::string nx = dns::error_reply(q, 3);
  EXPECT_EQ(nx.size(), q.size());
  EXPECT_EQ(nx.substr(0, 2), "\x12\x34");
  EXPECT_EQ(static_cast<uint8_t>(nx[2]) & 0x80, 0x80);  // an answer
  EXPECT_EQ(static_cast<uint8_t>(nx[3]) & 0x0f, 3);     // NXDOMAIN
  EXPECT_TRUE(dns::a_records(nx).empty());

  // An answer: the question, then a CNAME and an A record, their names compressed.
  std::string a = q;
  a[2] = static_cast<char>(0x81);
  a[7] = 2;
  a += std::string("\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x02\xc0\x0c", 14);
  a += std::string("\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\xc6\x12\x00\x03", 16);
  auto records = dns::a_records(a);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(sys::ipv4_str(records[0].first), "198.18.0.3");
  EXPECT_EQ(records[0].second, 300u);
  EXPECT_TRUE(dns::a_records(a.substr(0, a.size() - 3)).empty());  // cut short: nothing
}

TEST(DnsTest, Upstreams) {
  auto servers = resolv_conf_servers("# x\nnameserver 192.0.2.1\nnameserver fd00::1\nsearch x\n");
  ASSERT_EQ(servers.size(), 1u);
  EXPECT_EQ(sys::ipv4_str(servers[0].address), "192.0.2.1");
  EXPECT_EQ(parse_upstream("10.0.0.2:5353", "x").port, 5353);
  EXPECT_THROW(parse_upstream("10.0.0.2:99999", "x"), Error);
  EXPECT_THROW(parse_upstream("10.0.0.0/8", "x"), Error);
}

}  // namespace
}  // namespace pitbox::net
