// The resolver's tests need root (like network_test): each makes a network of its own (a random
// tag and /24), boxes' namespaces in it, and stand-in upstream servers on 127.0.0.1.
#include "net/resolver.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>

#include "sys/error.h"
#include "sys/netlink.h"
#include "sys/random.h"

namespace pitbox::net {
namespace {

std::string query(const std::string& name, uint16_t type, uint16_t id = 0x1234) {
  std::string q("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", 12);
  q[0] = static_cast<char>(id >> 8);
  q[1] = static_cast<char>(id & 0xff);
  size_t start = 0;
  while (start < name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    q += static_cast<char>(dot - start);
    q += name.substr(start, dot - start);
    start = dot + 1;
  }
  q += '\0';
  q += static_cast<char>(type >> 8);
  q += static_cast<char>(type & 0xff);
  q += std::string("\x00\x01", 2);
  return q;
}

TEST(DnsTest, ReadsQuestionsAndAnswers) {
  std::string q = query("Example.TEST", 1);
  std::string name;
  uint16_t type = 0;
  ASSERT_TRUE(dns::question(q, name, type));
  EXPECT_EQ(name, "example.test");
  EXPECT_EQ(type, 1);
  EXPECT_FALSE(dns::question(q.substr(0, 14), name, type));

  std::string nx = dns::error_reply(q, 3);
  EXPECT_EQ(nx.size(), q.size());
  EXPECT_EQ(nx.substr(0, 2), "\x12\x34");
  EXPECT_EQ(static_cast<uint8_t>(nx[2]) & 0x80, 0x80);  // an answer
  EXPECT_EQ(static_cast<uint8_t>(nx[3]) & 0x0f, 3);     // NXDOMAIN
  EXPECT_TRUE(dns::a_records(nx).empty());

  // An answer: the question, then a CNAME and an A record, their names compressed.
  std::string a = q;
  a[2] = static_cast<char>(0x81);
  a[7] = 2;
  a += std::string("\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x02\xc0\x0c", 14);
  a += std::string("\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\xc6\x12\x00\x03", 16);
  auto records = dns::a_records(a);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(sys::ipv4_str(records[0].first), "198.18.0.3");
  EXPECT_EQ(records[0].second, 300u);
  EXPECT_TRUE(dns::a_records(a.substr(0, a.size() - 3)).empty());  // cut short: nothing
}

TEST(DnsTest, Upstreams) {
  auto servers = resolv_conf_servers("# x\nnameserver 192.0.2.1\nnameserver fd00::1\nsearch x\n");
  ASSERT_EQ(servers.size(), 1u);
  EXPECT_EQ(sys::ipv4_str(servers[0].address), "192.0.2.1");
  EXPECT_EQ(parse_upstream("10.0.0.2:5353", "x").port, 5353);
  EXPECT_THROW(parse_upstream("10.0.0.2:99999", "x"), Error);
  EXPECT_THROW(parse_upstream("10.0.0.0/8", "x"), Error);
}

uint16_t id_of(const std::string& msg) {
  return static_cast<uint16_t>((static_cast<uint8_t>(msg[0]) << 8) | static_cast<uint8_t>(msg[1]));
}
int rcode_of(const std::string& msg) { return static_cast<uint8_t>(msg[3]) & 0x0f; }
bool truncated(const std::string& msg) { return static_cast<uint8_t>(msg[2]) & 0x02; }

std::string framed(const std::string& msg) {
  return std::string{static_cast<char>(msg.size() >> 8), static_cast<char>(msg.size() & 0xff)} +
         msg;
}

// Waits up to 10 s for `fd` to be readable; false when it is not.
bool readable(int fd, int ms = 10000) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, ms) == 1;
}

// Reads exactly `n` bytes (waiting up to 10 s for each piece); "" at the end or on a timeout.
std::string read_exactly(int fd, size_t n) {
  std::string out(n, '\0');
  for (size_t got = 0; got < n;) {
    if (!readable(fd)) return "";
    ssize_t r = ::recv(fd, out.data() + got, n - got, 0);
    if (r <= 0) return "";
    got += static_cast<size_t>(r);
  }
  return out;
}

