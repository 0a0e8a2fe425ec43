// Needs root: makes namespaces, links on the host and an nftables table of its own (a random
// tag), and removes them all.
#include "net/network.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "sys/error.h"
#include "sys/random.h"

namespace pitbox::net {
namespace {

std::string random_tag() {
  static const char* hex = "0123456789abcdef";
  std::string tag = "e";
  for (unsigned char c : sys::random_bytes(3)) tag += hex[c % 16];
  return tag;
}

class NetworkTest : public ::testing::Test {
 protected:
  NetworkOptions options() {
    NetworkOptions o;
    o.range = "10.231.0.0/16";
    o.tag = tag_;
    o.nft_helper = PITBOX_NFT_PATH;
    return o;
  }
  bool host_has_link(const std::string& name) { return sys::Netlink().link_index(name) != 0; }
  // The rules of this test's table ("" when it has none): other tests (the resolver's) may
  // have tables of their own meanwhile.
  std::string ruleset() {
    Nft nft(PITBOX_NFT_PATH);
    std::string all = nft.run("list ruleset");
    size_t at = all.find("table inet pitbox_" + tag_ + " ");
    if (at == std::string::npos) return "";
    return all.substr(at, all.find("\ntable ", at) - at);
  }
  std::string tag_ = random_tag();
};

TEST_F(NetworkTest, PrepareApplyRelease) {
  {
    Network net(options());
    EXPECT_EQ(sys::ipv4_str(net.gateway()), "10.231.0.1");
    EXPECT_EQ(sys::ipv4_str(net.address_of(5)), "10.231.0.7");
    EXPECT_NE(ruleset().find("table inet pitbox_" + tag_), std::string::npos);

    Attachment a = net.prepare(5);
    EXPECT_EQ(a.host_link, "pb" + tag_ + "-5");
    EXPECT_TRUE(host_has_link(a.host_link));
    {
      sys::EnterNetns in(a.netns.get());
      sys::Netlink inside;
      auto names = inside.link_names();
      std::sort(names.begin(), names.end());
      EXPECT_EQ(names, (std::vector<std::string>{"eth0", "lo"}));
    }
    Policy p = Policy::from_json({{"deny_cidrs", {"198.18.0.0/24", "198.18.0.5"}}});
    net.apply(5, p);
    std::string rules = ruleset();
    EXPECT_NE(rules.find("chain box_5"), std::string::npos) << rules;
    EXPECT_NE(rules.find("\"" + a.host_link + "\" : jump box_5"), std::string::npos) << rules;
    EXPECT_NE(rules.find("ip saddr != 10.231.0.7 drop"), std::string::npos) << rules;
    net.apply(5, Policy::from_json("none"));  // replaces, never adds
    rules = ruleset();
    EXPECT_EQ(rules.find("198.18.0.0/24"), std::string::npos) << rules;
    net.release(5);
    net.release(5);  // idempotent
    EXPECT_FALSE(host_has_link(a.host_link));
    EXPECT_EQ(ruleset().find("box_5"), std::string::npos);
  }
  // No box had rules left: the table went with the network.
  EXPECT_EQ(ruleset().find("pitbox_" + tag_), std::string::npos);
}

TEST_F(NetworkTest, LinksGoWithTheNamespace) {
  Network net(options());
  std::string link;
  {
    Attachment a = net.prepare(9);
    link = a.host_link;
    EXPECT_TRUE(host_has_link(link));
  }
  // The namespace ends in the kernel's own time once its last fd is closed.
  for (int i = 0; i < 200 && host_has_link(link); ++i) ::usleep(10000);
  EXPECT_FALSE(host_has_link(link));
}

TEST_F(NetworkTest, BoxRulesFollowThePolicy) {
  Network net(options());
  std::string egress = net.box_rules(3, Policy::from_json("egress"));
  EXPECT_NE(egress.find("reject with icmpx admin-prohibited\nadd rule inet pitbox_" + tag_ +
                        " box_3 accept"),
            std::string::npos)
      << egress;
  // An allow list: only it; an entry inside a guarded range opens exactly that.
  std::string allow =
      net.box_rules(3, Policy::from_json({{"allow_cidrs", {"169.254.169.254", "198.18.0.0/24"}}}));
  EXPECT_NE(allow.find("ip daddr { 169.254.169.254/32 } accept"), std::string::npos) << allow;
  EXPECT_NE(allow.find("ip daddr { 198.18.0.0/24, 169.254.169.254/32 } accept"), std::string::npos)
      << allow;
  EXPECT_EQ(allow.find(" box_3 accept"), std::string::npos) << allow;
  // Overlapping entries are merged (nftables refuses overlapping intervals).
  std::string deny =
      net.box_rules(3, Policy::from_json({{"deny_cidrs", {"10.1.0.0/16", "10.0.0.0/8"}}}));
  EXPECT_NE(deny.find("ip daddr { 10.0.0.0/8 } reject"), std::string::npos) << deny;
}

TEST_F(NetworkTest, BoxToBoxNetworks) {
  Network net(options());
  Policy team = Policy::from_json({{"policy", "none"}, {"networks", {"team"}}});
  net.apply(11, team, "web");
  net.apply(12, team, "db");
  net.apply(13, Policy::from_json({{"networks", {"other"}}}), "stranger");
  std::string rules = ruleset();
  EXPECT_NE(rules.find("set net_team"), std::string::npos) << rules;
  EXPECT_NE(rules.find("ip daddr @net_team accept"), std::string::npos) << rules;
  EXPECT_EQ(net.peer(11, "db"), net.address_of(12));
  EXPECT_EQ(net.peer(12, "web"), net.address_of(11));
  EXPECT_EQ(net.peer(11, "stranger"), std::nullopt);  // no network in common
  EXPECT_EQ(net.peer(13, "web"), std::nullopt);
  // Leaving: by a new policy, or by going; the set goes with its last member.
  net.apply(12, Policy::from_json("egress"), "db");
  EXPECT_EQ(net.peer(11, "db"), std::nullopt);
  net.release(11);
  net.release(12);
  net.release(13);
  rules = ruleset();
  EXPECT_EQ(rules.find("net_team"), std::string::npos) << rules;
  EXPECT_EQ(rules.find("net_other"), std::string::npos) << rules;
}

TEST_F(NetworkTest, RefusesWhatWouldExposeTheHost) {
  Network net(options());
  for (const char* bad : {"127.0.0.1", "10.231.0.1", "10.231.0.0/16", "10.231.4.0/24"}) {
    try {
      net.check(Policy::from_json({{"allow_cidrs", {bad}}}));
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(e.message().find("network.allow_cidrs[0]"), std::string::npos) << e.message();
    }
  }
  net.check(Policy::from_json({{"allow_cidrs", {"0.0.0.0/0"}}}));  // the world: fine
  NetworkOptions o = options();
  o.range = "169.254.0.0/16";
  EXPECT_THROW(Network{o}, Error);
  o.range = "10.9.9.0/28";
  EXPECT_THROW(Network{o}, Error);
}

}  // namespace
}  // namespace pitbox::net
