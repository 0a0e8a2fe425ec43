#include "storage/tar_writer.h"

#include <cstdio>
#include <cstring>

namespace pitbox::storage {

namespace {

constexpr size_t kBlock = 512;

// `value` in octal, zero-padded to width-1 digits and a NUL; false when it does not fit.
bool put_octal(char* field, size_t width, uint64_t value) {
  char buf[32];
  int n = std::snprintf(buf, sizeof buf, "%0*llo", static_cast<int>(width - 1),
                        static_cast<unsigned long long>(value));
  if (n < 0 || static_cast<size_t>(n) > width - 1) return false;
  std::memcpy(field, buf, static_cast<size_t>(n));
  field[n] = '\0';
  return true;
}

// One pax record: "<length> <key>=<value>\n", where length counts the whole record.
std::string pax_record(const std::string& key, const std::string& value) {
  size_t body = key.size() + value.size() + 3;  // ' ', '=', '\n'
  size_t len = body + 1;
  while (std::to_string(len).size() + body != len) len = std::to_string(len).size() + body;
  return std::to_string(len) + " " + key + "=" + value + "\n";
}

std::string block(const char* name, size_t name_len, uint32_t mode, uint32_t uid, uint32_t gid,
                  uint64_t size, int64_t mtime, char type, const std::string& link) {
  std::string b(kBlock, '\0');
  char* h = b.data();
  std::memcpy(h, name, std::min<size_t>(name_len, 100));
  put_octal(h + 100, 8, mode & 07777);
  put_octal(h + 108, 8, uid <= 07777777 ? uid : 0);
  put_octal(h + 116, 8, gid <= 07777777 ? gid : 0);
  put_octal(h + 124, 12, size);
  put_octal(h + 136, 12, mtime > 0 ? static_cast<uint64_t>(mtime) : 0);
  h[156] = type;
  std::memcpy(h + 157, link.data(), std::min<size_t>(link.size(), 100));
  std::memcpy(h + 257, "ustar", 6);
  std::memcpy(h + 263, "00", 2);
  std::memset(h + 148, ' ', 8);
  unsigned sum = 0;
  for (size_t i = 0; i < kBlock; ++i) sum += static_cast<unsigned char>(h[i]);
  std::snprintf(h + 148, 8, "%06o", sum);
  h[155] = ' ';
  return b;
}

}  // namespace

std::string tar_header(const TarEntry& e) {
  std::string name = e.name;
  char type = '0';
  uint64_t size = e.size;
  bool has_link = false;
  switch (e.type) {
    case TarEntry::Type::file:
      break;
    case TarEntry::Type::dir:
      type = '5';
      size = 0;
      if (name.empty() || name.back() != '/') name += '/';
      break;
    case TarEntry::Type::symlink:
      type = '2';
      size = 0;
      has_link = true;
      break;
    case TarEntry::Type::hardlink:
      type = '1';
      size = 0;
      has_link = true;
      break;
    case TarEntry::Type::fifo:
      type = '6';
      size = 0;
      break;
  }
  const std::string no_link;
  const std::string& link = has_link ? e.link : no_link;
  std::string pax;
  if (name.size() > 100) pax += pax_record("path", name);
  if (link.size() > 100) pax += pax_record("linkpath", link);
  if (size > 077777777777ull) pax += pax_record("size", std::to_string(size));
  if (e.uid > 07777777) pax += pax_record("uid", std::to_string(e.uid));
  if (e.gid > 07777777) pax += pax_record("gid", std::to_string(e.gid));
  std::string out;
  if (!pax.empty()) {
    std::string pax_name = "PaxHeaders/" + name.substr(0, 80);
    out += block(pax_name.data(), pax_name.size(), 0644, 0, 0, pax.size(), e.mtime, 'x', "");
    out += pax;
    out += tar_padding(pax.size());
  }
  out += block(name.data(), name.size(), e.mode, e.uid, e.gid, size > 077777777777ull ? 0 : size,
               e.mtime, type, link);
  return out;
}

std::string tar_padding(uint64_t size) {
  return std::string(static_cast<size_t>((kBlock - size % kBlock) % kBlock), '\0');
}

std::string tar_end() { return std::string(2 * kBlock, '\0'); }

}  // namespace pitbox::storage
