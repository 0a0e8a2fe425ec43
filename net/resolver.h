// The node's DNS resolver for boxes. Boxes with a network ask it (their /etc/resolv.conf names
// the gateway); it answers by each box's policy:
//   allow_domains given: only names that match one (else NXDOMAIN), and the addresses of each
//     answer are admitted through the box's firewall for the answer's TTL (Network::admit);
//   otherwise: everything for egress, nothing (REFUSED) for none.
// The names of boxes sharing a box-to-box network with the asker come first, answered here.
// Questions go on to the upstream servers (by default those of the host's /etc/resolv.conf).
// UDP only: a box asking over TCP gets its connection refused (and a truncated answer, rare,
// stays truncated).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "net/network.h"
#include "sys/fd.h"

namespace pitbox::net {

struct Upstream {
  uint32_t address = 0;
  uint16_t port = 53;
};

// "10.0.0.2" or "10.0.0.2:5353"; throws invalid_argument naming `field`.
Upstream parse_upstream(const std::string& text, const std::string& field);
// The IPv4 nameservers of a resolv.conf's text.
std::vector<Upstream> resolv_conf_servers(const std::string& text);

class Resolver {
 public:
  // Listens on the gateway's port 53 (also before any box has made the address exist).
  Resolver(Network& network, std::vector<Upstream> upstreams);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

 private:
  void loop();
  void answer(const std::string& query, uint32_t from_address, uint16_t from_port);
  std::string ask_upstream(const std::string& query);

  Network& network_;
  std::vector<Upstream> upstreams_;
  sys::UniqueFd socket_;
  sys::UniqueFd wake_;  // an eventfd: written to stop the loop
  std::thread thread_;
};

// DNS wire format, for the resolver and its tests.
namespace dns {
// The first question's name (lowercase, no trailing dot) and type; false when malformed.
bool question(const std::string& msg, std::string& name, uint16_t& type);
// An answer to `query` with no records and `rcode` (3 NXDOMAIN, 5 REFUSED, 2 SERVFAIL).
std::string error_reply(const std::string& query, int rcode);
// An answer to `query` with one A record (`address`, TTL 5 s); none when `address` is 0.
std::string address_reply(const std::string& query, uint32_t address);
// The A records of an answer: (address, ttl seconds).
std::vector<std::pair<uint32_t, uint32_t>> a_records(const std::string& msg);
}  // namespace dns

}  // namespace pitbox::net