// One framed message from a TCP socket; "" at the end or on a timeout.
std::string read_framed(int fd) {
  std::string len = read_exactly(fd, 2);
  if (len.empty()) return "";
  return read_exactly(fd,
                      (size_t{static_cast<uint8_t>(len[0])} << 8) | static_cast<uint8_t>(len[1]));
}

// Whether the peer closed the TCP connection `fd` (within 10 s).
bool closed_by_peer(int fd) {
  if (!readable(fd)) return false;
  char c;
  ssize_t r = ::recv(fd, &c, 1, 0);
  return r == 0 || (r < 0 && errno == ECONNRESET);
}

void send_all(int fd, const std::string& data) {
  ASSERT_EQ(::send(fd, data.data(), data.size(), MSG_NOSIGNAL), static_cast<ssize_t>(data.size()));
}

size_t entries(const std::string& dir) {
  size_t n = 0;
  DIR* d = ::opendir(dir.c_str());
  while (d && ::readdir(d)) ++n;
  if (d) ::closedir(d);
  return n;
}

// A stand-in upstream DNS server on 127.0.0.1, UDP and TCP on one port. Each name is answered by
// its rule: an A record, nothing at all (dropped), nothing until release() (held), over UDP a
// truncated answer without records, over TCP nothing. Names without a rule: NXDOMAIN.
class FakeUpstream {
 public:
  struct Rule {
    uint32_t address = 0;
    bool drop = false;
    bool hold = false;
    bool truncate_udp = false;
    bool drop_tcp = false;
  };

