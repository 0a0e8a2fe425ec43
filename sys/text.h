// Bytes as text: SHA-256 (OpenSSL, whole or incremental), base64 (OpenSSL), UTF-8 validity, and
// times in RFC 3339.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

// OpenSSL's digest context, named here so that this header does not include OpenSSL.
struct evp_md_ctx_st;

namespace pitbox::sys {

std::string sha256_hex(std::string_view data);

// SHA-256 of data given in pieces (a stream too big to hold: a layer, a blob).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(std::string_view data);
  // Adds what the file `fd` holds from its offset to its end; `what` names it in errors.
  void update_from(int fd, const std::string& what);
  // The digest in lowercase hex. Finishes the hash: later calls return the same, update throws.
  std::string hex();
  // "sha256:<hex>", as content addresses are written.
  std::string digest() { return "sha256:" + hex(); }

 private:
  evp_md_ctx_st* ctx_;
  std::string hex_;  // set once finished
};

std::string base64_encode(std::string_view data);
// nullopt when `text` is not valid base64.
std::optional<std::string> base64_decode(std::string_view text);
bool is_valid_utf8(std::string_view data);

// Milliseconds since the epoch, now.
int64_t now_ms();
// "2026-11-22T10:00:00.123Z"
std::string format_time(int64_t ms);

}  // namespace pitbox::sys
