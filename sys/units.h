// Sizes and CPU amounts as people write them ("512m", "1.5g", "0.5") and back.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace pitbox::sys {

// Bytes in "1024", "512k", "64M", "1.5g", "2GiB", "10mb" (units are powers of 1024).
// Throws invalid_argument naming the bad text.
uint64_t parse_size(std::string_view text);
// "64 MiB", "1.5 GiB", "512 B".
std::string format_size(uint64_t bytes);
// Thousandths of a CPU in "0.5", "2", "1.25" (at most three decimals, more than zero).
uint64_t parse_millicpus(std::string_view text);
std::string format_millicpus(uint64_t millicpus);

}  // namespace pitbox::sys
