#include "sys/seccomp.h"

#include <seccomp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <memory>

#include "sys/error.h"
#include "sys/fd.h"
#include "sys/fs.h"

namespace pitbox::sys {
namespace {

void check(int rc, const std::string& what) {
  if (rc < 0) throw_errno("seccomp: " + what, -rc);
}

}  // namespace

std::vector<sock_filter> compile_seccomp(const std::vector<SeccompRule>& rules) {
  std::unique_ptr<void, void (*)(void*)> owner(seccomp_init(SCMP_ACT_ALLOW), seccomp_release);
  auto* ctx = static_cast<scmp_filter_ctx>(owner.get());
  if (!ctx) throw internal_error("seccomp_init failed");
  // no_new_privs is set by the runtime, which also loads the program itself.
  check(seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0), "attribute nnp");
#if defined(__x86_64__)
  check(seccomp_arch_add(ctx, SCMP_ARCH_X86), "add arch x86");
  check(seccomp_arch_add(ctx, SCMP_ARCH_X32), "add arch x32");
#elif defined(__aarch64__)
  check(seccomp_arch_add(ctx, SCMP_ARCH_ARM), "add arch arm");
#endif
  for (const auto& r : rules) {
    int nr = seccomp_syscall_resolve_name(r.syscall.c_str());
    if (nr == __NR_SCMP_ERROR) continue;
    uint32_t action = SCMP_ACT_ERRNO(static_cast<uint16_t>(r.error));
    switch (r.when) {
      case SeccompRule::When::always:
        check(seccomp_rule_add(ctx, action, nr, 0), "deny " + r.syscall);
        break;
      case SeccompRule::When::any_bit_set:
        // "Any bit of the mask" is one rule per bit: (arg & bit) == bit.
        for (int bit = 0; bit < 64; ++bit) {
          uint64_t b = uint64_t{1} << bit;
          if (!(r.value & b)) continue;
          check(seccomp_rule_add(ctx, action, nr, 1, SCMP_CMP(r.arg, SCMP_CMP_MASKED_EQ, b, b)),
                "deny " + r.syscall);
        }
        break;
      case SeccompRule::When::low32_equal:
        check(seccomp_rule_add(ctx, action, nr, 1,
                               SCMP_CMP(r.arg, SCMP_CMP_MASKED_EQ, 0xffffffffu, r.value)),
              "deny " + r.syscall);
        break;
    }
  }
  UniqueFd mem(::memfd_create("pitbox-seccomp", MFD_CLOEXEC));
  if (!mem) throw_errno("memfd_create");
  check(seccomp_export_bpf(ctx, mem.get()), "export");
  if (::lseek(mem.get(), 0, SEEK_SET) < 0) throw_errno("lseek");
  std::string bytes = read_fd(mem.get());
  if (bytes.empty() || bytes.size() % sizeof(sock_filter) != 0 ||
      bytes.size() / sizeof(sock_filter) > BPF_MAXINSNS) {
    throw internal_error("seccomp: exported program has a bad size");
  }
  std::vector<sock_filter> code(bytes.size() / sizeof(sock_filter));
  std::memcpy(code.data(), bytes.data(), bytes.size());
  return code;
}

}  // namespace pitbox::sys
