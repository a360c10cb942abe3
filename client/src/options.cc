// Validation of the client options, and small value helpers.
#include <fmt/format.h>

#include "kvtier/client/options.h"
#include "kvtier/client/types.h"

namespace kvtier::client {

absl::Status RetryPolicy::Validate() const {
  if (max_attempts == 0) {
    return absl::InvalidArgumentError("retry.max_attempts must be >= 1 (1 disables retries)");
  }
  if (initial_backoff.count() < 0 || max_backoff < initial_backoff) {
    return absl::InvalidArgumentError(
        "retry: need 0 <= initial_backoff <= max_backoff (milliseconds)");
  }
  if (!(multiplier >= 1.0)) return absl::InvalidArgumentError("retry.multiplier must be >= 1");
  if (!(jitter >= 0.0 && jitter <= 1.0)) {
    return absl::InvalidArgumentError("retry.jitter must be in [0, 1]");
  }
  return absl::OkStatus();
}

absl::Status ClientOptions::Validate() const {
  if (target.empty()) {
    return absl::InvalidArgumentError(
        "client target is empty: give unix:/path/to/kvtierd.sock or host:port");
  }
  if (tls && target.rfind("unix:", 0) == 0) {
    return absl::InvalidArgumentError(
        "TLS is for TCP targets; a unix: socket is protected by file permissions (drop --tls)");
  }
  if (default_deadline.count() <= 0 || connect_timeout.count() <= 0) {
    return absl::InvalidArgumentError("client deadlines must be > 0 ms");
  }
  if (put_message_bytes == 0) return absl::InvalidArgumentError("put_message_bytes must be > 0");
  if (max_receive_message_bytes < (1 << 20) + 4096) {
    return absl::InvalidArgumentError("max_receive_message_bytes must hold a 1 MiB Get message");
  }
  return retry.Validate();
}

const char* TierName(Tier tier) {
  switch (tier) {
    case Tier::kGpu: return "gpu";
    case Tier::kHost: return "host";
    case Tier::kDisk: return "disk";
    default: return "unknown";
  }
}

}  // namespace kvtier::client