  explicit FakeUpstream(std::map<std::string, Rule> rules) : rules_(std::move(rules)) {
    for (int attempt = 0; attempt < 50 && !tcp_; ++attempt) {
      udp_ = sys::UniqueFd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      sockaddr_in at{};
      at.sin_family = AF_INET;
      at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t len = sizeof at;
      if (::bind(udp_.get(), reinterpret_cast<sockaddr*>(&at), sizeof at) != 0 ||
          ::getsockname(udp_.get(), reinterpret_cast<sockaddr*>(&at), &len) != 0) {
        throw_errno("a stand-in upstream's UDP socket");
      }
      port_ = ntohs(at.sin_port);
      sys::UniqueFd tcp(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (::bind(tcp.get(), reinterpret_cast<sockaddr*>(&at), sizeof at) == 0 &&
          ::listen(tcp.get(), 16) == 0) {
        tcp_ = std::move(tcp);  // else the TCP port is taken: another one
      }
    }
    if (!tcp_) throw internal_error("no port for a stand-in upstream");
    wake_ = sys::UniqueFd(::eventfd(0, EFD_CLOEXEC));
    thread_ = std::thread([this] { loop(); });
  }
  ~FakeUpstream() {
    uint64_t one = 1;
    EXPECT_EQ(::write(wake_.get(), &one, sizeof one), 8);
    thread_.join();
  }

  Upstream upstream() const { return {INADDR_LOOPBACK, port_}; }
  // "udp:NAME" or "tcp:NAME" of each question asked, in order.
  std::vector<std::string> asked() {
    std::lock_guard lock(mu_);
    return asked_;
  }
  // Waits up to 10 s until `question` ("udp:NAME") has been asked.
  bool wait_asked(const std::string& question) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] {
      return std::find(asked_.begin(), asked_.end(), question) != asked_.end();
    });
  }
  // Answers the held questions.
  void release() {
    uint64_t two = 2;
    EXPECT_EQ(::write(wake_.get(), &two, sizeof two), 8);
  }

 private:
  struct Held {
    std::string query;
    sockaddr_in from;
  };

  // The answer to `q`; "" for none.
  std::string answer(const std::string& q, bool tcp, const sockaddr_in& from) {
    std::string name;
    uint16_t type = 0;
    if (!dns::question(q, name, type)) return "";
    {
      std::lock_guard lock(mu_);
      asked_.push_back((tcp ? "tcp:" : "udp:") + name);
    }
    cv_.notify_all();
    auto it = rules_.find(name);
    if (it == rules_.end()) return dns::error_reply(q, 3);
    if (it->second.drop || (tcp && it->second.drop_tcp)) return "";
    if (it->second.hold) {
      held_.push_back({q, from});
      return "";
    }
    if (it->second.truncate_udp && !tcp) {
      std::string r = dns::error_reply(q, 0);
      r[2] = static_cast<char>(r[2] | 0x02);
      return r;
    }
    return dns::address_reply(q, it->second.address);
  }

  void loop() {
    std::vector<std::pair<sys::UniqueFd, std::string>> connections;
    std::string buf(65536, '\0');
    for (;;) {
      std::vector<pollfd> fds = {
          {wake_.get(), POLLIN, 0}, {udp_.get(), POLLIN, 0}, {tcp_.get(), POLLIN, 0}};
      for (auto& c : connections) fds.push_back({c.first.get(), POLLIN, 0});
      if (::poll(fds.data(), fds.size(), -1) < 0) continue;
      if (fds[0].revents) {
        uint64_t n = 0;
        if (::read(wake_.get(), &n, sizeof n) != sizeof n || n != 2) return;
        for (auto& h : held_) {
          std::string r = dns::address_reply(h.query, rules_[held_name(h.query)].address);
          ::sendto(udp_.get(), r.data(), r.size(), 0, reinterpret_cast<sockaddr*>(&h.from),
                   sizeof h.from);
        }
        held_.clear();
      }
      if (fds[1].revents) {
        sockaddr_in from{};
        socklen_t len = sizeof from;
        ssize_t n = ::recvfrom(udp_.get(), buf.data(), buf.size(), 0,
                               reinterpret_cast<sockaddr*>(&from), &len);
        if (n > 0) {
          std::string r = answer(buf.substr(0, static_cast<size_t>(n)), false, from);
          if (!r.empty()) {
            ::sendto(udp_.get(), r.data(), r.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
          }
        }
      }
      if (fds[2].revents) {
        connections.emplace_back(
            sys::UniqueFd(::accept4(tcp_.get(), nullptr, nullptr, SOCK_CLOEXEC)), "");
      }
      for (size_t i = 3; i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        auto& [fd, in] = connections[i - 3];
        ssize_t n = ::recv(fd.get(), buf.data(), buf.size(), 0);
        if (n <= 0) {
          fd.reset();
          continue;
        }
        in += buf.substr(0, static_cast<size_t>(n));
        while (in.size() >= 2) {
          size_t len = (size_t{static_cast<uint8_t>(in[0])} << 8) | static_cast<uint8_t>(in[1]);
          if (in.size() < 2 + len) break;
          if (std::string r = answer(in.substr(2, len), true, {}); !r.empty()) {
            std::string out = framed(r);
            if (::send(fd.get(), out.data(), out.size(), MSG_NOSIGNAL) < 0) fd.reset();
          }
          in.erase(0, 2 + len);
        }
      }
      std::erase_if(connections, [](auto& c) { return !c.first; });
    }
  }

  static std::string held_name(const std::string& q) {
    std::string name;
    uint16_t type = 0;
    dns::question(q, name, type);
    return name;
  }

  std::map<std::string, Rule> rules_;
  sys::UniqueFd udp_, tcp_, wake_;
  uint16_t port_ = 0;
  std::vector<Held> held_;  // the thread's
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> asked_;  // under mu_
  std::thread thread_;
};

uint32_t ip(const char* text) { return sys::Ipv4Net::parse(text, "test").addr; }

class ResolverTest : public ::testing::Test {
 protected:
  ResolverTest() : net_(options()) {}
  ~ResolverTest() override {
    for (auto& [slot, box] : boxes_) net_.release(slot);
  }

