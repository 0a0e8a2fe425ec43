#include "sys/netlink.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>

#include "sys/error.h"

namespace pitbox::sys {
namespace {

TEST(Ipv4NetTest, ParsesAddressesAndPrefixes) {
  Ipv4Net n = Ipv4Net::parse("10.88.0.0/16", "range");
  EXPECT_EQ(n.prefix, 16);
  EXPECT_EQ(n.str(), "10.88.0.0/16");
  EXPECT_TRUE(n.contains(Ipv4Net::parse("10.88.3.4", "a").addr));
  EXPECT_FALSE(n.contains(Ipv4Net::parse("10.89.0.1", "a").addr));
  EXPECT_EQ(Ipv4Net::parse("1.2.3.4", "a").str(), "1.2.3.4/32");
  EXPECT_EQ(Ipv4Net::parse("0.0.0.0/0", "a").last(), 0xffffffffu);
  EXPECT_TRUE(Ipv4Net::parse("169.254.0.0/16", "a").overlaps(Ipv4Net::parse("0.0.0.0/0", "b")));
  EXPECT_FALSE(Ipv4Net::parse("10.0.0.0/8", "a").overlaps(Ipv4Net::parse("11.0.0.0/8", "b")));
}

TEST(Ipv4NetTest, NamesWhatIsWrong) {
  for (const char* bad :
       {"", "10.0.0", "10.0.0.0/33", "10.0.0.0/", "x.y.z.w", "10.0.0.0/8x", "::1", "10.0.0.1/24"}) {
    try {
      Ipv4Net::parse(bad, "allow_cidrs[0]");
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(e.message().find("allow_cidrs[0]"), std::string::npos) << e.message();
    }
  }
}

// Two namespaces of the test's own, joined by a veth pair: nothing of the host's is touched.
TEST(NetlinkTest, VethPairBetweenNamespaces) {
  std::optional<Netlink> in_a, in_b;
  UniqueFd a = new_netns([&] { in_a.emplace(); });
  UniqueFd b = new_netns([&] { in_b.emplace(); });
  in_a->add_veth("pbt-a", "pbt-b", b.get());
  int ia = in_a->link_index("pbt-a");
  int ib = in_b->link_index("pbt-b");
  ASSERT_GT(ia, 0);
  ASSERT_GT(ib, 0);
  EXPECT_EQ(in_a->link_index("pbt-b"), 0);  // the peer is in the other namespace
  auto names = in_b->link_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "pbt-b"), names.end());
  in_a->set_up(ia);
  in_b->set_up(ib);
  uint32_t addr_a = Ipv4Net::parse("10.254.0.1", "a").addr;
  uint32_t addr_b = Ipv4Net::parse("10.254.0.2", "b").addr;
  in_a->add_address(ia, addr_a, 32);
  in_b->add_address(ib, addr_b, 32);
  in_a->add_route(addr_b, 32, ia);
  in_b->add_route(addr_a, 32, ib);
  in_b->add_route(0, 0, ib, addr_a);  // a default route through the link's other end
  EXPECT_THROW(in_a->add_address(ia, addr_a, 32), Error);  // exists
  EXPECT_TRUE(in_a->delete_link("pbt-a"));
  EXPECT_EQ(in_b->link_index("pbt-b"), 0);  // a veth's peer goes with it
  EXPECT_FALSE(in_a->delete_link("pbt-a"));
}

TEST(NetlinkTest, EnterNetnsComesBack) {
  UniqueFd ns = new_netns([] {});
  Netlink host;
  {
    EnterNetns in(ns.get());
    Netlink inside;
    EXPECT_EQ(inside.link_names(), std::vector<std::string>{"lo"});
  }
  Netlink again;
  EXPECT_EQ(again.link_names(), host.link_names());
}

}  // namespace
}  // namespace pitbox::sys
