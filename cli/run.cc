#include "cli/run.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "cli/terminal.h"
#include "node/boxes.h"
#include "node/channel.h"
#include "sys/error.h"
#include "sys/fs.h"
#include "sys/units.h"

namespace pitbox::cli {

namespace asio = boost::asio;

namespace {

constexpr uint64_t kMinMemory = 6ull << 20;

node::BoxRequest box_request(const RunOptions& o) {
  node::BoxRequest r;
  r.image = o.image;
  r.one_shot = true;
  if (!o.cpus.empty()) {
    r.limits.millicpus = sys::parse_millicpus(o.cpus);
    long online = ::sysconf(_SC_NPROCESSORS_ONLN);
    if (online > 0 && r.limits.millicpus > static_cast<uint64_t>(online) * 1000) {
      throw invalid_argument("--cpus " + o.cpus + " is more than the " + std::to_string(online) +
                             " CPUs of this machine");
    }
  }
  if (!o.memory.empty()) {
    r.limits.memory_bytes = sys::parse_size(o.memory);
    if (r.limits.memory_bytes < kMinMemory) {
      throw invalid_argument("--memory " + o.memory + " is below the minimum of " +
                             sys::format_size(kMinMemory));
    }
  }
  if (!o.pids.empty()) {
    char* end = nullptr;
    errno = 0;
    long long n = std::strtoll(o.pids.c_str(), &end, 10);
    if (errno || end == o.pids.c_str() || *end || n < 2 || n > 4194304) {
      throw invalid_argument("--pids \"" + o.pids +
                             "\" must be a whole number from 2 (init and the command) to 4194304");
    }
    r.limits.pids = static_cast<uint64_t>(n);
  }
  return r;
}

std::vector<std::string> command_env(const RunOptions& o, const storage::Image& image) {
  std::vector<std::string> env = image.config.env;
  for (const auto& e : o.env) {
    if (e.empty() || e[0] == '=')
      throw invalid_argument("--env \"" + e + "\" has no variable name");
    if (e.find('=') != std::string::npos) {
      env.push_back(e);
    } else if (const char* v = std::getenv(e.c_str())) {
      env.push_back(e + "=" + v);  // --env NAME passes the variable through, like docker
    }
  }
  return env;
}

// Whether epoll can wait on `fd`: pipes, sockets and terminals yes; regular files and devices
// such as /dev/null no (they are always ready).
bool pollable(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return false;
  if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) return true;
  return S_ISCHR(st.st_mode) && ::isatty(fd);
}

class Session {
 public:
  // Catches signals from here on, so that ^C while the box starts still cleans up.
  Session(asio::io_context& io, const RunOptions& options, bool attach_stdin)
      : io_(io),
        options_(options),
        attach_stdin_(attach_stdin),
        signals_(io, SIGINT, SIGTERM, SIGHUP),
        winch_(io, SIGWINCH) {
    signals_.add(SIGQUIT);
  }

  void start(node::LocalBox& box) {
    box_ = &box;
    wait_signal();
    if (options_.tty) wait_winch();
    asio::co_spawn(io_, main(), [this](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const Error& err) {
          error_ = err;
        } catch (const std::exception& err) {
          error_ = internal_error(err.what());
        }
      }
      stop();
    });
  }

  std::optional<sys::ExitStatus> status() const { return status_; }
  int interrupted() const { return interrupted_; }
  const std::optional<Error>& error() const { return error_; }

 private:
  asio::awaitable<void> main() {
    channel_ = std::make_shared<node::Channel>(io_.get_executor(), box_->box().take_channel());
    if (interrupted_) co_return;  // a signal came while the box was being made
    channel_->start();            // the spawn request follows the hello without waiting for init's
    proto::SpawnRequest req;
    req.argv = options_.command;
    req.env = command_env(options_, box_->image());
    req.cwd = options_.workdir.empty() ? box_->image().config.workdir : options_.workdir;
    req.create_cwd = !options_.workdir.empty();
    req.user = options_.user.empty() ? box_->image().config.user : options_.user;
    req.tty = options_.tty;
    if (options_.tty) {
      auto size = terminal_size(STDIN_FILENO);
      if (!size) size = terminal_size(STDOUT_FILENO);
      if (size) {
        req.rows = size->rows;
        req.cols = size->cols;
      }
    }
    req.stdin = attach_stdin_;
    process_ = co_await channel_->spawn(req);
    if (attach_stdin_) asio::co_spawn(io_, pump_stdin(), asio::detached);
    for (;;) {
      node::ProcessEvent ev = co_await process_->next();
      if (ev.kind == node::ProcessEvent::Kind::stdout) write_out(STDOUT_FILENO, ev.data);
      if (ev.kind == node::ProcessEvent::Kind::stderr) write_out(STDERR_FILENO, ev.data);
      if (ev.kind == node::ProcessEvent::Kind::exit) {
        status_ = ev.status;
        co_return;
      }
    }
  }

  // Reads our stdin and feeds it to the process. Terminals and pipes are waited on; files
  // and /dev/null are always ready and read directly.
  asio::awaitable<void> pump_stdin() {
    auto process = process_;
    char buf[65536];
    std::optional<asio::posix::stream_descriptor> in;
    if (pollable(STDIN_FILENO)) {
      int fd = ::dup(STDIN_FILENO);
      if (fd >= 0) in.emplace(io_, fd);
    }
    stdin_ = in ? &*in : nullptr;
    try {
      for (;;) {
        if (in) {
          boost::system::error_code ec;  // cancelled at the end: not worth an exception
          co_await in->async_wait(asio::posix::stream_descriptor::wait_read,
                                  asio::redirect_error(asio::use_awaitable, ec));
          if (ec) break;
        }
        ssize_t n = ::read(in ? in->native_handle() : STDIN_FILENO, buf, sizeof buf);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) break;
        co_await process->write_stdin(std::string_view(buf, static_cast<size_t>(n)));
      }
      process->close_stdin();
    } catch (const std::exception&) {
      // Cancelled at the end, or the box went away: nothing more to send.
    }
    stdin_ = nullptr;
  }

  void wait_signal() {
    signals_.async_wait([this](boost::system::error_code ec, int sig) {
      if (ec) return;
      forward(sig);
      wait_signal();
    });
  }

  void wait_winch() {
    winch_.async_wait([this](boost::system::error_code ec, int) {
      if (ec) return;
      if (process_) {
        if (auto size = terminal_size(STDIN_FILENO)) {
          asio::co_spawn(io_, process_->resize(size->rows, size->cols), asio::detached);
        }
      }
      wait_winch();
    });
  }

  // Signals to pitbox go to the command's process group in the box, as if it ran here.
  void forward(int sig) {
    if (!process_) {
      // The command has not started: give up on it (this also ends a wait for an init that
      // does not answer).
      interrupted_ = sig;
      if (channel_) channel_->close();
      return;
    }
    asio::co_spawn(io_, process_->signal(sig), asio::detached);
  }

  void stop() {
    boost::system::error_code ec;
    signals_.cancel(ec);
    winch_.cancel(ec);
    if (stdin_) stdin_->cancel(ec);
    if (channel_) channel_->close();
  }

  asio::io_context& io_;
  node::LocalBox* box_ = nullptr;
  const RunOptions& options_;
  bool attach_stdin_;
  asio::signal_set signals_;
  asio::signal_set winch_;
  std::shared_ptr<node::Channel> channel_;
  std::shared_ptr<node::Process> process_;
  asio::posix::stream_descriptor* stdin_ = nullptr;
  int interrupted_ = 0;  // a signal that came before the command started
  std::optional<sys::ExitStatus> status_;
  std::optional<Error> error_;
};

