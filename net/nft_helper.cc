// pitbox-nft: applies nftables scripts for the daemon through libnftables. The pitbox binary is
// static and Debian ships libnftables only as a shared library, so this small helper links it
// and stays beside the daemon for its whole life (one process, not one per change).
//
// On fd 3, a stream socket: each request is a u32 length and a script; each answer a u8 status
// (0: applied), a u32 length and what nft printed (its error on failure). Scripts are applied
// atomically: all of a script, or nothing. The helper ends when the socket closes or the
// daemon dies.
#include <nftables/libnftables.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "sys/fs.h"

using namespace pitbox;

int main() {
  constexpr int kSocket = 3;
  ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (::getppid() == 1) return 1;  // the daemon is gone already
  nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (!ctx) return 1;
  for (;;) {
    uint32_t len;
    if (!sys::read_exact(kSocket, &len, sizeof len)) break;
    std::string script(len, '\0');
    if (!sys::read_exact(kSocket, script.data(), len)) break;
    nft_ctx_buffer_output(ctx);
    nft_ctx_buffer_error(ctx);
    int rc = nft_run_cmd_from_buffer(ctx, script.c_str());
    std::string said = rc == 0 ? nft_ctx_get_output_buffer(ctx) : nft_ctx_get_error_buffer(ctx);
    nft_ctx_unbuffer_output(ctx);
    nft_ctx_unbuffer_error(ctx);
    uint8_t status = rc == 0 ? 0 : 1;
    auto said_len = static_cast<uint32_t>(said.size());
    std::string answer(1, static_cast<char>(status));
    answer.append(reinterpret_cast<const char*>(&said_len), sizeof said_len);
    answer += said;
    if (!sys::write_all(kSocket, answer)) {
      break;
    }
  }
  nft_ctx_free(ctx);
  return 0;
}
