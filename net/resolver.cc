#include "net/resolver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <sstream>

#include "sys/error.h"
#include "sys/log.h"
#include "sys/random.h"

namespace pitbox::net {

namespace dns {

namespace {

uint16_t u16(const std::string& m, size_t at) {
  return static_cast<uint16_t>((static_cast<uint8_t>(m[at]) << 8) |
                               static_cast<uint8_t>(m[at + 1]));
}

uint32_t u32(const std::string& m, size_t at) {
  return (uint32_t{u16(m, at)} << 16) | u16(m, at + 2);
}

// Skips a (possibly compressed) name; returns the offset after it, or npos.
size_t skip_name(const std::string& m, size_t at) {
  for (int labels = 0; labels < 128 && at < m.size(); ++labels) {
    auto len = static_cast<uint8_t>(m[at]);
    if (len == 0) return at + 1;
    if ((len & 0xc0) == 0xc0) return at + 2 <= m.size() ? at + 2 : std::string::npos;
    at += 1 + len;
  }
  return std::string::npos;
}

}  // namespace

bool question(const std::string& msg, std::string& name, uint16_t& type) {
  if (msg.size() < 12 || u16(msg, 4) < 1) return false;
  size_t at = 12;
  name.clear();
  for (;;) {
    if (at >= msg.size()) return false;
    auto len = static_cast<uint8_t>(msg[at]);
    if (len == 0) break;
    if (len > 63 || at + 1 + len > msg.size()) return false;  // no pointers in a question
    if (!name.empty()) name += '.';
    for (size_t i = 0; i < len; ++i) {
      name += static_cast<char>(std::tolower(static_cast<unsigned char>(msg[at + 1 + i])));
    }
    at += 1 + len;
  }
  if (at + 5 > msg.size()) return false;
  type = u16(msg, at + 1);
  return true;
}

std::string error_reply(const std::string& query, int rcode) {
  size_t end = skip_name(query, 12);
  std::string r = query.substr(0, std::min(query.size(), end == std::string::npos ? 12 : end + 4));
  if (r.size() < 12) r.resize(12, '\0');
  r[2] = static_cast<char>(0x80 | (query[2] & 0x79));  // QR, the opcode and RD of the query
  r[3] = static_cast<char>(0x80 | rcode);              // RA, the code
  r[4] = 0;
  r[5] = end == std::string::npos ? 0 : 1;  // the question, when it could be read
  for (int i = 6; i < 12; ++i) r[i] = 0;
  return r;
}

std::string address_reply(const std::string& query, uint32_t address) {
  std::string r = error_reply(query, 0);
  if (address == 0) return r;  // the name exists, with no record of the type asked
  r[7] = 1;
  r += std::string("\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x05\x00\x04", 12);
  for (int shift : {24, 16, 8, 0}) r += static_cast<char>((address >> shift) & 0xff);
  return r;
}

std::vector<std::pair<uint32_t, uint32_t>> a_records(const std::string& msg) {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  if (msg.size() < 12) return out;
  size_t at = 12;
  for (uint16_t q = 0, n = u16(msg, 4); q < n; ++q) {
    at = skip_name(msg, at);
    if (at == std::string::npos || at + 4 > msg.size()) return out;
    at += 4;
  }
  for (uint16_t a = 0, n = u16(msg, 6); a < n; ++a) {
    at = skip_name(msg, at);
    if (at == std::string::npos || at + 10 > msg.size()) return out;
    uint16_t type = u16(msg, at), klass = u16(msg, at + 2), len = u16(msg, at + 8);
    uint32_t ttl = u32(msg, at + 4);
    at += 10;
    if (at + len > msg.size()) return out;
    if (type == 1 && klass == 1 && len == 4) out.emplace_back(u32(msg, at), ttl);
    at += len;
  }
  return out;
}

}  // namespace dns

Upstream parse_upstream(const std::string& text, const std::string& field) {
  Upstream u;
  std::string addr = text;
  if (size_t colon = text.find(':'); colon != std::string::npos) {
    addr = text.substr(0, colon);
    std::string port = text.substr(colon + 1);
    if (port.empty() || port.size() > 5 ||
        port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) < 1 ||
        std::stoi(port) > 65535) {
      throw invalid_argument(field + ": \"" + text + "\" has no valid port");
    }
    u.port = static_cast<uint16_t>(std::stoi(port));
  }
  sys::Ipv4Net n = sys::Ipv4Net::parse(addr, field);
  if (n.prefix != 32) throw invalid_argument(field + ": \"" + text + "\" is a range, not a server");
  u.address = n.addr;
  return u;
}