  static NetworkOptions options() {
    static const char* hex = "0123456789abcdef";
    std::string random = sys::random_bytes(4);
    NetworkOptions o;
    o.tag = "d";
    for (int i = 0; i < 3; ++i) o.tag += hex[static_cast<uint8_t>(random[i]) % 16];
    // Any /24 of 10.240.0.0/12: tests in processes of their own may run at once.
    unsigned r = static_cast<uint8_t>(random[3]) | (static_cast<uint8_t>(random[2]) << 8);
    o.range =
        "10." + std::to_string(240 + (r >> 8) % 16) + "." + std::to_string(r & 0xff) + ".0/24";
    o.nft_helper = PITBOX_NFT_PATH;
    return o;
  }

  // The box in `slot`, with `policy` (none: a namespace whose box has not started).
  uint32_t box(uint32_t slot, std::optional<Policy> policy, const std::string& name = "") {
    boxes_[slot] = net_.prepare(slot);
    if (policy) net_.apply(slot, *policy, name);
    return net_.address_of(slot);
  }
  // A socket in the box's namespace, connected to the resolver.
  sys::UniqueFd socket_in(uint32_t slot, int type) {
    sys::EnterNetns in(boxes_.at(slot).netns.get());
    sys::UniqueFd s(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(53);
    to.sin_addr.s_addr = htonl(net_.gateway());
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
      throw_errno("connecting to the resolver from box " + std::to_string(slot));
    }
    return s;
  }
  // The answer to `q` asked by the box in `slot` over UDP or TCP; "" when none came in 10 s.
  std::string ask(uint32_t slot, bool tcp, const std::string& q) {
    sys::UniqueFd s = socket_in(slot, tcp ? SOCK_STREAM : SOCK_DGRAM);
    if (tcp) {
      send_all(s.get(), framed(q));
      return read_framed(s.get());
    }
    send_all(s.get(), q);
    return receive(s.get());
  }
  // A datagram (within 10 s); "" when none came.
  static std::string receive(int fd) {
    if (!readable(fd)) return "";
    std::string buf(65536, '\0');
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    return n > 0 ? buf.substr(0, static_cast<size_t>(n)) : "";
  }
  // The addresses admitted to the box in `slot` for the names it looked up.
  std::string admitted(uint32_t slot) {
    return Nft(PITBOX_NFT_PATH)
        .run("list set inet " + net_.table() + " dns_" + std::to_string(slot) + "\n");
  }

  Network net_;
  std::map<uint32_t, Attachment> boxes_;
};

