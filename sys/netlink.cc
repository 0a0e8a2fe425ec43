#include "sys/netlink.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sched.h>
#include <sys/socket.h>

#include <cstring>
#include <exception>
#include <thread>

#include "sys/error.h"

namespace pitbox::sys {

Ipv4Net Ipv4Net::parse(const std::string& text, const std::string& what) {
  auto bad = [&] {
    return invalid_argument(what + ": \"" + text + "\" is not an IPv4 address or CIDR",
                            {{"field", what}, {"value", text}});
  };
  Ipv4Net n;
  std::string addr = text;
  if (size_t slash = text.find('/'); slash != std::string::npos) {
    addr = text.substr(0, slash);
    std::string p = text.substr(slash + 1);
    if (p.empty() || p.size() > 2 || p.find_first_not_of("0123456789") != std::string::npos)
      throw bad();
    n.prefix = std::stoi(p);
    if (n.prefix > 32) throw bad();
  }
  in_addr a;
  if (::inet_pton(AF_INET, addr.c_str(), &a) != 1) throw bad();
  n.addr = ntohl(a.s_addr);
  if (n.addr != n.first()) {
    throw invalid_argument(what + ": \"" + text + "\" has bits set past its prefix (did you mean " +
                               Ipv4Net{n.first(), n.prefix}.str() + "?)",
                           {{"field", what}, {"value", text}});
  }
  return n;
}

std::string ipv4_str(uint32_t addr) {
  in_addr a{htonl(addr)};
  char buf[INET_ADDRSTRLEN];
  ::inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

std::string Ipv4Net::str() const { return ipv4_str(addr) + "/" + std::to_string(prefix); }
std::string Ipv4Net::addr_str() const { return ipv4_str(addr); }

namespace {

// Builds one netlink message: a header, a fixed part, then attributes (nested ones too).
class Message {
 public:
  Message(uint16_t type, uint16_t flags) {
    nlmsghdr h{};
    h.nlmsg_type = type;
    h.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
    append(&h, sizeof h);
  }
  template <class T>
  void fixed(const T& part) {
    append(&part, sizeof part);
  }
  void attr(uint16_t type, const void* data, size_t len) {
    rtattr a{static_cast<uint16_t>(RTA_LENGTH(len)), type};
    append(&a, sizeof a);
    append(data, len);
  }
  void attr_string(uint16_t type, const std::string& s) { attr(type, s.c_str(), s.size() + 1); }
  void attr_u32(uint16_t type, uint32_t v) { attr(type, &v, sizeof v); }
  size_t begin(uint16_t type) {
    size_t at = buf_.size();
    rtattr a{0, type};
    append(&a, sizeof a);
    return at;
  }
  void end(size_t at) {
    reinterpret_cast<rtattr*>(buf_.data() + at)->rta_len = static_cast<uint16_t>(buf_.size() - at);
  }
  std::vector<char>& done() {
    reinterpret_cast<nlmsghdr*>(buf_.data())->nlmsg_len = static_cast<uint32_t>(buf_.size());
    return buf_;
  }

 private:
  void append(const void* data, size_t len) {
    const char* p = static_cast<const char*>(data);
    buf_.insert(buf_.end(), p, p + len);
    buf_.resize(NLMSG_ALIGN(buf_.size()), 0);
  }
  std::vector<char> buf_;
};

// Sends `msg` and hands every answer to `each` until the kernel's acknowledgement (or the end
// of a dump). Throws the error the kernel answered.
void exchange(int fd, uint32_t seq, std::vector<char>& msg, const std::string& what,
              const std::function<void(const nlmsghdr*)>& each) {
  auto* h = reinterpret_cast<nlmsghdr*>(msg.data());
  h->nlmsg_seq = seq;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(fd, msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) <
      0) {
    throw_errno(what);
  }
  std::vector<char> buf(32768);
  for (;;) {
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(what);
    }
    int len = static_cast<int>(n);
    for (auto* r = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(r, len);
         r = NLMSG_NEXT(r, len)) {
      if (r->nlmsg_seq != seq) continue;
      if (r->nlmsg_type == NLMSG_DONE) return;
      if (r->nlmsg_type == NLMSG_ERROR) {
        int err = -static_cast<const nlmsgerr*>(NLMSG_DATA(r))->error;
        if (err != 0) throw_errno(what, err);
        return;  // the acknowledgement
      }
      if (each) each(r);
    }
  }
}

}  // namespace

Netlink::Netlink() {
  fd_ = UniqueFd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd_) throw_errno("netlink socket");
  sockaddr_nl self{};
  self.nl_family = AF_NETLINK;
  if (::bind(fd_.get(), reinterpret_cast<sockaddr*>(&self), sizeof self) != 0)
    throw_errno("binding a netlink socket");
}

void Netlink::request(std::vector<char>& msg, const std::string& what) {
  exchange(fd_.get(), ++seq_, msg, what, nullptr);
}

int Netlink::link_index(const std::string& name) {
  Message m(RTM_GETLINK, NLM_F_ACK);  // the answer, then the acknowledgement
  m.fixed(ifinfomsg{});
  m.attr_string(IFLA_IFNAME, name);
  int index = 0;
  try {
    exchange(fd_.get(), ++seq_, m.done(), "looking up link " + name, [&](const nlmsghdr* r) {
      if (r->nlmsg_type == RTM_NEWLINK)
        index = static_cast<const ifinfomsg*>(NLMSG_DATA(r))->ifi_index;
    });
  } catch (const Error& e) {
    if (e.code() == ErrorCode::not_found) return 0;  // ENODEV
    throw;
  }
  return index;
}

