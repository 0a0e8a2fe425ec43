// Preview links: signed tokens that open one port of one sandbox until they expire, or until
// the sandbox's previews are revoked (each sandbox counts its revocations: a token names the
// count it was made under).
//
//   token = "<sandbox id>.<port>.<expires, ms since the epoch>.<revocations>.<signature>"
//   signature = hex HMAC-SHA256 of the rest, with the daemon's preview key
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace pitbox::control {

struct PreviewGrant {
  std::string sandbox_id;
  int port = 0;
  int64_t expires_at = 0;  // ms since the epoch
  uint64_t generation = 0;
};

class PreviewSigner {
 public:
  // The key in `path` (0600), made on first use.
  static PreviewSigner from_file(const std::string& path);
  explicit PreviewSigner(std::string key) : key_(std::move(key)) {}

  std::string sign(const PreviewGrant& grant) const;
  // The grant a token carries when its signature is ours; nullopt for anything else (expiry and
  // revocation are the caller's to check).
  std::optional<PreviewGrant> verify(const std::string& token) const;

 private:
  std::string mac(const std::string& text) const;
  std::string key_;
};

}  // namespace pitbox::control
