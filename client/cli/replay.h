// `kvtier replay`: replays a Mooncake-format trace against a running kvtierd. For each request it
// looks up the chained keys of its full 512-token blocks, fetches the hit prefix, and stores the
// missing blocks (deterministic synthetic KV per block id), then reports the token hit rate, the
// bytes moved and Lookup/Get/Put latency percentiles.
// Thread-safety: Replay runs its own worker threads; call it from one thread.
#ifndef KVTIER_CLIENT_CLI_REPLAY_H_
#define KVTIER_CLIENT_CLI_REPLAY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kvtier/client/client.h"
#include "latency.h"
#include "trace.h"

namespace kvtier::cli {

struct ReplayOptions {
  // Timestamps are honoured scaled by 1/speed (2 = twice as fast); 0 = as fast as possible.
  double speed = 0;
  // Requests in flight at once (each handled whole by one worker). Default 1.
  uint32_t concurrency = 1;
  // How Get fetches hits: the compressed payload (default; what a worker decoding on its own GPU
  // does) or the decoded tensor.
  client::DataFormat get_format = client::DataFormat::kPayload;
  // Fetch tensors and compare them with the synthetic KV (only meaningful for the raw codec).
  bool verify = false;
  // Lease on Lookup hits (ms) so they survive until the Get; 0 = none.
  uint32_t lease_ms = 0;
  bool progress = true;  // progress bar on stderr when it is a terminal
};

struct ReplayReport {
  uint64_t requests = 0;
  uint64_t input_tokens = 0;      // sum of input_length
  uint64_t cacheable_tokens = 0;  // tokens in full blocks (the ones that get keys)
  uint64_t hit_tokens = 0;        // tokens of the Lookup prefixes
  uint64_t blocks_looked_up = 0, blocks_hit = 0, blocks_put = 0;
  uint64_t get_misses = 0;        // hits gone by the time of their Get (evicted; no lease)
  uint64_t verify_failures = 0;
  uint64_t errors = 0;            // failed calls other than Get misses
  std::string first_error;
  uint64_t bytes_got = 0, bytes_put = 0;
  double wall_seconds = 0;
  LatencySummary lookup, get, put;

  double TokenHitRate() const {
    return input_tokens == 0 ? 0.0 : static_cast<double>(hit_tokens) / input_tokens;
  }
  std::string ToText() const;
  std::string ToJson() const;
};

// `ns` must be resolved (as returned by CreateNamespace/GetNamespace); its tokens_per_chunk is the
// trace's block size (512 for the Mooncake traces).
absl::StatusOr<ReplayReport> Replay(client::Client& client, const client::NamespaceSpec& ns,
                                    const std::vector<TraceRequest>& trace,
                                    const ReplayOptions& options);

}  // namespace kvtier::cli

#endif  // KVTIER_CLIENT_CLI_REPLAY_H_