TEST_F(ResolverTest, AnswersByPolicyOverUdpAndTcp) {
  FakeUpstream upstream({{"udp.allowed.test", {ip("198.18.0.7")}},
                         {"tcp.allowed.test", {ip("198.18.0.8")}},
                         {"denied.test", {ip("198.18.0.9")}},
                         {"free.test", {ip("198.18.0.10")}}});
  box(1, Policy::from_json({{"allow_domains", {"*.allowed.test"}}}));
  box(2, Policy::from_json("egress"));
  box(3, Policy::from_json("none"));
  box(4, std::nullopt);  // no rules: not a box the resolver knows
  box(5, Policy::from_json({{"policy", "none"}, {"networks", {"team"}}}), "web");
  uint32_t db = box(6, Policy::from_json({{"policy", "none"}, {"networks", {"team"}}}), "db");
  Resolver resolver(net_, {upstream.upstream()});

  for (bool tcp : {false, true}) {
    SCOPED_TRACE(tcp ? "over TCP" : "over UDP");
    std::string name = tcp ? "tcp.allowed.test" : "udp.allowed.test";
    std::string address = tcp ? "198.18.0.8" : "198.18.0.7";
    // An allowed name: the upstream's answer, its address admitted.
    EXPECT_EQ(admitted(1).find(address), std::string::npos);
    std::string r = ask(1, tcp, query(name, 1, 0x0101));
    ASSERT_GE(r.size(), 12u);
    EXPECT_EQ(id_of(r), 0x0101);
    EXPECT_EQ(rcode_of(r), 0);
    auto records = dns::a_records(r);
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(sys::ipv4_str(records[0].first), address);
    EXPECT_NE(admitted(1).find(address), std::string::npos) << admitted(1);
    // Any other name: NXDOMAIN, and the upstream never hears of it.
    r = ask(1, tcp, query("denied.test", 1, 0x0102));
    ASSERT_GE(r.size(), 12u);
    EXPECT_EQ(id_of(r), 0x0102);
    EXPECT_EQ(rcode_of(r), 3);
    // Egress: anything; none: nothing; not a box: nothing.
    r = ask(2, tcp, query("free.test", 1, 0x0103));
    ASSERT_GE(r.size(), 12u);
    EXPECT_EQ(rcode_of(r), 0);
    ASSERT_EQ(dns::a_records(r).size(), 1u);
    EXPECT_EQ(sys::ipv4_str(dns::a_records(r)[0].first), "198.18.0.10");
    EXPECT_EQ(rcode_of(ask(3, tcp, query("free.test", 1))), 5);
    if (tcp) {
      // Not a box: its connection is closed at once (it holds none of the boxes' room).
      sys::UniqueFd s = socket_in(4, SOCK_STREAM);
      EXPECT_TRUE(closed_by_peer(s.get()));
    } else {
      EXPECT_EQ(rcode_of(ask(4, tcp, query("free.test", 1))), 5);
    }
    // A member of a box-to-box network: its peers by name, answered here.
    r = ask(5, tcp, query("db", 1, 0x0104));
    ASSERT_GE(r.size(), 12u);
    EXPECT_EQ(id_of(r), 0x0104);
    ASSERT_EQ(dns::a_records(r).size(), 1u);
    EXPECT_EQ(dns::a_records(r)[0].first, db);
    // Not a question: FORMERR; two questions: FORMERR; not a standard query (an UPDATE, say):
    // NOTIMP, and the upstream hears of none of them. An answer sent to the resolver: dropped.
    std::string bad = query("free.test", 1).substr(0, 14);
    EXPECT_EQ(rcode_of(ask(2, tcp, bad)), 1);
    std::string two = query("free.test", 1);
    two[5] = 2;
    EXPECT_EQ(rcode_of(ask(2, tcp, two)), 1);
    std::string update = query("free.test", 1);
    update[2] = static_cast<char>(5 << 3);
    EXPECT_EQ(rcode_of(ask(2, tcp, update)), 4);
    if (!tcp) {
      sys::UniqueFd s = socket_in(2, SOCK_DGRAM);
      std::string answer = query("free.test", 1);
      answer[2] = static_cast<char>(0x80);
      send_all(s.get(), answer);
      send_all(s.get(), query("free.test", 1, 0x0105));
      EXPECT_EQ(id_of(receive(s.get())), 0x0105);  // the answer got no reply
    }
  }
  std::vector<std::string> asked = upstream.asked();
  EXPECT_EQ(asked, (std::vector<std::string>{"udp:udp.allowed.test", "udp:free.test",
                                             "udp:free.test",  // the question after the answer
                                             "udp:tcp.allowed.test", "udp:free.test"}));
}

