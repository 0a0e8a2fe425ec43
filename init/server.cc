#include "init/server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "init/files.h"
#include "proto/messages.h"
#include "sys/error.h"

namespace pitbox::init {

using nlohmann::json;
using proto::FrameType;

namespace {

// When the node is slow to read, stop producing before this much is queued for it.
constexpr size_t kOutputHighWater = 8u << 20;

uint32_t window_from(const json& request) {
  uint32_t w = request.value("window", uint32_t{0});
  if (w == 0) return proto::kDefaultWindow;
  return std::min(w, proto::kMaxWindow);
}

size_t bytes_waiting(int fd) {
  int n = 0;
  if (fd < 0 || ::ioctl(fd, FIONREAD, &n) != 0 || n < 0) return 0;
  return static_cast<size_t>(n);
}

}  // namespace

Server::Server(Loop& loop, sys::UniqueFd channel, Options options)
    : loop_(loop), channel_(std::move(channel)), options_(options) {
  loop_.set_idle([this] { return pump_reads(); });
}

void Server::start() {
  loop_.add(channel_.get(), EPOLLIN, [this](uint32_t ev) { on_channel(ev); });
  make_spare();
  say_hello();
}

void Server::say_hello() {
  proto::Hello hello{proto::kVersion,
                     std::string("pitbox-init/") + PITBOX_VERSION,
                     {"pty", "files", "signals", "find", "grep", "reattach"},
                     {}};
  for (const auto& [stream, p] : processes_) {
    hello.processes.push_back({stream, p->pid, p->argv, p->tty, p->exit_status.has_value()});
  }
  send_json(FrameType::hello, 0, hello);
}

void Server::make_spare() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) != 0) {
    std::fprintf(stderr, "pitbox-init: no spare channel: %s\n", std::strerror(errno));
    return;
  }
  sys::UniqueFd node(fds[0]), mine(fds[1]);
  // Our end must not sit on the agreed number, and nothing else may be there.
  if (mine.get() == proto::kSpareChannelFd) {
    mine = sys::UniqueFd(::fcntl(mine.get(), F_DUPFD_CLOEXEC, proto::kSpareChannelFd + 1));
  }
  if (node.get() != proto::kSpareChannelFd) {
    bool taken = ::fcntl(proto::kSpareChannelFd, F_GETFD) >= 0;
    if (taken || !mine || ::dup3(node.get(), proto::kSpareChannelFd, O_CLOEXEC) < 0) {
      std::fprintf(stderr, "pitbox-init: no spare channel (fd %d %s)\n", proto::kSpareChannelFd,
                   taken ? "is taken" : "failed");
      return;
    }
    node = sys::UniqueFd(proto::kSpareChannelFd);
  }
  spare_node_ = std::move(node);
  spare_init_ = std::move(mine);
  loop_.add(spare_init_.get(), EPOLLIN, [this](uint32_t ev) { on_spare(ev); });
}

// A node took the spare's other end (pidfd_getfd) and spoke: it is the channel from now on.
// The old channel, if any, belonged to a node that is gone (a daemon restarted).
void Server::on_spare(uint32_t) {
  if (channel_) {
    loop_.remove(channel_.get());
    channel_.reset();
  }
  out_.clear();
  out_pos_ = 0;
  reads_.clear();
  writes_.clear();
  decoder_ = proto::FrameDecoder();
  hello_received_ = false;
  loop_.remove(spare_init_.get());
  channel_ = std::move(spare_init_);
  spare_node_.reset();  // the node has its own copy now
  channel_up_ = true;
  loop_.add(channel_.get(), EPOLLIN, [this](uint32_t ev) { on_channel(ev); });
  make_spare();
  // Output waits until the new node grants a window to the processes it follows.
  for (auto& [stream, p] : processes_) {
    p->credit = 0;
    update_interest(*p);
  }
  say_hello();
  on_channel(EPOLLIN);
}

// ---------------------------------------------------------------------------------------------
// The channel

void Server::send(FrameType type, uint32_t stream, std::string_view payload) {
  if (!channel_up_) return;
  bool idle = out_pos_ == out_.size();
  proto::append_frame(out_, type, stream, payload);
  if (idle) flush();
}

void Server::send_json(FrameType type, uint32_t stream, const json& body) {
  std::string text = body.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > proto::kMaxPayload) {
    // The node would drop the channel over it: say what happened instead.
    text = proto::error_response(
               Error(ErrorCode::resource_exhausted, "the answer is " + std::to_string(text.size()) +
                                                        " bytes, above the protocol's frame limit"))
               .dump();
  }
  send(type, stream, text);
}

