// Route netlink: links (veth pairs), IPv4 addresses and routes over a NETLINK_ROUTE socket, and
// network namespaces made and entered by one thread at a time.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "sys/fd.h"

namespace pitbox::sys {

// An IPv4 address in host byte order, and a prefix of them.
struct Ipv4Net {
  uint32_t addr = 0;
  int prefix = 32;

  // "10.1.2.3" or "10.1.0.0/16"; nullopt-like failure throws invalid_argument naming `what`.
  static Ipv4Net parse(const std::string& text, const std::string& what);
  std::string str() const;       // "10.1.0.0/16" ("/32" included)
  std::string addr_str() const;  // "10.1.2.3"
  uint32_t mask() const { return prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix); }
  uint32_t first() const { return addr & mask(); }
  uint32_t last() const { return first() | ~mask(); }
  bool contains(uint32_t a) const { return (a & mask()) == first(); }
  bool contains(const Ipv4Net& n) const { return n.prefix >= prefix && contains(n.addr); }
  bool overlaps(const Ipv4Net& n) const { return contains(n.first()) || n.contains(first()); }
  bool operator==(const Ipv4Net&) const = default;
};
std::string ipv4_str(uint32_t addr);

// One NETLINK_ROUTE socket, in the network namespace of the thread that made it.
class Netlink {
 public:
  Netlink();

  // The index of link `name`; 0 when there is none.
  int link_index(const std::string& name);
  std::vector<std::string> link_names();
  // A veth pair: `name` in this socket's namespace and `peer` in the namespace of `peer_netns`.
  void add_veth(const std::string& name, const std::string& peer, int peer_netns);
  void set_up(int index);
  void add_address(int index, uint32_t addr, int prefix);
  // A route to dst/prefix out of link `index`: through `gateway` (0: on the link itself).
  void add_route(uint32_t dst, int prefix, int index, uint32_t gateway = 0);
  // Removes link `name` (and a veth's peer with it); false when there was none.
  bool delete_link(const std::string& name);

 private:
  // Sends one request and waits for its acknowledgement; throws the kernel's error.
  void request(std::vector<char>& msg, const std::string& what);
  UniqueFd fd_;
  uint32_t seq_ = 0;
};

// A new network namespace: `inside` runs in it first (on a thread of its own, which then
// ends). Returns the namespace's fd, which keeps it alive.
UniqueFd new_netns(const std::function<void()>& inside);

// While alive, the calling thread is in the network namespace `netns`; back in its own after.
class EnterNetns {
 public:
  explicit EnterNetns(int netns);
  ~EnterNetns();
  EnterNetns(const EnterNetns&) = delete;
  EnterNetns& operator=(const EnterNetns&) = delete;

 private:
  UniqueFd own_;
};

// Writes `value` to /proc/sys/<key> (dots or slashes) in the calling thread's namespaces.
void write_sysctl(const std::string& key, const std::string& value);

}  // namespace pitbox::sys
