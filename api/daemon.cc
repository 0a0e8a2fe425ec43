#include "api/daemon.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <csignal>
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
  // A peer that goes makes writes fail with EPIPE rather than end the daemon: Asio's sends say
  // MSG_NOSIGNAL, but splice (preview bodies) cannot. Boxes do not inherit it (their init resets
  // every signal); helpers the daemon runs (pitbox-nft, mkfs.btrfs) do, and see EPIPE instead.
  ::signal(SIGPIPE, SIG_IGN);
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
    box_options.storage = options.storage;
    std::optional<net::Policy> default_network;
    if (options.network_default != "off") {
      default_network = net::Policy::from_json(options.network_default, "--network");
      box_options.network = net::NetworkOptions{.range = options.network_range};
      box_options.dns_upstream = options.dns_upstream;
    }
    node::LocalNode node(io.get_executor(), box_options);
    // However the daemon ends, its boxes keep running for the next one.
    struct DetachOnExit {
      node::LocalNode& node;
      ~DetachOnExit() { node.detach_all(); }
    } detach_on_exit{node};
    control::Metrics metrics;
    control::Sandboxes::Options sandbox_options;
    sandbox_options.pool_size = options.pool_size;
    sandbox_options.storage_driver = std::string(node.storage().name());
    sandbox_options.disk_quota = node.storage().quotas();
    sandbox_options.default_network = default_network;
    if (net::Network* network = node.network()) {
      sandbox_options.check_network = [network](const net::Policy& p) { network->check(p); };
    }
    // Set once the images service exists (below); only called after that.
    std::function<std::string()> default_image;
    sandbox_options.default_image = [&default_image] { return default_image(); };
    sandbox_options.resolve_image = [&node](const std::string& ref) {
      return node.images().resolve(ref);
    };
    sandbox_options.image_defaults = [&node](control::SandboxSpec& spec) {
      storage::ImageConfig c = node.images().get(spec.image_id).config;
      spec.image_env = c.env;
      spec.image_workdir = c.workdir == "/" ? "" : c.workdir;
      spec.image_user = c.user;
    };
    control::Sandboxes sandboxes(io.get_executor(), *store, node, metrics, sandbox_options);
    node.images().prepare();
    control::Images::Options image_options;
    image_options.state_dir = options.state_dir;
    image_options.default_image = options.default_image;
    if (const char* mirror = std::getenv("PITBOX_DEBIAN_MIRROR"))
      image_options.debian_mirror = mirror;
    control::Images images(io.get_executor(), node, sandboxes, image_options);
    default_image = [&images] { return images.default_image(); };
    if (!options.default_image.empty()) node.images().resolve(options.default_image);
    control::PreviewSigner previews =
        control::PreviewSigner::from_file(options.state_dir + "/keys/preview.key");
    Services services{sandboxes,
                      keys,
                      *store,
                      metrics,
                      options.state_dir + "/tmp",
                      images,
                      previews,
                      options.preview_domain};
    Server server(io.get_executor(), services, {options.listen, options.log_requests});
    server.listen();

    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          co_await sandboxes.recover();
          sandboxes.start_timers();
          server.start();
          sandboxes.start_pool();
          if (options.build_base) images.ensure_base_in_background();
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