std::vector<Upstream> resolv_conf_servers(const std::string& text) {
  std::vector<Upstream> out;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string key, value;
    if (!(words >> key >> value) || key != "nameserver") continue;
    try {
      out.push_back(parse_upstream(value, "nameserver"));
    } catch (const Error&) {
      // IPv6 servers: boxes' questions go over IPv4 here.
    }
  }
  return out;
}

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxMessage = 65535;
constexpr size_t kTcpInFlightPerConnection = 16;  // more questions wait in the connection
constexpr size_t kTcpMaxPendingOut = 2 * (kMaxMessage + 2);  // answers the box has not read

sockaddr_in ipv4(uint32_t address, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(address);
  return a;
}

std::string framed(const std::string& msg) {
  std::string out;
  out.reserve(msg.size() + 2);
  out += static_cast<char>(msg.size() >> 8);
  out += static_cast<char>(msg.size() & 0xff);
  return out + msg;
}

// The length of the first framed message in `buf`, once all of it is there.
std::optional<size_t> frame(const std::string& buf) {
  if (buf.size() < 2) return std::nullopt;
  size_t len = (size_t{static_cast<uint8_t>(buf[0])} << 8) | static_cast<uint8_t>(buf[1]);
  if (buf.size() < 2 + len) return std::nullopt;
  return len;
}

// Writes what it can of `out` to a non-blocking socket; false when the socket failed.
bool flush(int fd, std::string& out) {
  while (!out.empty()) {
    ssize_t n = ::send(fd, out.data(), out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    out.erase(0, static_cast<size_t>(n));
  }
  return true;
}

// Reads what there is (at most `room` bytes) onto `in`; false at the end or on an error.
bool fill(int fd, std::string& in, size_t room) {
  if (room == 0) return true;
  size_t had = in.size();
  in.resize(had + room);
  ssize_t n = ::recv(fd, in.data() + had, room, MSG_DONTWAIT);
  int err = errno;
  in.resize(had + static_cast<size_t>(std::max<ssize_t>(n, 0)));
  return n > 0 || (n < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR));
}

}  // namespace

// The resolver's thread and all it holds: it ends with the thread, closing every socket.
class Resolver::Loop {
 public:
  explicit Loop(Resolver& r) : r_(r), buf_(kMaxMessage + 1, '\0') {}
  void run();

 private:
  // Who asked: the UDP address to answer, or a TCP connection (by its serial).
  struct Asker {
    uint32_t address = 0;
    uint16_t port = 0;
    uint64_t connection = 0;  // 0: over UDP
  };
  // A question forwarded upstream: one try (an upstream, over UDP or TCP) at a time.
  struct Question {
    std::string query;  // as the box asked it
    std::string name;
    uint16_t type = 0;
    Asker asker;
    std::optional<uint32_t> admit;  // the slot of a box whose answers are admitted
    size_t upstream = 0;
    bool tcp = false;
    uint16_t id = 0;  // the id the upstream sees
    sys::UniqueFd socket;
    bool connected = false;  // TCP
    std::string out, in;     // TCP
    std::string truncated;   // the UDP answer, while it is asked again over TCP
    Clock::time_point deadline;
  };
  struct Connection {
    sys::UniqueFd socket;
    uint32_t address = 0;
    std::string in, out;
    size_t in_flight = 0;
    bool closing = false;      // the box is done sending, or something failed
    Clock::time_point active;  // accepted, or its last whole question (trickled bytes do not count)
  };

  void receive_udp();
  void accept_tcp();
  void on_connection(uint64_t serial, short revents);
  void on_question(uint64_t serial, short revents);
  void serve(Connection& c, uint64_t serial);
  void expire();

