#include "control/metrics.h"

#include <cstdio>

namespace pitbox::control {

void Histogram::observe(double seconds) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (seconds <= bounds_[i]) {
      ++counts_[i];
      break;
    }
  }
  ++count_;
  sum_ += seconds;
}

std::string Histogram::render(const std::string& name, const std::string& help,
                              const std::string& label) const {
  std::string out =
      help.empty() ? "" : "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  std::string sep = label.empty() ? "" : label + ",";
  std::string own = label.empty() ? "" : "{" + label + "}";
  uint64_t cumulative = 0;
  char line[512];
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    std::snprintf(line, sizeof line, "%s_bucket{%sle=\"%g\"} %llu\n", name.c_str(), sep.c_str(),
                  bounds_[i], static_cast<unsigned long long>(cumulative));
    out += line;
  }
  std::snprintf(line, sizeof line,
                "%s_bucket{%sle=\"+Inf\"} %llu\n%s_sum%s %.6f\n%s_count%s %llu\n", name.c_str(),
                sep.c_str(), static_cast<unsigned long long>(count_), name.c_str(), own.c_str(),
                sum_, name.c_str(), own.c_str(), static_cast<unsigned long long>(count_));
  out += line;
  return out;
}

std::string prometheus_label(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace pitbox::control
