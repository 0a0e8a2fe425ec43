// The handlers of the API, by area. Each adds its routes to the router.
#pragma once

#include "api/router.h"
#include "api/server.h"

namespace pitbox::api {

void add_sandbox_routes(Router& router, Services& services);
void add_file_routes(Router& router, Services& services);
void add_terminal_route(Router& router, Services& services);
void add_admin_routes(Router& router, Services& services);
void add_image_routes(Router& router, Services& services);

// The spec of this API (api/openapi.json, built in).
std::string_view openapi_json();

// Shared by the handlers.
nlohmann::json page_json(nlohmann::json items, const std::string& next_cursor);
// The `path` query parameter: required, absolute.
std::string required_path(const Request& r, const std::string& name = "path");
// The fields of a JSON request body: an object with only `allowed` keys.
void check_fields(const nlohmann::json& body, std::initializer_list<std::string_view> allowed);
// The boolean field `name` of a body, or `fallback` when it is absent.
bool bool_field(const nlohmann::json& body, const std::string& name, bool fallback);

}  // namespace pitbox::api