std::vector<std::string> Netlink::link_names() {
  Message m(RTM_GETLINK, NLM_F_DUMP);
  m.fixed(ifinfomsg{});
  std::vector<std::string> names;
  exchange(fd_.get(), ++seq_, m.done(), "listing links", [&](const nlmsghdr* r) {
    if (r->nlmsg_type != RTM_NEWLINK) return;
    int len = static_cast<int>(IFLA_PAYLOAD(r));
    for (auto* a = IFLA_RTA(static_cast<const ifinfomsg*>(NLMSG_DATA(r))); RTA_OK(a, len);
         a = RTA_NEXT(a, len)) {
      if (a->rta_type == IFLA_IFNAME) names.emplace_back(static_cast<const char*>(RTA_DATA(a)));
    }
  });
  return names;
}

void Netlink::add_veth(const std::string& name, const std::string& peer, int peer_netns) {
  if (name.size() >= IFNAMSIZ || peer.size() >= IFNAMSIZ)
    throw invalid_argument("link names have at most 15 characters: " + name + ", " + peer);
  Message m(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
  m.fixed(ifinfomsg{});
  m.attr_string(IFLA_IFNAME, name);
  size_t info = m.begin(IFLA_LINKINFO);
  m.attr_string(IFLA_INFO_KIND, "veth");
  size_t data = m.begin(IFLA_INFO_DATA);
  size_t peer_info = m.begin(VETH_INFO_PEER);
  m.fixed(ifinfomsg{});
  m.attr_string(IFLA_IFNAME, peer);
  if (peer_netns >= 0) m.attr_u32(IFLA_NET_NS_FD, static_cast<uint32_t>(peer_netns));
  m.end(peer_info);
  m.end(data);
  m.end(info);
  request(m.done(), "creating veth pair " + name + "/" + peer);
}

void Netlink::set_up(int index) {
  Message m(RTM_NEWLINK, NLM_F_ACK);
  ifinfomsg i{};
  i.ifi_index = index;
  i.ifi_flags = IFF_UP;
  i.ifi_change = IFF_UP;
  m.fixed(i);
  request(m.done(), "setting link " + std::to_string(index) + " up");
}

void Netlink::add_address(int index, uint32_t addr, int prefix) {
  Message m(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
  ifaddrmsg a{};
  a.ifa_family = AF_INET;
  a.ifa_prefixlen = static_cast<unsigned char>(prefix);
  a.ifa_scope = RT_SCOPE_UNIVERSE;
  a.ifa_index = static_cast<uint32_t>(index);
  m.fixed(a);
  uint32_t net = htonl(addr);
  m.attr(IFA_LOCAL, &net, sizeof net);
  m.attr(IFA_ADDRESS, &net, sizeof net);
  request(m.done(), "adding address " + ipv4_str(addr) + " to link " + std::to_string(index));
}

void Netlink::add_route(uint32_t dst, int prefix, int index, uint32_t gateway) {
  Message m(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
  rtmsg r{};
  r.rtm_family = AF_INET;
  r.rtm_dst_len = static_cast<unsigned char>(prefix);
  r.rtm_table = RT_TABLE_MAIN;
  r.rtm_protocol = RTPROT_STATIC;
  r.rtm_scope = gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
  r.rtm_type = RTN_UNICAST;
  m.fixed(r);
  if (prefix > 0) {
    uint32_t net = htonl(dst);
    m.attr(RTA_DST, &net, sizeof net);
  }
  m.attr_u32(RTA_OIF, static_cast<uint32_t>(index));
  if (gateway) {
    uint32_t net = htonl(gateway);
    m.attr(RTA_GATEWAY, &net, sizeof net);
  }
  request(m.done(), "adding a route to " + Ipv4Net{dst, prefix}.str());
}

bool Netlink::delete_link(const std::string& name) {
  Message m(RTM_DELLINK, NLM_F_ACK);
  m.fixed(ifinfomsg{});
  m.attr_string(IFLA_IFNAME, name);
  try {
    request(m.done(), "removing link " + name);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::not_found) return false;
    throw;
  }
  return true;
}

UniqueFd new_netns(const std::function<void()>& inside) {
  UniqueFd ns;
  std::exception_ptr failed;
  // A thread of its own: it leaves our namespace for good and ends.
  std::thread([&] {
    try {
      if (::unshare(CLONE_NEWNET) != 0) throw_errno("unshare(CLONE_NEWNET)");
      ns = UniqueFd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
      if (!ns) throw_errno("opening a new network namespace");
      inside();
    } catch (...) {
      failed = std::current_exception();
    }
  }).join();
  if (failed) std::rethrow_exception(failed);
  return ns;
}

EnterNetns::EnterNetns(int netns) {
  own_ = UniqueFd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!own_) throw_errno("opening this thread's network namespace");
  if (::setns(netns, CLONE_NEWNET) != 0) throw_errno("entering a network namespace");
}

EnterNetns::~EnterNetns() {
  // Failing to go back would leave this thread in a box's namespace: nothing can go on safely.
  if (::setns(own_.get(), CLONE_NEWNET) != 0) std::terminate();
}

void write_sysctl(const std::string& key, const std::string& value) {
  std::string path = "/proc/sys/" + key;
  for (size_t i = 10; i < path.size(); ++i) {
    if (path[i] == '.') path[i] = '/';
  }
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw_errno("opening " + path);
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size()))
    throw_errno("writing " + value + " to " + path);
}

}  // namespace pitbox::sys
