// Seccomp filters as data (rules) and their compilation to BPF with libseccomp. pitbox
// compiles its filter when it is built, so starting a box only loads a ready program.
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <string>
#include <vector>

namespace pitbox::sys {

// One deny rule of a default-allow filter.
struct SeccompRule {
  enum class When {
    always,       // every call
    any_bit_set,  // (argument & value) != 0
    low32_equal,  // the low 32 bits of the argument == value (for arguments the kernel reads as
                  // 32-bit, such as ioctl requests: junk in the high half must not slip past)
  };
  std::string syscall;
  int error;  // the errno the call fails with
  When when = When::always;
  unsigned arg = 0;
  uint64_t value = 0;
};

// Compiles a default-allow filter that fails the rules' calls, for all native ABIs (x86_64, x86
// and x32 on x86_64 machines). Names this libseccomp does not know are skipped.
std::vector<sock_filter> compile_seccomp(const std::vector<SeccompRule>& rules);

}  // namespace pitbox::sys
