// Random bytes from the kernel, and the ids made from them.
#pragma once

#include <cstddef>
#include <string>

namespace pitbox::sys {

std::string random_bytes(size_t n);
// `n` characters of lowercase RFC 4648 base32 (a-z, 2-7), 5 random bits each.
std::string random_base32(size_t n);

}  // namespace pitbox::sys
