#include "net/policy.h"

#include <gtest/gtest.h>

#include "sys/error.h"

namespace pitbox::net {
namespace {

using nlohmann::json;

std::string error_of(const json& j) {
  try {
    Policy::from_json(j);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    return e.message();
  }
  return "";
}

TEST(PolicyTest, ParsesModesAndLists) {
  EXPECT_EQ(Policy::from_json("none").mode, Policy::Mode::none);
  EXPECT_EQ(Policy::from_json("egress").mode, Policy::Mode::egress);
  Policy p = Policy::from_json(json{{"policy", "egress"},
                                    {"allow_cidrs", {"198.18.0.0/24"}},
                                    {"deny_cidrs", {"10.0.0.0/8", "192.168.1.1"}},
                                    {"allow_domains", {"Example.TEST", "*.pypi.org."}}});
  EXPECT_EQ(p.allow_cidrs.at(0).str(), "198.18.0.0/24");
  EXPECT_EQ(p.deny_cidrs.at(1).str(), "192.168.1.1/32");
  EXPECT_EQ(p.allow_domains, (std::vector<std::string>{"example.test", "*.pypi.org"}));
  EXPECT_TRUE(p.has_allow_list());
  EXPECT_EQ(Policy::from_json(p.to_json()), p);
  EXPECT_FALSE(Policy::from_json(json::object()).has_allow_list());
}

TEST(PolicyTest, NamesTheFieldAtFault) {
  EXPECT_NE(error_of("open").find("network: must be \"none\" or \"egress\""), std::string::npos);
  EXPECT_NE(
      error_of(json{{"allow_cidrs", {"10.0.0.0/8", "300.1.1.1"}}}).find("network.allow_cidrs[1]"),
      std::string::npos);
  EXPECT_NE(error_of(json{{"deny_cidrs", "10.0.0.0/8"}}).find("network.deny_cidrs: must be a list"),
            std::string::npos);
  EXPECT_NE(
      error_of(json{{"allow_domains", {"ok.test", "bad_*.test"}}}).find("network.allow_domains[1]"),
      std::string::npos);
  EXPECT_NE(error_of(json{{"allow_domains", {"a..b"}}}).find("1 to 63"), std::string::npos);
  EXPECT_NE(error_of(json{{"allow_domains", {"*"}}}).find("'*' is allowed only"),
            std::string::npos);
  EXPECT_NE(error_of(json{{"allow_domains", {"*."}}}).find("'*' is allowed only"),
            std::string::npos);
  EXPECT_NE(error_of(json{{"alow_cidrs", json::array()}}).find("network.alow_cidrs: unknown field"),
            std::string::npos);
  EXPECT_NE(error_of(json{{"policy", 1}}).find("network.policy"), std::string::npos);
  EXPECT_NE(error_of(json{{"networks", {"ok", "Not_OK"}}}).find("network.networks[1]"),
            std::string::npos);
  EXPECT_NE(error_of(42).find("network: must be"), std::string::npos);
}

TEST(PolicyTest, DomainPatterns) {
  EXPECT_TRUE(domain_matches("example.test", "example.test"));
  EXPECT_FALSE(domain_matches("example.test", "www.example.test"));
  EXPECT_TRUE(domain_matches("*.example.test", "www.example.test"));
  EXPECT_TRUE(domain_matches("*.example.test", "a.b.example.test"));
  EXPECT_FALSE(domain_matches("*.example.test", "example.test"));
  EXPECT_FALSE(domain_matches("*.example.test", "badexample.test"));
}

}  // namespace
}  // namespace pitbox::net
