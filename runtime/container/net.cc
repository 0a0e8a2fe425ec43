#include "runtime/container/net.h"

#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cstring>

#include "sys/raw_syscall.h"

namespace pitbox::runtime::container {

int child_loopback_up(ChildFailure* f) {
  using sys::raw::call;
  long sock = call(SYS_socket, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return child::fail(f, Step::loopback, sock, "socket");
  ifreq req;
  std::memset(&req, 0, sizeof req);
  std::memcpy(req.ifr_name, "lo", 3);
  long rc = call(SYS_ioctl, sock, SIOCGIFFLAGS, &req);
  if (rc >= 0) {
    req.ifr_flags = static_cast<short>(req.ifr_flags | IFF_UP);
    rc = call(SYS_ioctl, sock, SIOCSIFFLAGS, &req);
  }
  call(SYS_close, sock);
  if (rc < 0) return child::fail(f, Step::loopback, rc, "lo");
  return 0;
}

}  // namespace pitbox::runtime::container
