#include "api/daemon.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdio>

#include "api/server.h"
#include "control/sqlite_store.h"
#include "node/local_node.h"
#include "sys/fs.h"
#include "sys/log.h"

namespace pitbox::api {

std::string admin_key_path(const std::string& state_dir) { return state_dir + "/keys/admin.key"; }

namespace {

// One daemon per state directory.
sys::UniqueFd lock_state_dir(const std::string& state_dir) {
  std::string path = state_dir + "/daemon.lock";
  sys::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) throw_errno("opening " + path);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      throw Error(ErrorCode::conflict,
                  "another pitbox serve already uses the state directory " + state_dir);
    }
    throw_errno("locking " + path);
  }
  return fd;
}

}  // namespace

int run_daemon(const DaemonOptions& options) {
  try {
    sys::make_dirs(options.state_dir, 0711);
    sys::UniqueFd lock = lock_state_dir(options.state_dir);
    auto store = control::SqliteStore::open(options.state_dir + "/pitbox.db");
    control::Keys keys(*store);
    std::string key_path = admin_key_path(options.state_dir);
    std::string new_key = keys.ensure_admin(key_path);
    if (!new_key.empty()) {
      std::printf(
          "pitbox: the admin API key (shown this once; also kept in %s, mode 0600):\n  %s\n",
          key_path.c_str(), new_key.c_str());
      std::fflush(stdout);
    }

    asio::io_context io(1);
    node::Boxes::Options box_options;
    box_options.state_dir = options.state_dir;
    box_options.cgroup_parent = options.cgroup_parent;
    node::LocalNode node(io.get_executor(), box_options);
    // However the daemon ends, its boxes keep running for the next one.
    struct DetachOnExit {
      node::LocalNode& node;
      ~DetachOnExit() { node.detach_all(); }
    } detach_on_exit{node};
    control::Metrics metrics;
    control::Sandboxes::Options sandbox_options;
    sandbox_options.pool_size = options.pool_size;
    control::Sandboxes sandboxes(io.get_executor(), *store, node, metrics, sandbox_options);
    Services services{sandboxes, keys, *store, metrics, options.state_dir + "/tmp"};
    Server server(io.get_executor(), services, {options.listen, options.log_requests});
    server.listen();

    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          co_await sandboxes.recover();
          sandboxes.start_timers();
          server.start();
          sandboxes.start_pool();
          auto at = server.endpoint();
          sys::log(sys::LogLevel::info, "listening",
                   {{"address", at.address().to_string() + ":" + std::to_string(at.port())},
                    {"state", options.state_dir},
                    {"sandboxes", sandboxes.all().size()}});
        },
        [&](std::exception_ptr e) {
          if (!e) return;
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            sys::log(sys::LogLevel::error, "recovery failed", {{"error", ex.what()}});
          }
          io.stop();
        });

    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](boost::system::error_code ec, int sig) {
      if (ec) return;
      sys::log(sys::LogLevel::info, "shutting down; the boxes keep running",
               {{"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"}});
      server.stop();
      asio::co_spawn(io, sandboxes.shutdown(), [&](std::exception_ptr) { io.stop(); });
    });
    io.run();
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "pitbox serve: %s\n", e.message().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pitbox serve: %s\n", e.what());
  }
  return 1;
}

}  // namespace pitbox::api
