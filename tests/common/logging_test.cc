#include "kvtier/common/logging.h"

#include <gtest/gtest.h>

namespace kvtier {
namespace {

TEST(LoggingTest, ParsesLevels) {
  LogLevel l = LogLevel::kError;
  ASSERT_TRUE(ParseLogLevel("debug", &l).ok());
  EXPECT_EQ(l, LogLevel::kDebug);
  ASSERT_TRUE(ParseLogLevel("warning", &l).ok());
  EXPECT_EQ(l, LogLevel::kWarning);
  auto bad = ParseLogLevel("verbose", &l);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("verbose"), std::string_view::npos);
  EXPECT_EQ(l, LogLevel::kWarning);  // Unchanged on error.
}

TEST(LoggingTest, FormatsAndWritesToStderr) {
  testing::internal::CaptureStderr();
  SetLogLevel(LogLevel::kInfo);
  KVTIER_LOG(INFO, "stored {} bytes in {}", 42, "host");
  KVTIER_LOG(DEBUG, "hidden at info level");
  const std::string out = testing::internal::GetCapturedStderr();
  EXPECT_NE(out.find("stored 42 bytes in host"), std::string::npos) << out;
  EXPECT_NE(out.find("logging_test.cc"), std::string::npos) << out;
  EXPECT_EQ(out.find("hidden"), std::string::npos) << out;
}

}  // namespace
}  // namespace kvtier
