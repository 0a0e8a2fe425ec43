// File operations of the box protocol, every path resolved inside the box root
// (openat2 RESOLVE_IN_ROOT): no "..", absolute symlink or /proc magic link leads out of it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "sys/fd.h"

namespace pitbox::init {

// "a//b/./c/../d" -> "/a/b/d": absolute, no ".", "..", or repeated slashes; ".." stops at "/".
std::string clean_path(const std::string& path);

// stat, list, mkdir, remove, rename, chmod: the request's JSON in, the result's JSON out.
// Throws Error naming the path at fault.
nlohmann::json file_operation(int rootfd, const std::string& op, const nlohmann::json& request);
bool is_file_operation(const std::string& op);

// Opens a file for a streamed read; fills the reply ({"size", "mode", ...}).
sys::UniqueFd open_for_read(int rootfd, const nlohmann::json& request, nlohmann::json& reply);
// Opens (creating) a file for a streamed write.
sys::UniqueFd open_for_write(int rootfd, const nlohmann::json& request);

}  // namespace pitbox::init
