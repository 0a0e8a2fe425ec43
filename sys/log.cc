#include "sys/log.h"

#include <unistd.h>

#include "sys/fs.h"
#include "sys/text.h"

namespace pitbox::sys {

void log(LogLevel level, std::string_view message, nlohmann::json fields) {
  static constexpr const char* kNames[] = {"debug", "info", "warn", "error"};
  nlohmann::json line = {{"time", format_time(now_ms())},
                         {"level", kNames[static_cast<int>(level)]},
                         {"msg", message}};
  if (fields.is_object()) line.update(fields);
  // One write per line, so that lines of concurrent writers never interleave.
  write_all(STDERR_FILENO,
            line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

}  // namespace pitbox::sys
