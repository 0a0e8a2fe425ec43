#include "sys/random.h"

#include <sys/random.h>

#include <cerrno>

#include "sys/error.h"

namespace pitbox::sys {

std::string random_bytes(size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::getrandom(out.data() + got, n - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw_errno("getrandom");
    }
    got += static_cast<size_t>(r);
  }
  return out;
}

std::string random_base32(size_t n) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  std::string bytes = random_bytes(n);
  std::string out(n, 'a');
  for (size_t i = 0; i < n; ++i) out[i] = kAlphabet[static_cast<unsigned char>(bytes[i]) & 31];
  return out;
}

}  // namespace pitbox::sys
