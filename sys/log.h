// Structured logs: one JSON object a line on stderr ({"time", "level", "msg", ...fields}).
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

namespace pitbox::sys {

enum class LogLevel { debug, info, warn, error };

void log(LogLevel level, std::string_view message,
         nlohmann::json fields = nlohmann::json::object());

}  // namespace pitbox::sys