void Server::flush() {
  while (channel_up_ && out_pos_ < out_.size()) {
    ssize_t n = ::write(channel_.get(), out_.data() + out_pos_, out_.size() - out_pos_);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      channel_lost(std::string("write: ") + std::strerror(errno));
      return;
    }
    out_pos_ += static_cast<size_t>(n);
  }
  if (!channel_up_) return;
  if (out_pos_ == out_.size()) {
    out_.clear();
    out_pos_ = 0;
  } else if (out_pos_ > (1u << 20)) {
    out_.erase(0, out_pos_);
    out_pos_ = 0;
  }
  loop_.modify(channel_.get(), kReadable | (out_pos_ < out_.size() ? kWritable : 0));
}

void Server::channel_lost(const std::string& why) {
  if (!channel_up_) return;
  std::fprintf(stderr, "pitbox-init: channel closed (%s); processes keep running\n", why.c_str());
  channel_up_ = false;
  loop_.remove(channel_.get());
  channel_.reset();
  out_.clear();
  out_pos_ = 0;
  reads_.clear();
  writes_.clear();
  // Nobody is listening: stop reading output, so it waits in the pipes.
  for (auto& [stream, p] : processes_) {
    p->credit = 0;
    update_interest(*p);
  }
}

void Server::on_channel(uint32_t events) {
  if (events & EPOLLOUT) flush();
  if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
  char buf[65536];
  ssize_t n = ::read(channel_.get(), buf, sizeof buf);
  if (n < 0) {
    if (errno == EINTR || errno == EAGAIN) return;
    channel_lost(std::string("read: ") + std::strerror(errno));
    return;
  }
  if (n == 0) {
    channel_lost("end of stream");
    return;
  }
  decoder_.feed(std::string_view(buf, static_cast<size_t>(n)));
  try {
    while (channel_up_) {
      auto frame = decoder_.next();
      if (!frame) break;
      handle(*frame);
    }
  } catch (const Error& e) {
    // A corrupt stream cannot be resynchronised.
    channel_lost(e.message());
  }
}

void Server::handle(proto::Frame& frame) {
  switch (frame.type) {
    case FrameType::hello: {
      auto hello = proto::parse_payload(frame.payload, "hello").get<proto::Hello>();
      if (hello.version != proto::kVersion) {
        throw invalid_argument("box protocol version " + std::to_string(hello.version) +
                               " is not supported (init speaks " + std::to_string(proto::kVersion) +
                               ")");
      }
      hello_received_ = true;
      return;
    }
    case FrameType::request: {
      json request;
      try {
        request = proto::parse_payload(frame.payload, "request");
      } catch (const Error& e) {
        send_json(FrameType::response, frame.stream, proto::error_response(e));
        return;
      }
      handle_request(frame.stream, request);
      return;
    }
    case FrameType::stdin: {
      auto it = processes_.find(frame.stream);
      if (it == processes_.end() || !it->second->input) return;  // it already ended
      Process& p = *it->second;
      if (frame.payload.empty()) {
        if (p.tty) {
          p.stdin_pending += '\x04';  // end of input on a terminal is ^D
        } else {
          p.stdin_close_requested = true;
        }
      } else {
        p.stdin_pending += frame.payload;
      }
      write_input(p);
      return;
    }
    case FrameType::window: {
      auto inc = proto::decode_window(frame.payload);
      if (!inc) throw invalid_argument("box protocol: malformed window frame");
      if (auto it = processes_.find(frame.stream); it != processes_.end()) {
        Process& p = *it->second;
        p.credit =
            static_cast<uint32_t>(std::min<uint64_t>(uint64_t{p.credit} + *inc, proto::kMaxWindow));
        update_interest(p);
      } else if (auto r = reads_.find(frame.stream); r != reads_.end()) {
        r->second.credit = static_cast<uint32_t>(
            std::min<uint64_t>(uint64_t{r->second.credit} + *inc, proto::kMaxWindow));
      }
      return;
    }
    case FrameType::data:
      on_data(frame.stream, frame.payload);
      return;
    case FrameType::response:
    case FrameType::exit:
    case FrameType::stdout:
    case FrameType::stderr:
      throw invalid_argument("box protocol: init does not accept " +
                             std::string(proto::to_string(frame.type)) + " frames");
  }
}

bool Server::stream_in_use(uint32_t stream) const {
  return processes_.count(stream) || reads_.count(stream) || writes_.count(stream);
}