// A slow upstream keeps only its own questions waiting: one that it holds, asked first, is
// answered after a second one, over UDP and on one TCP connection alike. And the resolver
// leaves no thread or fd behind, questions in flight and connections open or not.
TEST_F(ResolverTest, AnswersWhileAnUpstreamIsSlow) {
  FakeUpstream upstream({{"slow.test", {ip("198.18.0.1"), false, true}},
                         {"fast.test", {ip("198.18.0.2")}},
                         {"never.test", {0, true}}});
  box(1, Policy::from_json("egress"));
  sys::UniqueFd udp = socket_in(1, SOCK_DGRAM);
  sys::UniqueFd tcp2;
  size_t fds = entries("/proc/self/fd"), threads = entries("/proc/self/task");
  {
    ResolverLimits limits;
    limits.upstream_timeout = std::chrono::seconds(60);  // "slow" is never timed out here
    Resolver resolver(net_, {upstream.upstream()}, limits);
    send_all(udp.get(), query("slow.test", 1, 1));
    ASSERT_TRUE(upstream.wait_asked("udp:slow.test"));
    send_all(udp.get(), query("fast.test", 1, 2));
    std::string r = receive(udp.get());
    ASSERT_GE(r.size(), 12u);
    EXPECT_EQ(id_of(r), 2);  // fast.test, while slow.test waits
    ASSERT_EQ(dns::a_records(r).size(), 1u);
    EXPECT_EQ(sys::ipv4_str(dns::a_records(r)[0].first), "198.18.0.2");
    upstream.release();
    r = receive(udp.get());
    ASSERT_GE(r.size(), 12u);
    EXPECT_EQ(id_of(r), 1);
    ASSERT_EQ(dns::a_records(r).size(), 1u);
    EXPECT_EQ(sys::ipv4_str(dns::a_records(r)[0].first), "198.18.0.1");

    // Questions in flight and a connection open as the resolver goes.
    tcp2 = socket_in(1, SOCK_STREAM);
    send_all(tcp2.get(), framed(query("never.test", 1, 3)));
    send_all(udp.get(), query("never.test", 1, 4));
    ASSERT_TRUE(upstream.wait_asked("udp:never.test"));
  }
  EXPECT_TRUE(closed_by_peer(tcp2.get()));
  tcp2.reset();
  EXPECT_EQ(entries("/proc/self/fd"), fds);
  EXPECT_EQ(entries("/proc/self/task"), threads);
}

// An answer that comes after the box's policy stopped allowing the name is neither admitted nor
// passed on (a box that went, its slot taken by another, is the same case).
TEST_F(ResolverTest, AnswersOutlivingThePolicyAreDropped) {
  FakeUpstream upstream({{"held.allowed.test", {ip("198.18.0.11"), false, true}},
                         {"other.test", {ip("198.18.0.12")}}});
  box(1, Policy::from_json({{"allow_domains", {"*.allowed.test"}}}));
  ResolverLimits limits;
  limits.upstream_timeout = std::chrono::seconds(60);
  Resolver resolver(net_, {upstream.upstream()}, limits);
  sys::UniqueFd udp = socket_in(1, SOCK_DGRAM);
  send_all(udp.get(), query("held.allowed.test", 1, 7));
  ASSERT_TRUE(upstream.wait_asked("udp:held.allowed.test"));
  net_.apply(1, Policy::from_json({{"allow_domains", {"other.test"}}}), "");
  upstream.release();
  // The held answer goes back first; what comes is the answer to a question asked after it.
  send_all(udp.get(), query("other.test", 1, 8));
  std::string r = receive(udp.get());
  ASSERT_GE(r.size(), 12u);
  EXPECT_EQ(id_of(r), 8);
  EXPECT_EQ(admitted(1).find("198.18.0.11"), std::string::npos) << admitted(1);
  EXPECT_NE(admitted(1).find("198.18.0.12"), std::string::npos) << admitted(1);
}

