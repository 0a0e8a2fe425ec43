// Preview links to the ports of sandboxes (see preview.cc), and their routes.
#pragma once

#include <optional>
#include <string>

#include "api/http.h"
#include "api/router.h"
#include "api/server.h"

namespace pitbox::api {

struct PreviewTarget {
  std::string box;  // id or name, as asked
  int port = 0;
  std::string prefix;           // path previews: "/v1/sandboxes/ID/ports/PORT/proxy"
  std::string upstream_target;  // what the app is asked for ("/index.html?x=1")
};

// The preview a request asks for: by its Host header's value ({port}-{box}.{domain}[:port],
// any case) or its target (/v1/sandboxes/{box}/ports/{port}/proxy[/...|?...]); none when it
// asks for no preview.
std::optional<PreviewTarget> preview_target(std::string_view host, std::string_view target,
                                            std::string_view domain);

class PreviewProxy {
 public:
  explicit PreviewProxy(Services& services);
  // A request for a preview: by its Host ({port}-{box}.{domain}) or its path.
  std::optional<PreviewTarget> match(const Request& r) const;
  asio::awaitable<void> serve(Request& r, PreviewTarget target);
  // The two addresses of a port's preview, as seen by the client of `r`.
  std::string host_url(const Request& r, const std::string& id, int port) const;
  std::string path_url(const Request& r, const std::string& id, int port) const;

 private:
  Services& services_;
};

// GET .../ports, POST .../ports/{port}/preview-url, DELETE .../preview-urls.
void add_preview_routes(Router& router, Services& services, PreviewProxy& proxy);

}  // namespace pitbox::api
