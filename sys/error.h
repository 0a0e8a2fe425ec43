// The one error type of pitbox: a code, a message naming what was wrong, optional details.
#pragma once

#include <exception>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace pitbox {

// The codes every layer uses; the API maps them to HTTP status in one place.
enum class ErrorCode {
  invalid_argument,
  not_found,
  conflict,
  resource_exhausted,
  unauthenticated,
  permission_denied,
  unavailable,
  internal,
};

std::string_view to_string(ErrorCode code);
std::optional<ErrorCode> error_code_from_string(std::string_view name);
// The code that best describes a failed system call's errno.
ErrorCode error_code_from_errno(int err);

class Error : public std::exception {
 public:
  Error(ErrorCode code, std::string message, nlohmann::json details = nullptr)
      : code_(code), message_(std::move(message)), details_(std::move(details)) {}

  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  const nlohmann::json& details() const { return details_; }
  const char* what() const noexcept override { return message_.c_str(); }

  // {"code": ..., "message": ..., "details": ...}
  nlohmann::json to_json() const;
  static Error from_json(const nlohmann::json& j);

 private:
  ErrorCode code_;
  std::string message_;
  nlohmann::json details_;
};

// Throws an Error for errno `err` (default: the current errno): "<what>: <strerror>".
[[noreturn]] void throw_errno(const std::string& what, int err = -1);

inline Error invalid_argument(std::string message, nlohmann::json details = nullptr) {
  return Error(ErrorCode::invalid_argument, std::move(message), std::move(details));
}
inline Error not_found(std::string message) {
  return Error(ErrorCode::not_found, std::move(message));
}
inline Error internal_error(std::string message) {
  return Error(ErrorCode::internal, std::move(message));
}

}  // namespace pitbox
