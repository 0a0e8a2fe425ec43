// The node's DNS resolver for boxes. Boxes with a network ask it (their /etc/resolv.conf names
// the gateway); it answers by each box's policy:
//   allow_domains given: only names that match one (else NXDOMAIN), and the addresses of each
//     answer are admitted through the box's firewall for the answer's TTL (Network::admit);
//   otherwise: everything for egress, nothing (REFUSED) for none.
// The names of boxes sharing a box-to-box network with the asker come first, answered here.
// Questions go on to the upstream servers (by default those of the host's /etc/resolv.conf).
//
// Over UDP and TCP (RFC 7766: a 2-byte length before each message, several questions on one
// connection, answered as they come). One thread answers all boxes: it never waits on an
// upstream, each forwarded question has a socket of its own (a fresh random id and port) in the
// thread's poll set, so a slow or dead upstream delays only the questions sent to it. Upstreams
// are asked over UDP, in order, each for `upstream_timeout`; none answering is SERVFAIL. A
// truncated UDP answer goes as it is to a box that asked over UDP (it asks again over TCP) and
// is asked again of the same upstream over TCP for a box that asked over TCP.
#pragma once

#include <chrono>
#include <cstddef>
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

// What a box may take of the resolver (an fd each for questions in flight and connections).
struct ResolverLimits {
  std::chrono::milliseconds upstream_timeout{2000};  // each upstream, each try
  size_t in_flight = 256;  // questions waiting on upstreams; beyond: SERVFAIL at once
  size_t in_flight_per_box = 64;
  size_t connections = 64;  // TCP; beyond: closed at once
  size_t connections_per_box = 16;
  std::chrono::milliseconds idle{10000};  // a TCP connection with nothing in flight is closed
};

class Resolver {
 public:
  // Listens on the gateway's port 53, UDP and TCP (also before any box has made the address
  // exist).
  Resolver(Network& network, std::vector<Upstream> upstreams, ResolverLimits limits = {});
  // Stops the thread; questions in flight go unanswered, connections are closed.
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

 private:
  class Loop;  // the thread's state: questions in flight, connections

  Network& network_;
  std::vector<Upstream> upstreams_;
  ResolverLimits limits_;
  sys::UniqueFd udp_;
  sys::UniqueFd tcp_;   // listening
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
