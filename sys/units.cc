#include "sys/units.h"

#include <cctype>
#include <cmath>
#include <cstdio>

#include "sys/error.h"

namespace pitbox::sys {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Splits "1.5g" into the integer part, the fraction digits and the rest.
bool split_number(std::string_view text, std::string_view& whole, std::string_view& frac,
                  std::string_view& rest) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  whole = text.substr(0, i);
  frac = {};
  if (i < text.size() && text[i] == '.') {
    size_t j = i + 1;
    while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j]))) ++j;
    frac = text.substr(i + 1, j - i - 1);
    i = j;
  }
  rest = text.substr(i);
  return !whole.empty() || !frac.empty();
}

}  // namespace

uint64_t parse_size(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return invalid_argument(
        "invalid size \"" + std::string(text) + "\": " + why +
        " (expected a number with an optional unit b, k, m, g or t, e.g. 512m)");
  };
  std::string_view whole, frac, rest;
  if (!split_number(text, whole, frac, rest)) throw bad("not a number");
  std::string unit = lower(rest);
  while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
  uint64_t mult;
  if (unit.empty() || unit == "b") {
    mult = 1;
  } else {
    char u = unit[0];
    std::string tail = unit.substr(1);
    if (tail != "" && tail != "b" && tail != "ib")
      throw bad("unknown unit \"" + std::string(rest) + "\"");
    switch (u) {
      case 'k':
        mult = 1ull << 10;
        break;
      case 'm':
        mult = 1ull << 20;
        break;
      case 'g':
        mult = 1ull << 30;
        break;
      case 't':
        mult = 1ull << 40;
        break;
      default:
        throw bad("unknown unit \"" + std::string(rest) + "\"");
    }
  }
  if (whole.size() > 15) throw bad("too large");
  uint64_t w = whole.empty() ? 0 : std::stoull(std::string(whole));
  long double value = static_cast<long double>(w);
  if (!frac.empty()) {
    if (frac.size() > 9) frac = frac.substr(0, 9);
    value += std::stold("0." + std::string(frac));
  }
  long double bytes = value * static_cast<long double>(mult);
  if (bytes >= 18446744073709551615.0L) throw bad("too large");
  uint64_t out = static_cast<uint64_t>(std::llround(bytes));
  if (mult == 1 && !frac.empty()) throw bad("a number of bytes must be whole");
  return out;
}

std::string format_size(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  long double v = static_cast<long double>(bytes);
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[64];
  if (u == 0 || v == std::floor(v)) {
    std::snprintf(buf, sizeof buf, "%.0Lf %s", v, kUnits[u]);
  } else {
    std::snprintf(buf, sizeof buf, "%.1Lf %s", v, kUnits[u]);
  }
  return buf;
}

uint64_t parse_millicpus(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return invalid_argument("invalid cpu amount \"" + std::string(text) + "\": " + why +
                            " (expected a number of CPUs such as 0.5, 1 or 2)");
  };
  std::string_view whole, frac, rest;
  if (!split_number(text, whole, frac, rest) || !rest.empty()) throw bad("not a number");
  if (frac.size() > 3) throw bad("at most three decimals");
  if (whole.size() > 6) throw bad("too large");
  uint64_t m = whole.empty() ? 0 : std::stoull(std::string(whole)) * 1000;
  std::string f(frac);
  while (f.size() < 3) f += '0';
  m += std::stoull(f);
  if (m == 0) throw bad("must be more than zero");
  return m;
}

std::string format_millicpus(uint64_t millicpus) {
  char buf[32];
  if (millicpus % 1000 == 0) {
    std::snprintf(buf, sizeof buf, "%llu", static_cast<unsigned long long>(millicpus / 1000));
  } else {
    std::snprintf(buf, sizeof buf, "%llu.%03llu", static_cast<unsigned long long>(millicpus / 1000),
                  static_cast<unsigned long long>(millicpus % 1000));
    std::string s = buf;
    while (s.back() == '0') s.pop_back();
    return s;
  }
  return buf;
}

}  // namespace pitbox::sys