  void ask(const std::string& query, const Asker& asker);
  void forward(const std::string& query, std::string name, uint16_t type, const Asker& asker,
               std::optional<uint32_t> admit);
  // Starts the next try at or after question.upstream (UDP unless `tcp`); when none is left,
  // answers SERVFAIL (or a truncated answer that came) and ends the question.
  void start(uint64_t serial, Question& q);
  void next(uint64_t serial, Question& q);
  bool matches(const Question& q, const std::string& answer) const;
  void got(uint64_t serial, Question& q, std::string answer);
  void finish(uint64_t serial, std::string answer);
  void reply(const Asker& asker, const std::string& msg);
  size_t in_flight_of(uint32_t address) const;
  size_t connections_of(uint32_t address) const;

  Resolver& r_;
  std::string buf_;
  uint64_t serial_ = 0;
  std::map<uint64_t, Question> questions_;
  std::map<uint64_t, Connection> connections_;
  Clock::time_point accept_paused_until_;  // out of fds: the listener waits until then
};

Resolver::Resolver(Network& network, std::vector<Upstream> upstreams, ResolverLimits limits)
    : network_(network), upstreams_(std::move(upstreams)), limits_(limits) {
  std::string at = sys::ipv4_str(network_.gateway()) + ":53";
  sockaddr_in gateway = ipv4(network_.gateway(), 53);
  int one = 1;
  udp_ = sys::UniqueFd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!udp_) throw_errno("the DNS resolver's UDP socket");
  // The gateway's address exists once the first box's link does.
  ::setsockopt(udp_.get(), IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
  if (::bind(udp_.get(), reinterpret_cast<sockaddr*>(&gateway), sizeof gateway) != 0) {
    throw_errno("binding the DNS resolver to " + at + " (UDP)");
  }
  tcp_ = sys::UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!tcp_) throw_errno("the DNS resolver's TCP socket");
  ::setsockopt(tcp_.get(), IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
  ::setsockopt(tcp_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(tcp_.get(), reinterpret_cast<sockaddr*>(&gateway), sizeof gateway) != 0) {
    throw_errno("binding the DNS resolver to " + at + " (TCP)");
  }
  if (::listen(tcp_.get(), 64) != 0) throw_errno("listening on " + at + " (TCP)");
  wake_ = sys::UniqueFd(::eventfd(0, EFD_CLOEXEC));
  if (!wake_) throw_errno("eventfd");
  thread_ = std::thread([this] { Loop(*this).run(); });
}

Resolver::~Resolver() {
  uint64_t one = 1;
  if (::write(wake_.get(), &one, sizeof one) < 0) {
  }
  thread_.join();
}

void Resolver::Loop::run() {
  // What each pollfd past the first three is: a connection or a question, by serial.
  std::vector<pollfd> fds;
  std::vector<std::pair<bool, uint64_t>> what;
  for (;;) {
    auto now = Clock::now();
    std::optional<Clock::time_point> wake_at;
    auto until = [&](Clock::time_point t) { wake_at = wake_at ? std::min(*wake_at, t) : t; };
    bool accepting = now >= accept_paused_until_;
    if (!accepting) until(accept_paused_until_);
    fds.assign({{r_.wake_.get(), POLLIN, 0},
                {r_.udp_.get(), POLLIN, 0},
                {r_.tcp_.get(), static_cast<short>(accepting ? POLLIN : 0), 0}});
    what.clear();
    for (auto& [serial, c] : connections_) {
      short events = 0;
      if (!c.closing && !frame(c.in)) events |= POLLIN;
      if (!c.out.empty()) events |= POLLOUT;
      fds.push_back({c.socket.get(), events, 0});
      what.emplace_back(true, serial);
      if (c.in_flight == 0) until(c.active + r_.limits_.idle);
    }
    for (auto& [serial, q] : questions_) {
      short events = POLLIN;
      if (q.tcp && (!q.connected || !q.out.empty())) events |= POLLOUT;
      fds.push_back({q.socket.get(), events, 0});
      what.emplace_back(false, serial);
      until(q.deadline);
    }
    int timeout = -1;
    if (wake_at) {
      auto ms = std::chrono::ceil<std::chrono::milliseconds>(*wake_at - now).count();
      timeout = static_cast<int>(std::clamp<int64_t>(ms, 0, 60000));
    }
    if (::poll(fds.data(), fds.size(), timeout) < 0) continue;
    if (fds[0].revents) return;
    try {
      if (fds[1].revents) receive_udp();
      if (fds[2].revents) accept_tcp();
      for (size_t i = 3; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        auto [is_connection, serial] = what[i - 3];
        if (is_connection) {
          on_connection(serial, fds[i].revents);
        } else {
          on_question(serial, fds[i].revents);
        }
      }
      expire();
      for (auto it = connections_.begin(); it != connections_.end();) {
        serve(it->second, it->first);
        Connection& c = it->second;
        bool done = c.closing && c.in_flight == 0 && (c.out.empty() || !c.socket);
        it = done ? connections_.erase(it) : std::next(it);
      }
    } catch (const std::exception& e) {
      sys::log(sys::LogLevel::warn, "the DNS resolver failed", {{"error", e.what()}});
    }
  }
}

