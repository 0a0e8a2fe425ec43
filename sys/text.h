// Bytes as text: SHA-256 (OpenSSL), base64 (OpenSSL), UTF-8 validity, and times in RFC 3339.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pitbox::sys {

std::string sha256_hex(std::string_view data);
std::string base64_encode(std::string_view data);
// nullopt when `text` is not valid base64.
std::optional<std::string> base64_decode(std::string_view text);
bool is_valid_utf8(std::string_view data);

// Milliseconds since the epoch, now.
int64_t now_ms();
// "2026-11-22T10:00:00.123Z"
std::string format_time(int64_t ms);

}  // namespace pitbox::sys