void Server::handle_request(uint32_t stream, const json& request) {
  std::string op = request.is_object() ? request.value("op", std::string()) : std::string();
  try {
    if (!hello_received_) throw invalid_argument("the node has not said hello yet");
    if (op.empty()) throw invalid_argument("request has no \"op\"");
    json result = run_request(stream, op, request);
    if (!result.is_null()) send_json(FrameType::response, stream, proto::ok_response(result));
  } catch (const Error& e) {
    send_json(FrameType::response, stream, proto::error_response(e));
    if (op == "write" && !writes_.count(stream)) writes_[stream].failed = true;
  } catch (const json::exception& e) {
    send_json(FrameType::response, stream,
              proto::error_response(invalid_argument(op + ": malformed request: " + e.what())));
    if (op == "write" && !writes_.count(stream)) writes_[stream].failed = true;
  }
}

// The result of a request, or null when the response comes later (file writes).
json Server::run_request(uint32_t stream, const std::string& op, const json& request) {
  if (op == "ping") return json::object();
  if (op == "shutdown") {
    int grace = request.value("grace_ms", 10000);
    if (grace < 0 || grace > 3600000)
      throw invalid_argument("\"grace_ms\" must be from 0 to 3600000");
    begin_shutdown(grace);
    return json::object();
  }
  if (op == "spawn" || op == "read" || op == "write") {
    if (stream == 0 || stream_in_use(stream)) {
      throw Error(ErrorCode::conflict, "stream " + std::to_string(stream) + " is already in use");
    }
  }
  if (op == "spawn") {
    json reply;
    spawn(stream, request, reply);
    return reply;
  }
  if (op == "signal" || op == "resize") {
    uint32_t target = request.at("target").get<uint32_t>();
    auto it = processes_.find(target);
    if (it == processes_.end()) throw not_found("no process on stream " + std::to_string(target));
    Process& p = *it->second;
    if (op == "resize") {
      if (!p.tty)
        throw invalid_argument("process on stream " + std::to_string(target) + " has no terminal");
      winsize ws{};
      ws.ws_row = request.at("rows").get<uint16_t>();
      ws.ws_col = request.at("cols").get<uint16_t>();
      if (!ws.ws_row || !ws.ws_col) throw invalid_argument("rows and cols must be more than zero");
      if (::ioctl(p.input.get(), TIOCSWINSZ, &ws) != 0) throw_errno("resize");
      return json::object();
    }
    int sig = request.at("signal").get<int>();
    if (sig < 1 || sig > 64)
      throw invalid_argument("signal " + std::to_string(sig) + " is not a signal number");
    if (!p.exit_status) {
      bool group = request.value("group", true);
      if (::kill(group ? -p.pid : p.pid, sig) != 0 && errno != ESRCH) throw_errno("kill");
    }
    return json::object();
  }
  if (op == "read") {
    json reply;
    Read r;
    r.fd = open_for_read(options_.rootfd, request, reply);
    r.credit = window_from(request);
    int64_t length = request.value("length", int64_t{-1});
    r.left = length < 0 ? UINT64_MAX : static_cast<uint64_t>(length);
    reads_[stream] = std::move(r);
    return reply;
  }
  if (op == "write") {
    Write w;
    w.fd = open_for_write(options_.rootfd, request);
    writes_[stream] = std::move(w);
    return nullptr;
  }
  if (is_file_operation(op)) return file_operation(options_.rootfd, op, request);
  throw invalid_argument("unknown operation \"" + op + "\"");
}

// ---------------------------------------------------------------------------------------------
// Processes

void Server::spawn(uint32_t stream, const json& request, json& reply) {
  auto req = request.get<proto::SpawnRequest>();
  SpawnOptions opts;
  opts.rootfd = options_.rootfd;
  opts.devnull = options_.devnull;
  opts.devpts = options_.devpts;
  std::unique_ptr<Process> p = spawn_process(stream, req, opts);
  p->credit = req.window ? std::min(req.window, proto::kMaxWindow) : proto::kDefaultWindow;
  Process& proc = *p;
  processes_[stream] = std::move(p);
  pids_[proc.pid] = stream;
  for (int fd : {proc.input.get(), proc.output.get(), proc.errors.get()}) {
    if (fd >= 0)
      loop_.add(fd, 0, [this, stream, fd](uint32_t ev) { on_process_fd(stream, fd, ev); });
  }
  update_interest(proc);
  reply = proto::SpawnReply{proc.pid, proto::kDefaultWindow};
}

