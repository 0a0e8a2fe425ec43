#include "sys/error.h"

#include <array>
#include <cerrno>
#include <cstring>
#include <utility>

namespace pitbox {
namespace {

constexpr std::array<std::pair<ErrorCode, std::string_view>, 8> kNames{{
    {ErrorCode::invalid_argument, "invalid_argument"},
    {ErrorCode::not_found, "not_found"},
    {ErrorCode::conflict, "conflict"},
    {ErrorCode::resource_exhausted, "resource_exhausted"},
    {ErrorCode::unauthenticated, "unauthenticated"},
    {ErrorCode::permission_denied, "permission_denied"},
    {ErrorCode::unavailable, "unavailable"},
    {ErrorCode::internal, "internal"},
}};

}  // namespace

std::string_view to_string(ErrorCode code) {
  for (const auto& [c, name] : kNames) {
    if (c == code) return name;
  }
  return "internal";
}

std::optional<ErrorCode> error_code_from_string(std::string_view name) {
  for (const auto& [c, n] : kNames) {
    if (n == name) return c;
  }
  return std::nullopt;
}

ErrorCode error_code_from_errno(int err) {
  switch (err) {
    case ENOENT:
    case ESRCH:
    case ENXIO:
    case ENODEV:
      return ErrorCode::not_found;
    case EEXIST:
    case ENOTEMPTY:
    case EBUSY:
    case ETXTBSY:
      return ErrorCode::conflict;
    case EACCES:
    case EPERM:
    case EROFS:
      return ErrorCode::permission_denied;
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
    case EAGAIN:
    case EFBIG:
      return ErrorCode::resource_exhausted;
    case EINVAL:
    case ENAMETOOLONG:
    case ENOTDIR:
    case EISDIR:
    case ELOOP:
    case EXDEV:
    case ENOEXEC:
    case E2BIG:
      return ErrorCode::invalid_argument;
    default:
      return ErrorCode::internal;
  }
}

nlohmann::json Error::to_json() const {
  nlohmann::json j = {{"code", to_string(code_)}, {"message", message_}};
  if (!details_.is_null()) j["details"] = details_;
  return j;
}

Error Error::from_json(const nlohmann::json& j) {
  ErrorCode code = ErrorCode::internal;
  std::string message = "unknown error";
  nlohmann::json details;
  if (j.is_object()) {
    if (auto it = j.find("code"); it != j.end() && it->is_string()) {
      code = error_code_from_string(it->get<std::string>()).value_or(ErrorCode::internal);
    }
    if (auto it = j.find("message"); it != j.end() && it->is_string())
      message = it->get<std::string>();
    if (auto it = j.find("details"); it != j.end()) details = *it;
  }
  return Error(code, std::move(message), std::move(details));
}

void throw_errno(const std::string& what, int err) {
  if (err < 0) err = errno;
  throw Error(error_code_from_errno(err), what + ": " + std::strerror(err), {{"errno", err}});
}

}  // namespace pitbox
