// The route table: method and path pattern ("/v1/sandboxes/{id}/exec") to handler. Also the
// list the OpenAPI test compares with the spec.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "api/http.h"

namespace pitbox::api {

using Handler = std::function<asio::awaitable<void>(Request&)>;

enum class Access {
  open,   // no key needed
  user,   // any valid key
  admin,  // the admin key only
};

struct Route {
  http::verb method;
  std::string pattern;
  Access access;
  Handler handler;
  bool mutating() const {
    return method == http::verb::post || method == http::verb::put ||
           method == http::verb::delete_ || method == http::verb::patch;
  }
};

class Router {
 public:
  void add(http::verb method, std::string pattern, Access access, Handler handler);

  // The route for `method` and `path`, with the pattern's parameters filled in. not_found when
  // no pattern matches the path; 405 when patterns match but none for this method.
  const Route& match(http::verb method, const std::string& path,
                     std::map<std::string, std::string>& params) const;
  const std::vector<Route>& routes() const { return routes_; }

 private:
  std::vector<Route> routes_;
};

// Splits a request target into its path and query; %-escapes decoded (and "+" in the query).
void parse_target(std::string_view target, std::string& path,
                  std::map<std::string, std::vector<std::string>>& query);
// Decodes %XX escapes (and "+" as a space when `plus_is_space`); invalid_argument when bad.
std::string percent_decode(std::string_view text, bool plus_is_space);

}  // namespace pitbox::api
