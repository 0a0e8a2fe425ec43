#include "net/network.h"

#include <algorithm>
#include <optional>

#include "sys/error.h"
#include "sys/log.h"
#include "sys/process.h"

namespace pitbox::net {

namespace {

// Entries contained in another one left out: nftables refuses overlapping intervals.
std::vector<sys::Ipv4Net> merged(std::vector<sys::Ipv4Net> nets) {
  std::sort(nets.begin(), nets.end(),
            [](const auto& a, const auto& b) { return a.prefix < b.prefix; });
  std::vector<sys::Ipv4Net> out;
  for (const auto& n : nets) {
    if (std::none_of(out.begin(), out.end(), [&](const auto& o) { return o.contains(n); })) {
      out.push_back(n);
    }
  }
  return out;
}

std::string set_of(const std::vector<sys::Ipv4Net>& nets) {
  std::string s = "{ ";
  for (size_t i = 0; i < nets.size(); ++i) s += (i ? ", " : "") + nets[i].str();
  return s + " }";
}

constexpr const char* kReject = "reject with icmpx admin-prohibited";

// Writes a sysctl that may be missing (IPv6 turned off on the host's kernel).
void write_optional_sysctl(const std::string& key, const std::string& value) {
  try {
    sys::write_sysctl(key, value);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::not_found) throw;
  }
}

}  // namespace

Network::Network(NetworkOptions options)
    : options_(std::move(options)),
      range_(sys::Ipv4Net::parse(options_.range, "network range")),
      nft_(options_.nft_helper.empty() ? sys::find_helper_binary("pitbox-nft", "PITBOX_NFT")
                                       : options_.nft_helper) {
  if (options_.tag.empty() || options_.tag.size() > 6 ||
      options_.tag.find_first_not_of("0123456789abcdef") != std::string::npos) {
    throw invalid_argument("network tag \"" + options_.tag + "\": 1 to 6 lowercase hex digits");
  }
  if (range_.prefix > 24) {
    throw invalid_argument("network range " + range_.str() +
                           " is too small: boxes take their addresses from a /24 or larger");
  }
  for (const auto& p : protected_ranges()) {
    if (p.overlaps(range_) || sys::Ipv4Net{0x7f000000, 8}.overlaps(range_)) {
      throw invalid_argument("network range " + range_.str() + " overlaps " + p.str() +
                             ", which boxes never reach");
    }
  }
  sys::write_sysctl("net.ipv4.ip_forward", "1");
  nft_.run(base_table());
}

Network::~Network() {
  std::lock_guard lock(mu_);
  if (!applied_.empty()) return;  // boxes still run on them (a daemon that restarts finds them)
  try {
    nft_.run("table inet " + table() + "\ndelete table inet " + table() + "\n");
  } catch (const std::exception& e) {
    sys::log(sys::LogLevel::warn, "could not remove the network's nftables table",
             {{"table", table()}, {"error", e.what()}});
  }
}

std::string Network::base_table() const {
  // Packets from a box's link go to its own chain (box_SLOT); a link with no chain (a namespace
  // made ahead, a box being set up) passes nothing. Nothing outside opens a connection into a
  // box: the daemon reaches boxes from the host itself (output, not forward). Of the host itself
  // a box reaches only the node's DNS resolver.
  std::string t = R"(table inet TABLE
delete table inet TABLE
table inet TABLE {
  map from_box { type ifname : verdict; }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname vmap @from_box
    iifname OURS drop
    oifname OURS ct state established,related accept
    oifname OURS drop
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname OURS ct state established,related accept
    iifname OURS ip daddr GATEWAY udp dport 53 accept
    iifname OURS ip daddr GATEWAY tcp dport 53 accept
    iifname OURS REJECT
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr RANGE oifname != OURS masquerade
  }
}
)";
  for (auto [word, value] : {std::pair<std::string, std::string>{"TABLE", table()},
                             {"OURS", "\"pb" + options_.tag + "-*\""},
                             {"GATEWAY", sys::ipv4_str(gateway())},
                             {"RANGE", range_.str()},
                             {"REJECT", kReject}}) {
    for (size_t at; (at = t.find(word)) != std::string::npos;) t.replace(at, word.size(), value);
  }
  return t;
}

uint32_t Network::address_of(uint32_t slot) const {
  uint64_t address = uint64_t{range_.first()} + 2 + slot;
  if (address >= range_.last()) {
    throw Error(ErrorCode::resource_exhausted,
                "network range " + range_.str() + " has no address left for id slot " +
                    std::to_string(slot) + "; give serve a larger --network-range");
  }
  return static_cast<uint32_t>(address);
}

