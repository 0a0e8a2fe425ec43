// A small epoll loop: one handler per fd, interest changed at will, idle work between waits.
#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <functional>
#include <map>

#include "sys/fd.h"

namespace pitbox::init {

// Interest bits as plain numbers (EPOLLIN and EPOLLOUT are enumerators).
constexpr uint32_t kReadable = EPOLLIN;
constexpr uint32_t kWritable = EPOLLOUT;

class Loop {
 public:
  using Handler = std::function<void(uint32_t events)>;

  Loop();
  // Watches `fd` for `events` (EPOLLIN/EPOLLOUT). With 0 the fd is paused: taken out of epoll
  // so that not even EPOLLHUP wakes us. The fd stays owned by the caller and must be removed
  // before it is closed.
  void add(int fd, uint32_t events, Handler handler);
  void modify(int fd, uint32_t events);
  void remove(int fd);
  bool watching(int fd) const { return handlers_.count(fd) != 0; }

  // `work` runs after every round of events; while it returns true (more to do) the loop does
  // not block.
  void set_idle(std::function<bool()> work) { idle_ = std::move(work); }
  void run();
  void stop() { running_ = false; }

 private:
  struct Entry {
    uint32_t events;
    Handler handler;
  };
  sys::UniqueFd epfd_;
  std::map<int, Entry> handlers_;
  std::function<bool()> idle_;
  bool running_ = true;
};

}  // namespace pitbox::init
