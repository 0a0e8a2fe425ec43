// nftables for the daemon: scripts applied by the pitbox-nft helper (see nft_helper.cc).
#pragma once

#include <sys/types.h>

#include <mutex>
#include <string>

#include "sys/fd.h"

namespace pitbox::net {

class Nft {
 public:
  // `helper`: the path of pitbox-nft. The helper starts at the first script.
  explicit Nft(std::string helper);
  ~Nft();
  Nft(const Nft&) = delete;
  Nft& operator=(const Nft&) = delete;

  // Applies `script` atomically and returns what nft printed. A script nft refuses throws
  // internal with nft's message; nothing of it is applied then. A helper that died is started
  // again.
  std::string run(const std::string& script);

 private:
  void start();
  void stop();
  bool exchange(const std::string& script, uint8_t& status, std::string& said);

  std::string helper_;
  std::mutex mu_;
  sys::UniqueFd socket_;
  pid_t pid_ = -1;
};

}  // namespace pitbox::net