std::string Network::link_name(uint32_t slot) const {
  return "pb" + options_.tag + "-" + std::to_string(slot);
}

void Network::check(const Policy& policy) const {
  for (size_t i = 0; i < policy.allow_cidrs.size(); ++i) {
    const sys::Ipv4Net& n = policy.allow_cidrs[i];
    std::string field = "network.allow_cidrs[" + std::to_string(i) + "]";
    if (sys::Ipv4Net{0x7f000000, 8}.contains(n) || (n.contains(gateway()) && n.prefix == 32)) {
      throw invalid_argument(field + ": " + n.str() + " is the host itself, which no box may reach",
                             {{"field", field}, {"value", n.str()}});
    }
    if (range_.contains(n)) {
      throw invalid_argument(field + ": " + n.str() + " lies in the boxes' own range " +
                                 range_.str() +
                                 "; boxes reach each other only through a "
                                 "box-to-box network",
                             {{"field", field}, {"value", n.str()}});
    }
  }
}

std::string Network::box_rules(uint32_t slot, const Policy& policy) const {
  std::string chain = "inet " + table() + " box_" + std::to_string(slot);
  std::string add = "add rule " + chain + " ";
  std::string set = "inet " + table() + " dns_" + std::to_string(slot);
  // Addresses the node's resolver admitted for allowed names, each for its TTL.
  std::string s = "add set " + set + " { type ipv4_addr; flags timeout; }\nflush set " + set +
                  "\nadd chain " + chain + "\nflush chain " + chain + "\n";
  s += add + "meta nfproto ipv6 drop\n";
  s += add + "ip saddr != " + sys::ipv4_str(address_of(slot)) + " drop\n";
  s += add + "ct state established,related accept\n";
  if (!policy.deny_cidrs.empty()) {
    s += add + "ip daddr " + set_of(merged(policy.deny_cidrs)) + " " + kReject + "\n";
  }
  std::vector<sys::Ipv4Net> guarded = protected_ranges();
  guarded.push_back(range_);
  std::vector<sys::Ipv4Net> opened;  // allow entries inside a protected range: asked for exactly
  for (const auto& n : policy.allow_cidrs) {
    if (std::any_of(guarded.begin(), guarded.end(), [&](const auto& g) { return g.contains(n); }))
      opened.push_back(n);
  }
  if (!opened.empty()) s += add + "ip daddr " + set_of(merged(opened)) + " accept\n";
  for (const auto& n : policy.networks) s += add + "ip daddr @net_" + n + " accept\n";
  s += add + "ip daddr " + set_of(merged(guarded)) + " " + kReject + "\n";
  if (policy.has_allow_list()) {
    if (!policy.allow_cidrs.empty()) {
      s += add + "ip daddr " + set_of(merged(policy.allow_cidrs)) + " accept\n";
    }
    if (!policy.allow_domains.empty()) {
      s += add + "ip daddr @dns_" + std::to_string(slot) + " accept\n";
    }
    s += add + kReject + "\n";
  } else {
    s += add + (policy.mode == Policy::Mode::egress ? "accept" : kReject) + "\n";
  }
  return s;
}

std::string Network::membership(uint32_t slot, const std::vector<std::string>& before,
                                const std::vector<std::string>& after) const {
  std::string s, address = sys::ipv4_str(address_of(slot));
  auto others = [&](const std::string& net) {
    size_t n = 0;
    for (const auto& [other, rules] : applied_) {
      const auto& nets = rules.policy.networks;
      if (other != slot && std::find(nets.begin(), nets.end(), net) != nets.end()) ++n;
    }
    return n;
  };
  for (const auto& net : after) {
    s += "add set inet " + table() + " net_" + net + " { type ipv4_addr; }\n";
    s += "add element inet " + table() + " net_" + net + " { " + address + " }\n";
  }
  for (const auto& net : before) {
    if (std::find(after.begin(), after.end(), net) != after.end()) continue;
    s += "delete element inet " + table() + " net_" + net + " { " + address + " }\n";
    if (others(net) == 0) s += "delete set inet " + table() + " net_" + net + "\n";
  }
  return s;
}

void Network::apply(uint32_t slot, const Policy& policy, const std::string& name) {
  check(policy);
  std::lock_guard lock(mu_);
  auto it = applied_.find(slot);
  std::vector<std::string> before =
      it == applied_.end() ? std::vector<std::string>{} : it->second.policy.networks;
  // The member sets first (the box's chain refers to them); sets it leaves go after the chain.
  std::string script = membership(slot, {}, policy.networks) + box_rules(slot, policy);
  script += "add element inet " + table() + " from_box { \"" + link_name(slot) + "\" : jump box_" +
            std::to_string(slot) + " }\n";
  script += membership(slot, before, policy.networks);
  nft_.run(script);
  applied_[slot] = {policy, name};
}

