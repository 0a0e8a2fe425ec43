// Builds seccomp BPF programs with libseccomp, once, so a new process only has to load them.
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <string>
#include <vector>

namespace pitbox::sys {

// A compiled filter: load it with seccomp(SECCOMP_SET_MODE_FILTER, 0, &prog()).
class SeccompProgram {
 public:
  SeccompProgram() = default;
  explicit SeccompProgram(std::vector<sock_filter> code) : code_(std::move(code)) {
    prog_.len = static_cast<unsigned short>(code_.size());
    prog_.filter = code_.data();
  }
  SeccompProgram(SeccompProgram&& o) noexcept : code_(std::move(o.code_)) {
    prog_.len = static_cast<unsigned short>(code_.size());
    prog_.filter = code_.data();
  }
  SeccompProgram(const SeccompProgram&) = delete;
  SeccompProgram& operator=(const SeccompProgram&) = delete;
  SeccompProgram& operator=(SeccompProgram&&) = delete;

  const sock_fprog& prog() const { return prog_; }
  size_t size() const { return code_.size(); }

 private:
  std::vector<sock_filter> code_;
  sock_fprog prog_{};
};

// A default-allow filter with a deny list; every rule applies to all of the native ABIs
// (x86_64, x86 and x32 on x86_64 machines).
class SeccompBuilder {
 public:
  SeccompBuilder();
  ~SeccompBuilder();
  SeccompBuilder(const SeccompBuilder&) = delete;
  SeccompBuilder& operator=(const SeccompBuilder&) = delete;

  // Fails the call with `err`. Names unknown to this libseccomp or ABI are skipped.
  SeccompBuilder& deny(const std::string& syscall, int err);
  // Fails the call with `err` when (argument `arg` & mask) != 0.
  SeccompBuilder& deny_if_any_bits(const std::string& syscall, unsigned arg, uint64_t mask,
                                   int err);
  // Fails the call with `err` when the low 32 bits of argument `arg` equal `value` (for
  // arguments the kernel reads as 32-bit, such as ioctl requests: comparing all 64 bits would let
  // a caller slip past with junk in the high half).
  SeccompBuilder& deny_if_equal32(const std::string& syscall, unsigned arg, uint32_t value,
                                  int err);

  SeccompProgram build();

 private:
  void* ctx_;
};

}  // namespace pitbox::sys
