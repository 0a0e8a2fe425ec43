#include "sys/seccomp.h"

#include <seccomp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "sys/error.h"
#include "sys/fd.h"
#include "sys/fs.h"

namespace pitbox::sys {
namespace {

void check(int rc, const std::string& what) {
  if (rc < 0) throw_errno("seccomp: " + what, -rc);
}

}  // namespace

SeccompBuilder::SeccompBuilder() : ctx_(seccomp_init(SCMP_ACT_ALLOW)) {
  if (!ctx_) throw internal_error("seccomp_init failed");
  auto* ctx = static_cast<scmp_filter_ctx>(ctx_);
  // We set no_new_privs ourselves and load the program by hand.
  check(seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0), "attribute nnp");
#if defined(__x86_64__)
  check(seccomp_arch_add(ctx, SCMP_ARCH_X86), "add arch x86");
  check(seccomp_arch_add(ctx, SCMP_ARCH_X32), "add arch x32");
#elif defined(__aarch64__)
  check(seccomp_arch_add(ctx, SCMP_ARCH_ARM), "add arch arm");
#endif
}

SeccompBuilder::~SeccompBuilder() { seccomp_release(static_cast<scmp_filter_ctx>(ctx_)); }

SeccompBuilder& SeccompBuilder::deny(const std::string& syscall, int err) {
  int nr = seccomp_syscall_resolve_name(syscall.c_str());
  if (nr == __NR_SCMP_ERROR) return *this;
  check(seccomp_rule_add(static_cast<scmp_filter_ctx>(ctx_), SCMP_ACT_ERRNO(err), nr, 0),
        "deny " + syscall);
  return *this;
}

SeccompBuilder& SeccompBuilder::deny_if_any_bits(const std::string& syscall, unsigned arg,
                                                 uint64_t mask, int err) {
  int nr = seccomp_syscall_resolve_name(syscall.c_str());
  if (nr == __NR_SCMP_ERROR) return *this;
  // Any bit of the mask set <=> (arg & bit) == bit for some single bit: one rule per bit.
  for (int bit = 0; bit < 64; ++bit) {
    uint64_t b = uint64_t{1} << bit;
    if (!(mask & b)) continue;
    check(seccomp_rule_add(static_cast<scmp_filter_ctx>(ctx_), SCMP_ACT_ERRNO(err), nr, 1,
                           SCMP_CMP(arg, SCMP_CMP_MASKED_EQ, b, b)),
          "deny " + syscall + " flags");
  }
  return *this;
}

SeccompBuilder& SeccompBuilder::deny_if_equal32(const std::string& syscall, unsigned arg,
                                                uint32_t value, int err) {
  int nr = seccomp_syscall_resolve_name(syscall.c_str());
  if (nr == __NR_SCMP_ERROR) return *this;
  check(seccomp_rule_add(static_cast<scmp_filter_ctx>(ctx_), SCMP_ACT_ERRNO(err), nr, 1,
                         SCMP_CMP(arg, SCMP_CMP_MASKED_EQ, 0xffffffffu, value)),
        "deny " + syscall + " argument");
  return *this;
}

SeccompProgram SeccompBuilder::build() {
  UniqueFd mem(::memfd_create("pitbox-seccomp", MFD_CLOEXEC));
  if (!mem) throw_errno("memfd_create");
  check(seccomp_export_bpf(static_cast<scmp_filter_ctx>(ctx_), mem.get()), "export");
  if (::lseek(mem.get(), 0, SEEK_SET) < 0) throw_errno("lseek");
  std::string bytes = read_fd(mem.get());
  if (bytes.empty() || bytes.size() % sizeof(sock_filter) != 0) {
    throw internal_error("seccomp: exported program has a bad size");
  }
  std::vector<sock_filter> code(bytes.size() / sizeof(sock_filter));
  std::memcpy(code.data(), bytes.data(), bytes.size());
  if (code.size() > BPF_MAXINSNS) throw internal_error("seccomp: program too long");
  return SeccompProgram(std::move(code));
}

}  // namespace pitbox::sys
