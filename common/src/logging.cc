#include "kvtier/common/logging.h"

#include <cstdio>
#include <cstdlib>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "kvtier/common/status.h"

namespace kvtier {
namespace {

spdlog::logger& Logger() {
  // stderr, so that tools can print results on stdout.
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = spdlog::stderr_color_mt("kvtier");
    l->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ %t %v");
    l->set_level(spdlog::level::info);
    return l;
  }();
  return *logger;
}

spdlog::level::level_enum ToSpdlog(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return spdlog::level::debug;
    case LogLevel::kInfo: return spdlog::level::info;
    case LogLevel::kWarning: return spdlog::level::warn;
    case LogLevel::kError: return spdlog::level::err;
  }
  return spdlog::level::info;
}

}  // namespace

absl::Status ParseLogLevel(std::string_view name, LogLevel* level) {
  if (name == "debug") *level = LogLevel::kDebug;
  else if (name == "info") *level = LogLevel::kInfo;
  else if (name == "warning") *level = LogLevel::kWarning;
  else if (name == "error") *level = LogLevel::kError;
  else return absl::InvalidArgumentError(
      fmt::format("unknown log level '{}' (expected debug, info, warning or error)", name));
  return absl::OkStatus();
}

void SetLogLevel(LogLevel level) { Logger().set_level(ToSpdlog(level)); }

namespace internal {

void LogMessage(LogLevel level, const char* file, int line, const std::string& message) {
  const char* base = file;
  for (const char* p = file; *p; ++p) if (*p == '/') base = p + 1;
  Logger().log(ToSpdlog(level), "{}:{}] {}", base, line, message);
}

void CheckOkFailed(const absl::Status& status, const char* expr, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: KVTIER_CHECK_OK(%s) failed: %s\n", file, line, expr,
               status.ToString().c_str());
  std::abort();
}

}  // namespace internal
}  // namespace kvtier
