#include "kvtier/common/status.h"

#include <memory>

#include <gtest/gtest.h>

namespace kvtier {
namespace {

absl::StatusOr<int> Half(int x) {
  if (x % 2) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  KVTIER_ASSIGN_OR_RETURN(int h, Half(x));
  KVTIER_ASSIGN_OR_RETURN(h, Half(h));  // Reassigning an existing variable works too.
  return h;
}

absl::Status CheckEven(int x) {
  KVTIER_RETURN_IF_ERROR(Half(x).status());
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<int>> MakeBox(bool ok) {
  if (!ok) return absl::NotFoundError("no box");
  return std::make_unique<int>(5);
}

absl::StatusOr<int> Unbox(bool ok) {
  KVTIER_ASSIGN_OR_RETURN(auto box, MakeBox(ok));  // Move-only values.
  return *box;
}

TEST(StatusTest, AssignOrReturnPropagates) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Quarter(3).status().message(), "odd");
}

TEST(StatusTest, ReturnIfError) {
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_EQ(CheckEven(5).code(), absl::StatusCode::kInvalidArgument);
}

TEST(StatusTest, MoveOnlyValues) {
  EXPECT_EQ(*Unbox(true), 5);
  EXPECT_EQ(Unbox(false).status().code(), absl::StatusCode::kNotFound);
}

TEST(StatusDeathTest, CheckOkAbortsWithMessage) {
  EXPECT_DEATH(KVTIER_CHECK_OK(absl::InternalError("broken invariant")), "broken invariant");
}

}  // namespace
}  // namespace kvtier