// Several questions on one connection, answered as they come (the second before the first).
TEST_F(ResolverTest, SeveralQuestionsOnOneConnection) {
  FakeUpstream upstream({{"slow.test", {ip("198.18.0.1"), false, true}},
                         {"fast.test", {ip("198.18.0.2")}},
                         {"other.test", {ip("198.18.0.3")}}});
  box(1, Policy::from_json("egress"));
  ResolverLimits limits;
  limits.upstream_timeout = std::chrono::seconds(60);
  Resolver resolver(net_, {upstream.upstream()}, limits);
  sys::UniqueFd s = socket_in(1, SOCK_STREAM);
  // Two in one write.
  send_all(s.get(), framed(query("slow.test", 1, 1)) + framed(query("fast.test", 1, 2)));
  std::string r = read_framed(s.get());
  ASSERT_GE(r.size(), 12u);
  EXPECT_EQ(id_of(r), 2);
  // Then one more.
  send_all(s.get(), framed(query("other.test", 1, 3)));
  r = read_framed(s.get());
  ASSERT_GE(r.size(), 12u);
  EXPECT_EQ(id_of(r), 3);
  ASSERT_EQ(dns::a_records(r).size(), 1u);
  EXPECT_EQ(sys::ipv4_str(dns::a_records(r)[0].first), "198.18.0.3");
  upstream.release();
  r = read_framed(s.get());
  ASSERT_GE(r.size(), 12u);
  EXPECT_EQ(id_of(r), 1);
  ASSERT_EQ(dns::a_records(r).size(), 1u);
  EXPECT_EQ(sys::ipv4_str(dns::a_records(r)[0].first), "198.18.0.1");
  // A message split over several writes.
  std::string q = framed(query("fast.test", 1, 4));
  send_all(s.get(), q.substr(0, 1));
  send_all(s.get(), q.substr(1, 9));
  send_all(s.get(), q.substr(10));
  r = read_framed(s.get());
  ASSERT_GE(r.size(), 12u);
  EXPECT_EQ(id_of(r), 4);
}

// A truncated answer goes as it is to a box asking over UDP; for one asking over TCP the
// upstream is asked again over TCP (and the truncated answer is all there is when that fails).
TEST_F(ResolverTest, TruncatedAnswersAreAskedAgainOverTcp) {
  FakeUpstream upstream({{"big.test", {ip("198.18.0.5"), false, false, true}},
                         {"huge.test", {ip("198.18.0.6"), false, false, true, true}}});
  box(1, Policy::from_json("egress"));
  ResolverLimits limits;
  limits.upstream_timeout = std::chrono::milliseconds(300);
  Resolver resolver(net_, {upstream.upstream()}, limits);
  std::string r = ask(1, false, query("big.test", 1));
  ASSERT_GE(r.size(), 12u);
  EXPECT_TRUE(truncated(r));
  EXPECT_TRUE(dns::a_records(r).empty());
  EXPECT_EQ(upstream.asked(), (std::vector<std::string>{"udp:big.test"}));
  r = ask(1, true, query("big.test", 1, 0x4242));
  ASSERT_GE(r.size(), 12u);
  EXPECT_EQ(id_of(r), 0x4242);
  EXPECT_FALSE(truncated(r));
  ASSERT_EQ(dns::a_records(r).size(), 1u);
  EXPECT_EQ(sys::ipv4_str(dns::a_records(r)[0].first), "198.18.0.5");
  EXPECT_EQ(upstream.asked(),
            (std::vector<std::string>{"udp:big.test", "udp:big.test", "tcp:big.test"}));
  r = ask(1, true, query("huge.test", 1, 0x4343));
  ASSERT_GE(r.size(), 12u);
  EXPECT_EQ(id_of(r), 0x4343);
  EXPECT_TRUE(truncated(r));
  EXPECT_EQ(rcode_of(r), 0);
  EXPECT_TRUE(upstream.wait_asked("tcp:huge.test"));
}

