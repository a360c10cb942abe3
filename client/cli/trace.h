// Mooncake-format request traces (one JSON object a line: timestamp in ms, input_length,
// output_length, hash_ids of 512-token prefix blocks). Thread-compatible.
#ifndef KVTIER_CLIENT_CLI_TRACE_H_
#define KVTIER_CLIENT_CLI_TRACE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvtier::cli {

struct TraceRequest {
  int64_t timestamp_ms = 0;
  uint64_t input_length = 0;
  uint64_t output_length = 0;
  std::vector<uint64_t> hash_ids;
};

// Parses one line. Unknown fields are ignored; the four fields above are required.
absl::StatusOr<TraceRequest> ParseTraceLine(const std::string& line);

// Reads up to `limit` requests (0 = all); blank lines are skipped. Errors name the line number.
absl::StatusOr<std::vector<TraceRequest>> ReadTrace(const std::string& path, size_t limit = 0);

}  // namespace kvtier::cli

#endif  // KVTIER_CLIENT_CLI_TRACE_H_
