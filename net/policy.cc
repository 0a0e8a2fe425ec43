#include "net/policy.h"

#include <algorithm>
#include <cctype>

#include "sys/error.h"

namespace pitbox::net {

const char* mode_name(Policy::Mode mode) { return mode == Policy::Mode::none ? "none" : "egress"; }

namespace {

Policy::Mode parse_mode(const nlohmann::json& j, const std::string& field) {
  if (j.is_string()) {
    if (j == "none") return Policy::Mode::none;
    if (j == "egress") return Policy::Mode::egress;
  }
  throw invalid_argument(field + ": must be \"none\" or \"egress\", not " + j.dump(),
                         {{"field", field}});
}

std::vector<std::string> string_list(const nlohmann::json& j, const std::string& field) {
  if (!j.is_array()) {
    throw invalid_argument(field + ": must be a list of strings", {{"field", field}});
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < j.size(); ++i) {
    std::string at = field + "[" + std::to_string(i) + "]";
    if (!j[i].is_string()) throw invalid_argument(at + ": must be a string", {{"field", at}});
    out.push_back(j[i].get<std::string>());
  }
  if (out.size() > 256) {
    throw invalid_argument(field + ": at most 256 entries", {{"field", field}});
  }
  return out;
}

std::vector<sys::Ipv4Net> cidr_list(const nlohmann::json& j, const std::string& field) {
  std::vector<std::string> texts = string_list(j, field);
  std::vector<sys::Ipv4Net> out;
  for (size_t i = 0; i < texts.size(); ++i) {
    out.push_back(sys::Ipv4Net::parse(texts[i], field + "[" + std::to_string(i) + "]"));
  }
  return out;
}

}  // namespace

std::string parse_domain_pattern(const std::string& text, const std::string& field) {
  auto bad = [&](const std::string& why) {
    return invalid_argument(field + ": \"" + text + "\" is not a domain pattern: " + why,
                            {{"field", field}, {"value", text}});
  };
  std::string name = text;
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (!name.empty() && name.back() == '.') name.pop_back();
  std::string rest = name;
  if (rest.rfind("*.", 0) == 0) rest = rest.substr(2);
  if (rest.empty()) throw bad("it names no domain");
  if (rest.size() > 253) throw bad("longer than 253 characters");
  size_t start = 0;
  for (;;) {
    size_t dot = rest.find('.', start);
    std::string label =
        rest.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (label.empty() || label.size() > 63) throw bad("each label has 1 to 63 characters");
    if (label.front() == '-' || label.back() == '-') throw bad("a label starts or ends with '-'");
    for (char c : label) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
        throw bad(c == '*' ? "'*' is allowed only as the whole first label (*.example.com)"
                           : std::string("'") + c + "' is not allowed in a domain name");
      }
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return name;
}

bool domain_matches(const std::string& pattern, const std::string& name) {
  if (pattern.rfind("*.", 0) != 0) return pattern == name;
  std::string suffix = pattern.substr(1);  // ".example.com"
  return name.size() > suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void validate_network_name(const std::string& name, const std::string& field) {
  bool ok = !name.empty() && name.size() <= 63 && std::isalnum(static_cast<unsigned char>(name[0]));
  for (char ch : name) {
    ok = ok && ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-');
  }
  if (!ok) {
    throw invalid_argument(field + ": \"" + name +
                               "\" is not a network name (1 to 63 of a-z, 0-9 and '-', starting "
                               "with a letter or digit)",
                           {{"field", field}, {"value", name}});
  }
}

const std::vector<sys::Ipv4Net>& protected_ranges() {
  static const std::vector<sys::Ipv4Net> ranges{
      {0xa9fe0000, 16},  // 169.254.0.0/16: link-local, cloud metadata
      {0xe0000000, 4},   // 224.0.0.0/4: multicast
      {0xffffffff, 32},  // the limited broadcast address
      {0x00000000, 8},   // "this network"
  };
  return ranges;
}

Policy Policy::from_json(const nlohmann::json& j, const std::string& field) {
  Policy p;
  if (j.is_string()) {
    p.mode = parse_mode(j, field);
    return p;
  }
  if (!j.is_object()) {
    throw invalid_argument(field +
                               ": must be \"none\", \"egress\" or an object with policy, "
                               "allow_cidrs, deny_cidrs and allow_domains",
                           {{"field", field}});
  }
  for (const auto& [key, value] : j.items()) {
    std::string at = field + "." + key;
    if (key == "policy") {
      p.mode = parse_mode(value, at);
    } else if (key == "allow_cidrs") {
      p.allow_cidrs = cidr_list(value, at);
    } else if (key == "deny_cidrs") {
      p.deny_cidrs = cidr_list(value, at);
    } else if (key == "allow_domains") {
      std::vector<std::string> texts = string_list(value, at);
      for (size_t i = 0; i < texts.size(); ++i) {
        p.allow_domains.push_back(
            parse_domain_pattern(texts[i], at + "[" + std::to_string(i) + "]"));
      }
    } else if (key == "networks") {
      p.networks = string_list(value, at);
      for (size_t i = 0; i < p.networks.size(); ++i) {
        validate_network_name(p.networks[i], at + "[" + std::to_string(i) + "]");
      }
      std::sort(p.networks.begin(), p.networks.end());
      p.networks.erase(std::unique(p.networks.begin(), p.networks.end()), p.networks.end());
    } else if (key == "address" || key == "gateway") {
      // What GET shows about the box's network is accepted back unchanged and ignored.
    } else {
      throw invalid_argument(at + ": unknown field (policy, allow_cidrs, deny_cidrs, "
                                  "allow_domains, networks)",
                             {{"field", at}});
    }
  }
  return p;
}

nlohmann::json Policy::to_json() const {
  nlohmann::json allow = nlohmann::json::array(), deny = nlohmann::json::array();
  for (const auto& n : allow_cidrs) allow.push_back(n.str());
  for (const auto& n : deny_cidrs) deny.push_back(n.str());
  return {{"policy", mode_name(mode)},
          {"allow_cidrs", allow},
          {"deny_cidrs", deny},
          {"allow_domains", allow_domains},
          {"networks", networks}};
}

}  // namespace pitbox::net
