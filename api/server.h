// The HTTP server of the daemon: accepts connections, reads requests (HTTP/1.1 keep-alive),
// authenticates them, routes them to the handlers, and logs, counts and audits every one.
#pragma once

#include <memory>
#include <set>
#include <string>

#include "api/router.h"
#include "control/images.h"
#include "control/keys.h"
#include "control/metrics.h"
#include "control/previews.h"
#include "control/sandboxes.h"
#include "control/store.h"

namespace pitbox::api {

// What the handlers work with.
struct Services {
  control::Sandboxes& sandboxes;
  control::Keys& keys;
  control::Store& store;
  control::Metrics& metrics;
  std::string tmp_dir;  // for uploads that must be buffered (tar)
  control::Images& images;
  const control::PreviewSigner& previews;
  std::string preview_domain = "localhost";  // previews by host: {port}-{box}.{domain}
};

class PreviewProxy;

class Server {
 public:
  struct Options {
    std::string listen = "127.0.0.1:7070";  // host:port; port 0 picks a free one
    bool log_requests = true;
  };
  Server(asio::any_io_executor executor, Services services, Options options);
  ~Server();

  // Binds the address; throws naming it when that fails.
  void listen();
  asio::ip::tcp::endpoint endpoint() const { return acceptor_.local_endpoint(); }
  // Accepts connections until stop().
  void start();
  void stop();
  const Router& router() const { return router_; }

 private:
  asio::awaitable<void> accept_loop();
  asio::awaitable<void> connection(asio::ip::tcp::socket socket);
  asio::awaitable<void> handle(Request& r);
  void authenticate(Request& r, Access access);
  void finish(Request& r, const Route* route, std::chrono::steady_clock::time_point started);

  asio::any_io_executor executor_;
  Services services_;
  Options options_;
  Router router_;
  std::unique_ptr<PreviewProxy> preview_;
  asio::ip::tcp::acceptor acceptor_;
};

// Parses "host:port" ("[::1]:7070" for IPv6); names the text when it is not an address.
asio::ip::tcp::endpoint parse_listen_address(const std::string& text);

}  // namespace pitbox::api
