#include "init/loop.h"

#include <cerrno>

#include "sys/error.h"

namespace pitbox::init {

Loop::Loop() : epfd_(::epoll_create1(EPOLL_CLOEXEC)) {
  if (!epfd_) throw_errno("epoll_create1");
}

void Loop::add(int fd, uint32_t events, Handler handler) {
  if (events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    if (::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) throw_errno("epoll_ctl add");
  }
  handlers_[fd] = Entry{events, std::move(handler)};
}

void Loop::modify(int fd, uint32_t events) {
  auto it = handlers_.find(fd);
  if (it == handlers_.end() || it->second.events == events) return;
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  int op = !it->second.events ? EPOLL_CTL_ADD : !events ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
  if (::epoll_ctl(epfd_.get(), op, fd, &ev) != 0) throw_errno("epoll_ctl");
  it->second.events = events;
}

void Loop::remove(int fd) {
  auto it = handlers_.find(fd);
  if (it == handlers_.end()) return;
  if (it->second.events) ::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr);
  handlers_.erase(it);
}

void Loop::run() {
  epoll_event events[64];
  bool busy = false;
  while (running_) {
    int n = ::epoll_wait(epfd_.get(), events, 64, busy ? 0 : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      auto it = handlers_.find(events[i].data.fd);
      if (it == handlers_.end()) continue;  // removed by an earlier handler this round
      Handler h = it->second.handler;       // the handler may remove itself
      h(events[i].events);
    }
    busy = idle_ ? idle_() : false;
  }
}

}  // namespace pitbox::init
