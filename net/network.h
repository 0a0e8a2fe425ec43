// The boxes' network on this machine. Each box with a network gets a namespace made ahead by the
// host (so the box's root cannot change its interfaces, addresses or routes) with `eth0`, one
// end of a veth pair whose other end stays on the host. Routed, not bridged: the host end holds
// the gateway address and a /32 route to the box, so every packet a box sends, to the world or
// to another box, passes the host's forward hook, where this daemon's nftables table applies the
// box's policy. Outbound traffic is masqueraded behind the host.
//
//   box 10.88.0.7/32 eth0 --veth-- pbTAG-5 (10.88.0.1/32, route 10.88.0.7/32) -- host routing
//
// The address of a box follows its id slot (node::IdAllocator, machine-wide): range + 2 + slot.
// Links and rules are named after this daemon's tag and the slot, so daemons on one machine
// never touch each other's. A box's links go with its namespace when its last process ends
// (also when the daemon is gone); its rules are removed by release(), and a restarted daemon
// rebuilds its table from the boxes it finds.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "net/nft.h"
#include "net/policy.h"
#include "sys/fd.h"
#include "sys/netlink.h"

namespace pitbox::net {

struct NetworkOptions {
  std::string range = "10.88.0.0/16";
  // A few hex characters, the same for every start of one daemon (its state directory):
  // names its nftables table (pitbox_TAG) and host links (pbTAG-SLOT).
  std::string tag;
  std::string nft_helper;  // default: pitbox-nft beside the pitbox binary ($PITBOX_NFT)
};

// The network end of one box, made ahead by Network::prepare.
struct Attachment {
  uint32_t slot = 0;
  uint32_t address = 0;
  std::string host_link;
  sys::UniqueFd netns;  // the box's namespace until its processes hold it
};

class Network {
 public:
  // Validates the options, turns on IPv4 forwarding and starts this daemon's table afresh (no
  // box has rules until apply(): boxes found running after a restart get theirs again then).
  explicit Network(NetworkOptions options);
  // Removes the table when no box has rules any more; else leaves it for running boxes.
  ~Network();
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  const sys::Ipv4Net& range() const { return range_; }
  uint32_t gateway() const { return range_.first() + 1; }
  uint32_t address_of(uint32_t slot) const;
  std::string link_name(uint32_t slot) const;
  std::string table() const { return "pitbox_" + options_.tag; }

  // Throws invalid_argument when `policy` names something no box may reach (the host itself,
  // other boxes).
  void check(const Policy& policy) const;

  // A namespace with loopback and eth0 wired to the host for the box in id `slot`. Slow (a few
  // milliseconds): done ahead. On failure nothing of it is left.
  Attachment prepare(uint32_t slot);
  // Puts the rules of the box in `slot` in place, replacing its earlier ones: before the box
  // starts, and whenever its policy changes (running connections it had stay).
  // `name` is what other members of its box-to-box networks call it (its hostname).
  void apply(uint32_t slot, const Policy& policy, const std::string& name = "");
  // Removes the rules and host link of the box in `slot` (gone, or never started). Idempotent.
  void release(uint32_t slot);
  // The box whose address is `address`, and its policy (the DNS resolver asks).
  std::optional<std::pair<uint32_t, Policy>> box_at(uint32_t address);
  // The address of the box called `name` that shares a box-to-box network with the box in
  // `slot`, if there is one.
  std::optional<uint32_t> peer(uint32_t slot, const std::string& name);
  // Lets the box in `slot` reach these addresses for their TTLs (seconds): what the resolver
  // answered it for an allowed name.
  void admit(uint32_t slot, const std::vector<std::pair<uint32_t, uint32_t>>& addresses);
  // The nftables script of a box's rules (for tests and the docs).
  std::string box_rules(uint32_t slot, const Policy& policy) const;

 private:
  std::string base_table() const;
  NetworkOptions options_;
  sys::Ipv4Net range_;
  Nft nft_;
  // Links and rules have locks of their own: making a box's links ahead (milliseconds) holds
  // up neither a create's rules nor the resolver.
  std::mutex links_mu_;
  sys::Netlink host_;  // under links_mu_
  std::mutex mu_;      // the rules: applied_, and the order of nftables commands
  struct Rules {
    Policy policy;
    std::string name;
  };
  std::map<uint32_t, Rules> applied_;  // boxes with rules, by slot
  // Nftables commands that keep the member sets (net_NAME) of box-to-box networks as `slot`
  // leaves `before` and joins `after`; the sets live while they have members.
  std::string membership(uint32_t slot, const std::vector<std::string>& before,
                         const std::vector<std::string>& after) const;
};

}  // namespace pitbox::net
