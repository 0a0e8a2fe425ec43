#include "control/previews.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <vector>

#include "sys/error.h"
#include "sys/fs.h"
#include "sys/random.h"

namespace pitbox::control {

PreviewSigner PreviewSigner::from_file(const std::string& path) {
  if (sys::exists(path)) return PreviewSigner(sys::read_file(path));
  std::string key = sys::random_bytes(32);
  sys::make_dirs(sys::split_parent(path).first, 0700);
  sys::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd || !sys::write_all(fd.get(), key)) throw_errno("writing the preview key to " + path);
  return PreviewSigner(key);
}

std::string PreviewSigner::mac(const std::string& text) const {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!::HMAC(::EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
              reinterpret_cast<const unsigned char*>(text.data()), text.size(), out, &len)) {
    throw internal_error("HMAC failed");
  }
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned i = 0; i < len; ++i) {
    s += hex[out[i] >> 4];
    s += hex[out[i] & 15];
  }
  return s;
}

std::string PreviewSigner::sign(const PreviewGrant& g) const {
  std::string text = g.sandbox_id + "." + std::to_string(g.port) + "." +
                     std::to_string(g.expires_at) + "." + std::to_string(g.generation);
  return text + "." + mac(text);
}

std::optional<PreviewGrant> PreviewSigner::verify(const std::string& token) const {
  size_t last = token.rfind('.');
  if (last == std::string::npos || token.size() > 256) return std::nullopt;
  std::string text = token.substr(0, last);
  std::string expected = mac(text);
  std::string given = token.substr(last + 1);
  if (given.size() != expected.size() ||
      CRYPTO_memcmp(given.data(), expected.data(), given.size()) != 0) {
    return std::nullopt;
  }
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t dot = text.find('.', start);
    parts.push_back(text.substr(start, dot == std::string::npos ? dot : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  if (parts.size() != 4) return std::nullopt;
  try {
    return PreviewGrant{parts[0], std::stoi(parts[1]), std::stoll(parts[2]), std::stoull(parts[3])};
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace pitbox::control
