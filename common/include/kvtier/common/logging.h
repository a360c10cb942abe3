// Logging for kvtier, backed by spdlog (Debian libspdlog-dev) with fmt formatting.
//
// KVTIER_LOG(INFO, "put {} bytes", n). Thread-safe. Libraries never configure sinks; the daemon's
// main calls SetLogLevel once. Secrets (tokens) must never be passed to a log call.
#ifndef KVTIER_COMMON_LOGGING_H_
#define KVTIER_COMMON_LOGGING_H_

#include <string>
#include <string_view>

#include <fmt/format.h>

#include "absl/status/status.h"

namespace kvtier {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Parses "debug", "info", "warning" or "error" (case-sensitive).
absl::Status ParseLogLevel(std::string_view name, LogLevel* level);
void SetLogLevel(LogLevel level);

namespace internal {
void LogMessage(LogLevel level, const char* file, int line, const std::string& message);
constexpr LogLevel kLevelDEBUG = LogLevel::kDebug;
constexpr LogLevel kLevelINFO = LogLevel::kInfo;
constexpr LogLevel kLevelWARNING = LogLevel::kWarning;
constexpr LogLevel kLevelERROR = LogLevel::kError;
}  // namespace internal

}  // namespace kvtier

#define KVTIER_LOG(severity, ...)                                                          \
  ::kvtier::internal::LogMessage(::kvtier::internal::kLevel##severity, __FILE__, __LINE__, \
                                 ::fmt::format(__VA_ARGS__))

#endif  // KVTIER_COMMON_LOGGING_H_
