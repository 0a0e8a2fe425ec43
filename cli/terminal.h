// The terminal pitbox runs in: raw mode for -t (restored on every way out) and its size.
#pragma once

#include <termios.h>

#include <cstdint>
#include <optional>
#include <string_view>

namespace pitbox::cli {

struct TerminalSize {
  uint16_t rows = 24;
  uint16_t cols = 80;
};

// Writes everything to `fd`, waiting when it is non-blocking and full; a closed reader (EPIPE)
// ends the writing quietly.
void write_out(int fd, std::string_view data);

// The size of the terminal on `fd`, if it is one.
std::optional<TerminalSize> terminal_size(int fd);

// Puts the terminal on `fd` in raw mode (keys go to the box as they are typed, ^C included)
// until the object goes.
class RawMode {
 public:
  explicit RawMode(int fd);
  ~RawMode();
  RawMode(const RawMode&) = delete;
  RawMode& operator=(const RawMode&) = delete;

 private:
  int fd_;
  bool active_ = false;
  termios saved_{};
};

}  // namespace pitbox::cli
