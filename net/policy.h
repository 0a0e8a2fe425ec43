// A box's network policy: what it may reach outside itself.
//
//   none     nothing leaves the box (it keeps loopback and its own address)
//   egress   outbound connections anywhere outside the protected ranges
//   allow_cidrs / allow_domains: when either is given, only these (whatever the mode)
//   deny_cidrs: never these (before any allow)
//
// Protected ranges are never reached unless an allow_cidrs entry lies inside one: link-local and
// cloud metadata (169.254.0.0/16), multicast and broadcast. The host itself (its every address,
// the pitbox API included) and other boxes are never reached through a policy at all: an
// allow_cidrs entry that names only them is refused as an error.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sys/netlink.h"

namespace pitbox::net {

struct Policy {
  enum class Mode { none, egress };
  Mode mode = Mode::egress;
  std::vector<sys::Ipv4Net> allow_cidrs;
  std::vector<sys::Ipv4Net> deny_cidrs;
  std::vector<std::string> allow_domains;  // lowercase; "*.example.com" for any name below it
  // Box-to-box networks the box is a member of: members reach each other (by address, and by
  // name through the node's resolver), whatever else their policies say.
  std::vector<std::string> networks;

  bool has_allow_list() const { return !allow_cidrs.empty() || !allow_domains.empty(); }
  bool operator==(const Policy&) const = default;

  // {"policy": "none"|"egress", "allow_cidrs": [...], "deny_cidrs": [...],
  //  "allow_domains": [...], "networks": [...]} or just "none" / "egress". Bad input names the
  //  field at fault
  // (under `field`, e.g. "network").
  static Policy from_json(const nlohmann::json& j, const std::string& field = "network");
  nlohmann::json to_json() const;
};

const char* mode_name(Policy::Mode mode);

// A domain pattern ("example.com", "*.example.com"), lowercased; throws invalid_argument naming
// `field` when it is not one.
std::string parse_domain_pattern(const std::string& text, const std::string& field);
// Whether `name` (lowercase, without a trailing dot) matches `pattern`.
bool domain_matches(const std::string& pattern, const std::string& name);

// A box-to-box network's name (1 to 63 of a-z, 0-9, '-'); throws invalid_argument naming `field`.
void validate_network_name(const std::string& name, const std::string& field);

// The ranges a box reaches only through an allow_cidrs entry inside them.
const std::vector<sys::Ipv4Net>& protected_ranges();

}  // namespace pitbox::net