// An upstream that refuses (nothing on its port) or does not answer in time: the next one;
// none answering: SERVFAIL.
TEST_F(ResolverTest, FallsThroughToTheNextUpstream) {
  FakeUpstream silent({{"a.test", {0, true}}, {"b.test", {0, true}}});
  FakeUpstream good({{"a.test", {ip("198.18.0.6")}}, {"b.test", {0, true}}});
  Upstream closed;
  {
    FakeUpstream gone({});
    closed = gone.upstream();
  }
  box(1, Policy::from_json("egress"));
  ResolverLimits limits;
  limits.upstream_timeout = std::chrono::milliseconds(200);
  Resolver resolver(net_, {closed, silent.upstream(), good.upstream()}, limits);
  for (bool tcp : {false, true}) {
    SCOPED_TRACE(tcp ? "over TCP" : "over UDP");
    std::string r = ask(1, tcp, query("a.test", 1, 7));
    ASSERT_GE(r.size(), 12u);
    EXPECT_EQ(id_of(r), 7);
    ASSERT_EQ(dns::a_records(r).size(), 1u);
    EXPECT_EQ(sys::ipv4_str(dns::a_records(r)[0].first), "198.18.0.6");
    r = ask(1, tcp, query("b.test", 1, 8));
    ASSERT_GE(r.size(), 12u);
    EXPECT_EQ(id_of(r), 8);
    EXPECT_EQ(rcode_of(r), 2);
  }
  EXPECT_EQ(silent.asked(),
            (std::vector<std::string>{"udp:a.test", "udp:b.test", "udp:a.test", "udp:b.test"}));
}

// What one box may hold of the resolver: questions in flight (beyond: SERVFAIL at once) and
// connections (beyond: closed at once; idle ones closed).
TEST_F(ResolverTest, Limits) {
  FakeUpstream upstream({{"slow.test", {0, true}}, {"fast.test", {ip("198.18.0.2")}}});
  box(1, Policy::from_json("egress"));
  box(2, Policy::from_json("egress"));
  ResolverLimits limits;
  limits.upstream_timeout = std::chrono::seconds(60);
  limits.in_flight = 2;
  limits.in_flight_per_box = 1;
  limits.connections_per_box = 1;
  limits.idle = std::chrono::milliseconds(300);
  Resolver resolver(net_, {upstream.upstream()}, limits);
  sys::UniqueFd one = socket_in(1, SOCK_DGRAM);
  send_all(one.get(), query("slow.test", 1, 1));
  ASSERT_TRUE(upstream.wait_asked("udp:slow.test"));
  // Box 1 has one in flight: no more. Box 2 has its own.
  EXPECT_EQ(rcode_of(ask(1, false, query("fast.test", 1))), 2);
  EXPECT_EQ(rcode_of(ask(2, false, query("fast.test", 1))), 0);
  sys::UniqueFd two = socket_in(2, SOCK_DGRAM);
  send_all(two.get(), query("slow.test", 1, 2));
  ASSERT_TRUE(upstream.wait_asked("udp:slow.test"));
  // Two in flight in all: none for anyone.
  EXPECT_EQ(rcode_of(ask(2, true, query("fast.test", 1))), 2);
  std::vector<std::string> asked = upstream.asked();
  EXPECT_EQ(std::count(asked.begin(), asked.end(), "udp:fast.test"), 1);

  // A box's second connection is closed at once; its first once it has been idle.
  sys::UniqueFd first = socket_in(1, SOCK_STREAM);
  send_all(first.get(), framed(query("fast.test", 1, 3)));
  std::string r = read_framed(first.get());  // served (SERVFAIL: two are in flight)
  ASSERT_GE(r.size(), 12u);
  EXPECT_EQ(id_of(r), 3);
  sys::UniqueFd second = socket_in(1, SOCK_STREAM);
  EXPECT_TRUE(closed_by_peer(second.get()));
  EXPECT_TRUE(closed_by_peer(first.get()));

  // Bytes that trickle in without making a question do not keep a connection open.
  sys::UniqueFd trickle = socket_in(2, SOCK_STREAM);
  std::string partial = framed(query("fast.test", 1, 4));
  bool closed = false;
  for (size_t i = 0; i + 1 < partial.size() && !closed; ++i) {
    closed =
        ::send(trickle.get(), &partial[i], 1, MSG_NOSIGNAL) != 1 || readable(trickle.get(), 100);
  }
  EXPECT_TRUE(closed);  // long before the whole question came
}

}  // namespace
}  // namespace pitbox::net