void Server::update_interest(Process& p) {
  bool below_high_water = out_.size() - out_pos_ < kOutputHighWater;
  if (!below_high_water) throttled_ = true;
  bool can_send = channel_up_ && p.credit > 0 && below_high_water;
  bool want_write = !p.stdin_pending.empty();
  if (p.tty) {
    if (p.input) {
      loop_.modify(p.input.get(),
                   (can_send && !p.output_done ? kReadable : 0) | (want_write ? kWritable : 0));
    }
    return;
  }
  if (p.input) loop_.modify(p.input.get(), want_write ? kWritable : 0);
  if (p.output) loop_.modify(p.output.get(), can_send ? kReadable : 0);
  if (p.errors) loop_.modify(p.errors.get(), can_send ? kReadable : 0);
}

void Server::on_process_fd(uint32_t stream, int fd, uint32_t events) {
  auto it = processes_.find(stream);
  if (it == processes_.end()) return;
  Process& p = *it->second;
  if (fd == p.input.get() && (events & (EPOLLOUT | EPOLLERR)) && !p.stdin_pending.empty()) {
    write_input(p);
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    if (p.tty && fd == p.input.get() && !p.output_done) read_output(p, false);
    if (fd == p.output.get()) read_output(p, false);
    if (fd == p.errors.get()) read_output(p, true);
  }
  if (processes_.count(stream)) {
    update_interest(p);
    maybe_finish(p);
  }
}

void Server::read_output(Process& p, bool errors) {
  int fd = p.tty ? p.input.get() : (errors ? p.errors.get() : p.output.get());
  std::optional<size_t>& left = errors ? p.errors_left : p.output_left;
  if (fd < 0 || p.credit == 0) return;
  size_t want = std::min<size_t>(p.credit, proto::kDataChunk);
  if (left) want = std::min(want, *left);
  char buf[proto::kDataChunk];
  ssize_t n = want ? ::read(fd, buf, want) : 0;
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {  // end of output (EIO on a terminal whose other side is gone)
    close_output(p, errors);
    return;
  }
  p.credit -= static_cast<uint32_t>(n);
  if (left) *left -= static_cast<size_t>(n);
  send(errors ? FrameType::stderr : FrameType::stdout, p.stream,
       std::string_view(buf, static_cast<size_t>(n)));
  if (left && *left == 0) close_output(p, errors);
}

void Server::close_output(Process& p, bool errors) {
  bool& done = errors ? p.errors_done : p.output_done;
  if (done) return;
  done = true;
  send(errors ? FrameType::stderr : FrameType::stdout, p.stream, "");
  if (p.tty) return;  // the master also carries input; it closes with the process
  sys::UniqueFd& fd = errors ? p.errors : p.output;
  loop_.remove(fd.get());
  fd.reset();
}

void Server::write_input(Process& p) {
  size_t total = 0;
  while (!p.stdin_pending.empty() && p.input) {
    ssize_t n = ::write(p.input.get(), p.stdin_pending.data(), p.stdin_pending.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      p.stdin_pending.clear();  // the reader is gone (EPIPE): nothing more can be delivered
      if (!p.tty) p.stdin_close_requested = true;
      break;
    }
    p.stdin_pending.erase(0, static_cast<size_t>(n));
    total += static_cast<size_t>(n);
  }
  if (total) send(FrameType::window, p.stream, proto::encode_window(static_cast<uint32_t>(total)));
  if (p.stdin_close_requested && p.stdin_pending.empty() && p.input && !p.tty) {
    loop_.remove(p.input.get());
    p.input.reset();
  }
  update_interest(p);
}

void Server::child_exited(pid_t pid, const sys::ExitStatus& status) {
  auto it = pids_.find(pid);
  if (it == pids_.end()) return;  // an orphan we only had to reap
  uint32_t stream = it->second;
  pids_.erase(it);
  auto pit = processes_.find(stream);
  if (pit == processes_.end()) return;
  Process& p = *pit->second;
  p.exit_status = status;
  // Forward what the process wrote before it ended, but do not wait for descendants that still
  // hold its pipes open.
  if (p.tty) {
    if (!p.output_done) p.output_left = bytes_waiting(p.input.get());
  } else {
    if (!p.output_done) p.output_left = bytes_waiting(p.output.get());
    if (!p.errors_done) p.errors_left = bytes_waiting(p.errors.get());
  }
  if (p.output_left && *p.output_left == 0) close_output(p, false);
  if (p.errors_left && *p.errors_left == 0) close_output(p, true);
  update_interest(p);
  maybe_finish(p);
}

void Server::maybe_finish(Process& p) {
  if (!p.exit_status || !p.output_done || !p.errors_done) return;
  send_json(FrameType::exit, p.stream, proto::exit_to_json(*p.exit_status));
  for (sys::UniqueFd* fd : {&p.input, &p.output, &p.errors}) {
    if (*fd) loop_.remove(fd->get());
  }
  processes_.erase(p.stream);  // destroys p
}