std::optional<uint32_t> Network::peer(uint32_t slot, const std::string& name) {
  std::lock_guard lock(mu_);
  auto asker = applied_.find(slot);
  if (asker == applied_.end()) return std::nullopt;
  const auto& mine = asker->second.policy.networks;
  for (const auto& [other, rules] : applied_) {
    if (other == slot || rules.name != name) continue;
    for (const auto& net : rules.policy.networks) {
      if (std::find(mine.begin(), mine.end(), net) != mine.end()) return address_of(other);
    }
  }
  return std::nullopt;
}

void Network::release(uint32_t slot) {
  std::string t = "inet " + table();
  std::string n = std::to_string(slot);
  std::string link = "\"" + link_name(slot) + "\"";
  // Each made first, so that the deletes find them whatever was there.
  std::string script = "add chain " + t + " box_" + n + "\n" +  //
                       "add element " + t + " from_box { " + link + " : jump box_" + n +
                       " }\n" +                                                                  //
                       "delete element " + t + " from_box { " + link + " }\n" +                  //
                       "delete chain " + t + " box_" + n + "\n" +                                //
                       "add set " + t + " dns_" + n + " { type ipv4_addr; flags timeout; }\n" +  //
                       "delete set " + t + " dns_" + n + "\n";
  {
    std::lock_guard lock(mu_);
    if (auto it = applied_.find(slot); it != applied_.end()) {
      script += membership(slot, it->second.policy.networks, {});
    }
    nft_.run(script);
    applied_.erase(slot);
  }
  std::lock_guard lock(links_mu_);
  host_.delete_link(link_name(slot));
}

std::optional<std::pair<uint32_t, Policy>> Network::box_at(uint32_t address) {
  if (address < range_.first() + 2) return std::nullopt;
  uint32_t slot = address - range_.first() - 2;
  std::lock_guard lock(mu_);
  auto it = applied_.find(slot);
  if (it == applied_.end()) return std::nullopt;
  return std::pair{slot, it->second.policy};
}

void Network::admit(uint32_t slot, const std::vector<std::pair<uint32_t, uint32_t>>& addresses) {
  std::string elements;
  for (const auto& [address, ttl] : addresses) {
    elements += (elements.empty() ? "" : ", ") + sys::ipv4_str(address) + " timeout " +
                std::to_string(std::clamp<uint32_t>(ttl, 5, 86400)) + "s";
  }
  std::lock_guard lock(mu_);
  if (!applied_.count(slot) || elements.empty()) return;
  nft_.run("add element inet " + table() + " dns_" + std::to_string(slot) + " { " + elements +
           " }\n");
}

Attachment Network::prepare(uint32_t slot) {
  Attachment a;
  a.slot = slot;
  a.address = address_of(slot);
  a.host_link = link_name(slot);
  std::optional<sys::Netlink> inside;
  a.netns = sys::new_netns([&] {
    inside.emplace();
    inside->set_up(inside->link_index("lo"));
    // The box's root does not own this namespace: without these it could neither listen on a
    // port below 1024 nor ping.
    sys::write_sysctl("net.ipv4.ip_unprivileged_port_start", "0");
    sys::write_sysctl("net.ipv4.ping_group_range", "0 2147483647");
    write_optional_sysctl("net.ipv6.conf.all.disable_ipv6", "1");
    write_optional_sysctl("net.ipv6.conf.default.disable_ipv6", "1");
  });
  std::lock_guard lock(links_mu_);
  // A link of this name is a leftover: the slot is ours, machine-wide.
  host_.delete_link(a.host_link);
  host_.add_veth(a.host_link, "eth0", a.netns.get());
  try {
    int host_index = host_.link_index(a.host_link);
    write_optional_sysctl("net.ipv6.conf." + a.host_link + ".disable_ipv6", "1");
    sys::write_sysctl("net.ipv4.conf." + a.host_link + ".rp_filter", "1");
    host_.add_address(host_index, gateway(), 32);
    host_.set_up(host_index);
    host_.add_route(a.address, 32, host_index);
    int eth0 = inside->link_index("eth0");
    inside->add_address(eth0, a.address, 32);
    inside->set_up(eth0);
    inside->add_route(gateway(), 32, eth0);
    inside->add_route(0, 0, eth0, gateway());
  } catch (...) {
    host_.delete_link(a.host_link);
    throw;
  }
  return a;
}

}  // namespace pitbox::net