void print_error(const std::string& message) {
  std::fprintf(stderr, "pitbox: %s\n", message.c_str());
}

// What pitbox-init said before things went wrong, if anything.
void print_init_log(runtime::Box& box) {
  sys::UniqueFd log = box.take_init_log();
  if (!log) return;
  ::fcntl(log.get(), F_SETFL, O_NONBLOCK);
  char buf[4096];
  ssize_t n = ::read(log.get(), buf, sizeof buf);
  if (n > 0) write_out(STDERR_FILENO, std::string_view(buf, static_cast<size_t>(n)));
}

}  // namespace

int run_command(const GlobalOptions& global, const RunOptions& options) {
  if (options.command.empty()) {
    print_error("run: no command given (usage: pitbox run [OPTIONS] [--] COMMAND [ARG...])");
    return kExitPitboxError;
  }
  if (::geteuid() != 0) {
    print_error(
        "run needs root: it makes namespaces, cgroups and mounts (rootless boxes are not "
        "supported yet)");
    return kExitPitboxError;
  }
  if (!options.workdir.empty() && options.workdir[0] != '/') {
    print_error("--workdir \"" + options.workdir + "\" must be an absolute path");
    return kExitPitboxError;
  }
  try {
    node::BoxRequest request = box_request(options);
    bool attach_stdin = options.tty || options.interactive || !::isatty(STDIN_FILENO);
    asio::io_context io;
    std::optional<Session> session;
    session.emplace(io, options, attach_stdin);
    node::Boxes boxes({.state_dir = global.state_dir, .cgroup_parent = global.cgroup_parent});
    boxes.sweep();
    std::unique_ptr<node::LocalBox> box = boxes.create(request);
    std::optional<RawMode> raw;
    if (options.tty) raw.emplace(STDIN_FILENO);
    session->start(*box);
    io.run();
    raw.reset();
    int code;
    if (auto status = session->status()) {
      code = status->shell_code();
      if (status->signal == SIGKILL && box->stats().oom_kills > 0) {
        print_error("the command ran out of memory" +
                    (request.limits.memory_bytes
                         ? " (limit " + sys::format_size(request.limits.memory_bytes) + ")"
                         : std::string()) +
                    " and was killed");
      }
    } else if (session->interrupted()) {
      code = 128 + session->interrupted();  // like a shell whose command got the signal
    } else {
      const Error& e = *session->error();
      if (box->stats().oom_kills > 0) {
        print_error("the box ran out of memory and was killed");
        code = 128 + SIGKILL;
      } else {
        print_error(e.message());
        // The channel broke (rather than init refusing a request): what did init say?
        if (e.code() == ErrorCode::unavailable) print_init_log(box->box());
        code = kExitPitboxError;
      }
    }
    session.reset();
    box->destroy();
    return code;
  } catch (const Error& e) {
    print_error(e.message());
    return kExitPitboxError;
  } catch (const std::exception& e) {
    print_error(e.what());
    return kExitPitboxError;
  }
}

}  // namespace pitbox::cli