void Resolver::Loop::receive_udp() {
  for (int i = 0; i < 64; ++i) {  // then the others' turn
    sockaddr_in from{};
    socklen_t len = sizeof from;
    ssize_t n = ::recvfrom(r_.udp_.get(), buf_.data(), buf_.size(), MSG_DONTWAIT,
                           reinterpret_cast<sockaddr*>(&from), &len);
    if (n < 0) return;
    ask(buf_.substr(0, static_cast<size_t>(n)),
        {ntohl(from.sin_addr.s_addr), ntohs(from.sin_port), 0});
  }
}

void Resolver::Loop::accept_tcp() {
  for (int i = 0; i < 16; ++i) {
    sockaddr_in from{};
    socklen_t len = sizeof from;
    sys::UniqueFd s(::accept4(r_.tcp_.get(), reinterpret_cast<sockaddr*>(&from), &len,
                              SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!s) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        accept_paused_until_ = Clock::now() + std::chrono::milliseconds(100);  // not a spin
      }
      return;
    }
    uint32_t address = ntohl(from.sin_addr.s_addr);
    if (!r_.network_.box_at(address) || connections_.size() >= r_.limits_.connections ||
        connections_of(address) >= r_.limits_.connections_per_box) {
      continue;  // closed: the box asks again later, or over UDP
    }
    Connection& c = connections_[++serial_];
    c.socket = std::move(s);
    c.address = address;
    c.active = Clock::now();
  }
}

void Resolver::Loop::on_connection(uint64_t serial, short revents) {
  auto it = connections_.find(serial);
  if (it == connections_.end()) return;
  Connection& c = it->second;
  if (revents & (POLLERR | POLLNVAL | POLLHUP)) {  // reset: nothing more goes either way
    c.closing = true;
    c.socket.reset();
    c.out.clear();
    return;
  }
  if ((revents & POLLOUT) && !c.out.empty()) {
    size_t had = c.out.size();
    if (!flush(c.socket.get(), c.out)) {
      c.closing = true;
      c.socket.reset();
      c.out.clear();
      return;
    }
    if (c.out.size() != had) c.active = Clock::now();
  }
  if ((revents & POLLIN) && !c.closing && !frame(c.in)) {
    // Nothing is read while a whole message waits: `in` holds less than one and what came.
    size_t room = 2 + kMaxMessage - c.in.size();
    if (!fill(c.socket.get(), c.in, std::min<size_t>(room, 16384))) c.closing = true;
  }
}

// Asks the questions waiting in a connection, as many as may be in flight at once.
void Resolver::Loop::serve(Connection& c, uint64_t serial) {
  while (c.socket && c.in_flight < kTcpInFlightPerConnection && c.out.size() < kTcpMaxPendingOut) {
    std::optional<size_t> len = frame(c.in);
    if (!len) break;
    std::string query = c.in.substr(2, *len);
    c.in.erase(0, 2 + *len);
    c.active = Clock::now();
    ask(query, {c.address, 0, serial});
  }
  if (c.socket && !flush(c.socket.get(), c.out)) {
    c.closing = true;
    c.socket.reset();
    c.out.clear();
  }
}

void Resolver::Loop::expire() {
  auto now = Clock::now();
  for (auto it = questions_.begin(); it != questions_.end();) {
    auto serial = it->first;
    Question& q = it->second;
    ++it;  // next() may end this question (never another)
    if (q.deadline <= now) next(serial, q);
  }
  for (auto& [serial, c] : connections_) {
    if (c.in_flight == 0 && c.active + r_.limits_.idle <= now) {
      c.closing = true;
      c.socket.reset();
      c.out.clear();
    }
  }
}

