#include "net/nft.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "sys/error.h"
#include "sys/fs.h"

extern char** environ;

namespace pitbox::net {

Nft::Nft(std::string helper) : helper_(std::move(helper)) {}

Nft::~Nft() { stop(); }

void Nft::start() {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) throw_errno("socketpair");
  sys::UniqueFd ours(pair[0]), theirs(pair[1]);
  posix_spawn_file_actions_t actions;
  if (int rc = ::posix_spawn_file_actions_init(&actions); rc != 0) {
    throw_errno("posix_spawn_file_actions_init", rc);
  }
  ::posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  ::posix_spawn_file_actions_adddup2(&actions, theirs.get(), 3);  // dup2 clears close-on-exec
  char* argv[] = {const_cast<char*>("pitbox-nft"), nullptr};
  pid_t pid;
  int rc = ::posix_spawn(&pid, helper_.c_str(), &actions, nullptr, argv, environ);
  ::posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw_errno("starting " + helper_, rc);
  socket_ = std::move(ours);
  pid_ = pid;
}

void Nft::stop() {
  socket_.reset();  // the helper ends at the end of its input
  if (pid_ > 0) {
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  pid_ = -1;
}

bool Nft::exchange(const std::string& script, uint8_t& status, std::string& said) {
  // The helper may have died: a broken pipe is an answer here, not a signal.
  auto len = static_cast<uint32_t>(script.size());
  if (!sys::write_all(socket_.get(), std::string_view(reinterpret_cast<char*>(&len), sizeof len),
                      true) ||
      !sys::write_all(socket_.get(), script, true) || !sys::read_exact(socket_.get(), &status, 1) ||
      !sys::read_exact(socket_.get(), &len, sizeof len)) {
    return false;
  }
  said.assign(len, '\0');
  return sys::read_exact(socket_.get(), said.data(), len);
}

std::string Nft::run(const std::string& script) {
  std::lock_guard lock(mu_);
  uint8_t status = 1;
  std::string said;
  bool answered = false;
  // A helper that died (or was killed) is started once more before giving up.
  for (int attempt = 0; attempt < 2 && !answered; ++attempt) {
    if (!socket_) start();
    answered = exchange(script, status, said);
    if (!answered) stop();
  }
  if (!answered) {
    throw Error(ErrorCode::internal, "the nftables helper " + helper_ + " does not answer");
  }
  if (status != 0) {
    while (!said.empty() && said.back() == '\n') said.pop_back();
    throw Error(ErrorCode::internal, "nftables refused a change: " + said);
  }
  return said;
}

}  // namespace pitbox::net
