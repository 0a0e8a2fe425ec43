#include "api/router.h"

namespace pitbox::api {

namespace {

std::vector<std::string_view> segments(std::string_view path) {
  std::vector<std::string_view> out;
  size_t pos = 1;
  while (pos <= path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    out.push_back(path.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

void Router::add(http::verb method, std::string pattern, Access access, Handler handler) {
  routes_.push_back({method, std::move(pattern), access, std::move(handler)});
}

const Route& Router::match(http::verb method, const std::string& path,
                           std::map<std::string, std::string>& params) const {
  if (path.empty() || path[0] != '/') throw not_found("no route for \"" + path + "\"");
  auto parts = segments(path);
  bool path_matched = false;
  for (const auto& route : routes_) {
    auto pattern = segments(route.pattern);
    if (pattern.size() != parts.size()) continue;
    std::map<std::string, std::string> found;
    bool ok = true;
    for (size_t i = 0; i < parts.size() && ok; ++i) {
      std::string_view p = pattern[i];
      if (p.size() > 2 && p.front() == '{' && p.back() == '}') {
        if (parts[i].empty()) ok = false;
        found[std::string(p.substr(1, p.size() - 2))] = percent_decode(parts[i], false);
      } else {
        ok = p == parts[i];
      }
    }
    if (!ok) continue;
    path_matched = true;
    if (route.method != method) continue;
    params = std::move(found);
    return route;
  }
  if (path_matched) {
    throw http_error(405, ErrorCode::invalid_argument,
                     std::string("method ") + std::string(http::to_string(method)) +
                         " is not allowed on " + path);
  }
  throw not_found("no route for " + path);
}

std::string percent_decode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '%') {
      int hi = i + 2 < text.size() ? hex_value(text[i + 1]) : -1;
      int lo = i + 2 < text.size() ? hex_value(text[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        throw invalid_argument("bad %-escape in \"" + std::string(text) + "\"");
      }
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

void parse_target(std::string_view target, std::string& path,
                  std::map<std::string, std::vector<std::string>>& query) {
  size_t q = target.find('?');
  path = percent_decode(target.substr(0, q), false);
  if (q == std::string_view::npos) return;
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    std::string key = percent_decode(pair.substr(0, eq), true);
    std::string value =
        eq == std::string_view::npos ? "" : percent_decode(pair.substr(eq + 1), true);
    query[key].push_back(std::move(value));
  }
}

}  // namespace pitbox::api
