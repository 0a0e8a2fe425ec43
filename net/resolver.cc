#include "net/resolver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <sstream>

#include "sys/error.h"
#include "sys/log.h"

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

Resolver::Resolver(Network& network, std::vector<Upstream> upstreams)
    : network_(network), upstreams_(std::move(upstreams)) {
  socket_ = sys::UniqueFd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!socket_) throw_errno("the DNS resolver's socket");
  int one = 1;
  // The gateway's address exists once the first box's link does.
  ::setsockopt(socket_.get(), IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_port = htons(53);
  at.sin_addr.s_addr = htonl(network_.gateway());
  if (::bind(socket_.get(), reinterpret_cast<sockaddr*>(&at), sizeof at) != 0) {
    throw_errno("binding the DNS resolver to " + sys::ipv4_str(network_.gateway()) + ":53");
  }
  wake_ = sys::UniqueFd(::eventfd(0, EFD_CLOEXEC));
  if (!wake_) throw_errno("eventfd");
  thread_ = std::thread([this] { loop(); });
}

Resolver::~Resolver() {
  uint64_t one = 1;
  if (::write(wake_.get(), &one, sizeof one) < 0) {
  }
  thread_.join();
}

void Resolver::loop() {
  std::string buf(4096, '\0');
  for (;;) {
    pollfd fds[2] = {{socket_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) continue;
    if (fds[1].revents) return;
    sockaddr_in from{};
    socklen_t len = sizeof from;
    ssize_t n = ::recvfrom(socket_.get(), buf.data(), buf.size(), MSG_DONTWAIT,
                           reinterpret_cast<sockaddr*>(&from), &len);
    if (n <= 0) continue;
    try {
      answer(buf.substr(0, static_cast<size_t>(n)), ntohl(from.sin_addr.s_addr),
             ntohs(from.sin_port));
    } catch (const std::exception& e) {
      sys::log(sys::LogLevel::warn, "the DNS resolver failed a question", {{"error", e.what()}});
    }
  }
}

std::string Resolver::ask_upstream(const std::string& query) {
  for (const Upstream& u : upstreams_) {
    sys::UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(u.port);
    to.sin_addr.s_addr = htonl(u.address);
    if (!s || ::connect(s.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) != 0 ||
        ::send(s.get(), query.data(), query.size(), 0) < 0) {
      continue;
    }
    pollfd p{s.get(), POLLIN, 0};
    if (::poll(&p, 1, 2000) <= 0) continue;
    std::string buf(4096, '\0');
    ssize_t n = ::recv(s.get(), buf.data(), buf.size(), 0);
    if (n >= 12 && buf[0] == query[0] && buf[1] == query[1])
      return buf.substr(0, static_cast<size_t>(n));
  }
  return "";
}

void Resolver::answer(const std::string& query, uint32_t from_address, uint16_t from_port) {
  std::string name;
  uint16_t type = 0;
  std::string reply;
  std::optional<std::pair<uint32_t, Policy>> box = network_.box_at(from_address);
  if (!dns::question(query, name, type)) {
    if (query.size() < 12) return;
    reply = dns::error_reply(query, 1);  // FORMERR
  } else if (!box) {
    reply = dns::error_reply(query, 5);
  } else if (auto peer = network_.peer(box->first, name)) {
    reply = dns::address_reply(query, type == 1 ? *peer : 0);
  } else if (!box->second.allow_domains.empty()) {
    const auto& allowed = box->second.allow_domains;
    bool ok = std::any_of(allowed.begin(), allowed.end(),
                          [&](const std::string& p) { return domain_matches(p, name); });
    if (!ok) {
      reply = dns::error_reply(query, 3);
    } else {
      reply = ask_upstream(query);
      if (reply.empty()) reply = dns::error_reply(query, 2);
      auto records = dns::a_records(reply);
      if (!records.empty()) network_.admit(box->first, records);
    }
  } else if (box->second.mode == Policy::Mode::none || box->second.has_allow_list()) {
    reply = dns::error_reply(query, 5);  // nothing to look up: only listed addresses pass
  } else {
    reply = ask_upstream(query);
    if (reply.empty()) reply = dns::error_reply(query, 2);
  }
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(from_port);
  to.sin_addr.s_addr = htonl(from_address);
  ::sendto(socket_.get(), reply.data(), reply.size(), MSG_DONTWAIT,
           reinterpret_cast<sockaddr*>(&to), sizeof to);
}

}  // namespace pitbox::net