// Every process of the box: with init as PID 1 that is kill(-1), which also reaches orphans and
// daemons it never started; otherwise (tests) the process groups it started.
void Server::signal_everyone(int sig) {
  if (::getpid() == 1) {
    ::kill(-1, sig);
    return;
  }
  for (auto& [stream, p] : processes_) {
    if (!p->exit_status) ::kill(-p->pid, sig);
  }
}

// Stopping a box: SIGTERM to everything, SIGKILL to what is left after the grace period; init
// exits once every process is gone, which ends the box.
void Server::begin_shutdown(int grace_ms) {
  if (shutting_down_) return;
  shutting_down_ = true;
  signal_everyone(SIGTERM);
  shutdown_timer_ = sys::UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (shutdown_timer_) {
    itimerspec when{};
    when.it_value.tv_sec = grace_ms / 1000;
    when.it_value.tv_nsec = (grace_ms % 1000) * 1000000L + 1;
    ::timerfd_settime(shutdown_timer_.get(), 0, &when, nullptr);
    loop_.add(shutdown_timer_.get(), EPOLLIN, [this](uint32_t) {
      loop_.remove(shutdown_timer_.get());
      signal_everyone(SIGKILL);
    });
  }
  after_reaping();
}

void Server::after_reaping() {
  if (!shutting_down_) return;
  if (::waitid(P_ALL, 0, nullptr, WEXITED | WNOHANG | WNOWAIT | __WALL) == 0) return;  // some left
  if (errno != ECHILD) return;
  flush();
  std::exit(0);
}

void Server::forward_signal(int sig) {
  for (auto& [stream, p] : processes_) {
    if (!p->exit_status) ::kill(-p->pid, sig);
  }
}

// ---------------------------------------------------------------------------------------------
// File transfers

void Server::on_data(uint32_t stream, std::string& bytes) {
  // An empty data frame on a read: the node gave it up.
  if (auto r = reads_.find(stream); r != reads_.end() && bytes.empty()) {
    reads_.erase(r);
    return;
  }
  auto it = writes_.find(stream);
  if (it == writes_.end()) return;  // a transfer that already failed and was forgotten
  Write& w = it->second;
  if (bytes.empty()) {  // end of the file
    if (!w.failed) {
      bool ok = ::close(w.fd.release()) == 0;
      if (ok) {
        send_json(FrameType::response, stream, proto::ok_response({{"written", w.written}}));
      } else {
        send_json(FrameType::response, stream,
                  proto::error_response(Error(error_code_from_errno(errno),
                                              std::string("write: ") + std::strerror(errno))));
      }
    }
    writes_.erase(it);
    return;
  }
  if (w.failed) return;
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::write(w.fd.get(), bytes.data() + off, bytes.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      w.failed = true;
      w.fd.reset();
      send_json(FrameType::response, stream,
                proto::error_response(Error(error_code_from_errno(errno),
                                            std::string("write: ") + std::strerror(errno))));
      return;
    }
    off += static_cast<size_t>(n);
  }
  w.written += bytes.size();
  send(FrameType::window, stream, proto::encode_window(static_cast<uint32_t>(bytes.size())));
}

bool Server::pump_reads() {
  bool more = false;
  for (auto it = reads_.begin(); it != reads_.end();) {
    if (out_.size() - out_pos_ >= kOutputHighWater) return false;  // flush() wakes us again
    Read& r = it->second;
    if (r.credit == 0) {
      ++it;
      continue;
    }
    char buf[proto::kDataChunk];
    size_t want = static_cast<size_t>(std::min<uint64_t>({r.credit, proto::kDataChunk, r.left}));
    ssize_t n = want ? ::read(r.fd.get(), buf, want) : 0;
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // End of file (or a read error, reported as a short file: the size was in the reply).
      send(FrameType::data, it->first, "");
      it = reads_.erase(it);
      continue;
    }
    r.credit -= static_cast<uint32_t>(n);
    r.left -= static_cast<uint64_t>(n);
    send(FrameType::data, it->first, std::string_view(buf, static_cast<size_t>(n)));
    more = more || r.credit > 0;
    ++it;
  }
  // Processes paused by the high-water mark resume once the channel drains.
  if (throttled_ && channel_up_ && out_.size() - out_pos_ < kOutputHighWater) {
    throttled_ = false;
    for (auto& [stream, p] : processes_) update_interest(*p);
  }
  return more;
}

}  // namespace pitbox::init
