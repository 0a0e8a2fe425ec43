#include "sys/error.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace pitbox {
namespace {

TEST(Error, RoundTripsThroughJson) {
  Error e(ErrorCode::not_found, "box sb-x not found", {{"id", "sb-x"}});
  Error back = Error::from_json(e.to_json());
  EXPECT_EQ(back.code(), ErrorCode::not_found);
  EXPECT_EQ(back.message(), "box sb-x not found");
  EXPECT_EQ(back.details()["id"], "sb-x");
}

TEST(Error, MapsErrnoAndNamesTheCall) {
  try {
    throw_errno("open /nope", ENOENT);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::not_found);
    EXPECT_EQ(e.message(), "open /nope: No such file or directory");
  }
  EXPECT_EQ(error_code_from_errno(EACCES), ErrorCode::permission_denied);
  EXPECT_EQ(error_code_from_errno(ENOSPC), ErrorCode::resource_exhausted);
  EXPECT_EQ(error_code_from_errno(EEXIST), ErrorCode::conflict);
}

TEST(Error, UnknownCodesBecomeInternal) {
  EXPECT_EQ(Error::from_json({{"code", "weird"}, {"message", "m"}}).code(), ErrorCode::internal);
  EXPECT_EQ(Error::from_json("not an object").code(), ErrorCode::internal);
}

}  // namespace
}  // namespace pitbox
