#include <algorithm>

#include "api/routes.h"

namespace pitbox::api {

json page_json(json items, const std::string& next_cursor) {
  return {{"items", std::move(items)},
          {"next_cursor", next_cursor.empty() ? json(nullptr) : json(next_cursor)}};
}

std::string required_path(const Request& r, const std::string& name) {
  std::string path = r.query_value(name);
  if (path.empty()) {
    throw invalid_argument("query parameter \"" + name + "\" is required", {{"field", name}});
  }
  if (path[0] != '/') {
    throw invalid_argument(
        "query parameter \"" + name + "\" must be an absolute path, not \"" + path + "\"",
        {{"field", name}});
  }
  if (path.find('\0') != std::string::npos) {
    throw invalid_argument("query parameter \"" + name + "\" must not contain NUL bytes",
                           {{"field", name}});
  }
  return path;
}

void check_fields(const json& body, std::initializer_list<std::string_view> allowed) {
  if (!body.is_object()) throw invalid_argument("the request body must be a JSON object");
  for (const auto& [k, v] : body.items()) {
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
      throw invalid_argument("unknown field \"" + k + "\"", {{"field", k}});
    }
  }
}

bool bool_field(const json& body, const std::string& name, bool fallback) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    throw invalid_argument("\"" + name + "\" must be true or false", {{"field", name}});
  }
  return it->get<bool>();
}

}  // namespace pitbox::api