size_t Resolver::Loop::in_flight_of(uint32_t address) const {
  return static_cast<size_t>(std::count_if(questions_.begin(), questions_.end(), [&](auto& q) {
    return q.second.asker.address == address;
  }));
}

size_t Resolver::Loop::connections_of(uint32_t address) const {
  return static_cast<size_t>(std::count_if(connections_.begin(), connections_.end(),
                                           [&](auto& c) { return c.second.address == address; }));
}

namespace {
bool domain_allowed(const Policy& policy, const std::string& name) {
  return std::any_of(policy.allow_domains.begin(), policy.allow_domains.end(),
                     [&](const std::string& p) { return domain_matches(p, name); });
}
}  // namespace

// The policy: what a box may ask, and what is answered here.
void Resolver::Loop::ask(const std::string& query, const Asker& asker) {
  try {
    std::string name;
    uint16_t type = 0;
    if (query.size() < 12 || (query[2] & 0x80)) return;  // too short, or an answer: dropped
    std::optional<std::pair<uint32_t, Policy>> box = r_.network_.box_at(asker.address);
    if ((query[2] >> 3 & 0x0f) != 0) {
      reply(asker, dns::error_reply(query, 4));  // NOTIMP: only standard queries go on
    } else if (query[4] != 0 || query[5] != 1 || !dns::question(query, name, type)) {
      reply(asker, dns::error_reply(query, 1));  // FORMERR: exactly one question
    } else if (!box) {
      reply(asker, dns::error_reply(query, 5));
    } else if (auto peer = r_.network_.peer(box->first, name)) {
      reply(asker, dns::address_reply(query, type == 1 ? *peer : 0));
    } else if (!box->second.allow_domains.empty()) {
      if (!domain_allowed(box->second, name)) {
        reply(asker, dns::error_reply(query, 3));
      } else {
        forward(query, name, type, asker, box->first);  // its A records admitted
      }
    } else if (box->second.mode == Policy::Mode::none || box->second.has_allow_list()) {
      reply(asker, dns::error_reply(query, 5));  // nothing to look up: only listed addresses pass
    } else {
      forward(query, name, type, asker, std::nullopt);
    }
  } catch (const std::exception& e) {
    sys::log(sys::LogLevel::warn, "the DNS resolver failed a question", {{"error", e.what()}});
  }
}

void Resolver::Loop::forward(const std::string& query, std::string name, uint16_t type,
                             const Asker& asker, std::optional<uint32_t> admit) {
  if (questions_.size() >= r_.limits_.in_flight ||
      in_flight_of(asker.address) >= r_.limits_.in_flight_per_box) {
    reply(asker, dns::error_reply(query, 2));  // SERVFAIL: too many at once
    return;
  }
  uint64_t serial = ++serial_;
  Question& q = questions_[serial];
  q.query = query;
  q.name = std::move(name);
  q.type = type;
  q.asker = asker;
  q.admit = admit;
  if (auto c = connections_.find(asker.connection); c != connections_.end()) ++c->second.in_flight;
  start(serial, q);
}

void Resolver::Loop::start(uint64_t serial, Question& q) {
  for (; q.upstream < r_.upstreams_.size(); ++q.upstream, q.tcp = false) {
    const Upstream& u = r_.upstreams_[q.upstream];
    std::string id = sys::random_bytes(2);
    q.id = static_cast<uint16_t>((static_cast<uint8_t>(id[0]) << 8) | static_cast<uint8_t>(id[1]));
    std::string msg = q.query;
    msg[0] = id[0];
    msg[1] = id[1];
    q.connected = false;
    q.in.clear();
    q.out.clear();
    q.socket = sys::UniqueFd(
        ::socket(AF_INET, (q.tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!q.socket) {
      sys::log(sys::LogLevel::warn, "the DNS resolver has no socket for an upstream",
               {{"error", std::strerror(errno)}});
      continue;
    }
    sockaddr_in to = ipv4(u.address, u.port);
    // Connected: the kernel passes on only what comes from the upstream's address and port.
    if (::connect(q.socket.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) != 0 &&
        !(q.tcp && errno == EINPROGRESS)) {
      continue;
    }
    if (q.tcp) {
      q.out = framed(msg);
    } else if (::send(q.socket.get(), msg.data(), msg.size(), MSG_DONTWAIT) < 0) {
      continue;
    }
    q.deadline = Clock::now() + r_.limits_.upstream_timeout;
    return;
  }
  finish(serial, std::move(q.truncated));
}

// This try failed: the next upstream, over UDP.
void Resolver::Loop::next(uint64_t serial, Question& q) {
  ++q.upstream;
  q.tcp = false;
  start(serial, q);
}

bool Resolver::Loop::matches(const Question& q, const std::string& answer) const {
  if (answer.size() < 12 || static_cast<uint8_t>(answer[0]) != (q.id >> 8) ||
      static_cast<uint8_t>(answer[1]) != (q.id & 0xff) || !(answer[2] & 0x80)) {
    return false;
  }
  if (answer[4] == 0 && answer[5] == 0) return true;  // no question (some errors): by its id
  std::string name;
  uint16_t type = 0;
  return dns::question(answer, name, type) && name == q.name && type == q.type;
}

void Resolver::Loop::on_question(uint64_t serial, short revents) {
  auto it = questions_.find(serial);
  if (it == questions_.end()) return;
  Question& q = it->second;
  int fd = q.socket.get();
  if (!q.tcp) {
    for (;;) {
      ssize_t n = ::recv(fd, buf_.data(), buf_.size(), MSG_DONTWAIT);
      if (n < 0) {
        // Refused (ICMP): the next upstream at once.
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) next(serial, q);
        return;
      }
      std::string answer = buf_.substr(0, static_cast<size_t>(n));
      if (matches(q, answer)) return got(serial, q, std::move(answer));
      // Else a stray or forged datagram: still waiting.
    }
  }
  if (revents & POLLOUT) {
    if (!q.connected) {
      int err = 0;
      socklen_t len = sizeof err;
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        return next(serial, q);
      }
      q.connected = true;
    }
    if (!flush(fd, q.out)) return next(serial, q);
  }
  if (revents & (POLLIN | POLLHUP | POLLERR)) {
    if (!fill(fd, q.in, 2 + kMaxMessage - q.in.size())) {
      if (!frame(q.in)) return next(serial, q);
    }
    if (std::optional<size_t> len = frame(q.in)) {
      std::string answer = q.in.substr(2, *len);
      if (!matches(q, answer)) return next(serial, q);
      got(serial, q, std::move(answer));
    }
  }
}

void Resolver::Loop::got(uint64_t serial, Question& q, std::string answer) {
  bool truncated = answer[2] & 0x02;
  if (truncated && !q.tcp && q.asker.connection) {
    q.tcp = true;  // the same upstream, over TCP
    q.truncated = std::move(answer);
    start(serial, q);
    return;
  }
  finish(serial, std::move(answer));
}

void Resolver::Loop::finish(uint64_t serial, std::string answer) {
  auto it = questions_.find(serial);
  if (it == questions_.end()) return;
  Question q = std::move(it->second);
  questions_.erase(it);
  if (q.asker.connection) {
    if (auto c = connections_.find(q.asker.connection); c != connections_.end())
      --c->second.in_flight;
  }
  if (answer.empty()) {
    answer = dns::error_reply(q.query, 2);  // SERVFAIL: no upstream answered
  } else {
    answer[0] = q.query[0];  // the box's own id
    answer[1] = q.query[1];
  }
  try {
    if (q.admit) {
      // The box may have gone, and another taken its slot, or its policy changed meanwhile.
      auto box = r_.network_.box_at(q.asker.address);
      if (!box || box->first != *q.admit || !domain_allowed(box->second, q.name)) return;
      auto records = dns::a_records(answer);
      if (!records.empty()) r_.network_.admit(*q.admit, records);
    }
  } catch (const std::exception& e) {
    // Unanswered: an address the box may not reach would only fail it later.
    sys::log(sys::LogLevel::warn, "the DNS resolver failed a question", {{"error", e.what()}});
    return;
  }
  reply(q.asker, answer);
}

void Resolver::Loop::reply(const Asker& asker, const std::string& msg) {
  if (!asker.connection) {
    sockaddr_in to = ipv4(asker.address, asker.port);
    ::sendto(r_.udp_.get(), msg.data(), msg.size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&to),
             sizeof to);
    return;
  }
  auto it = connections_.find(asker.connection);
  if (it == connections_.end() || !it->second.socket || msg.size() > kMaxMessage) return;
  it->second.out += framed(msg);
}

}  // namespace pitbox::net
