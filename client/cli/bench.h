// `kvtier bench`: a load generator. Workers Put synthetic chunks of the given sizes under fresh
// keys and Get them back, for a fixed duration, then report throughput and latency percentiles.
// Thread-safety: RunBench runs its own worker threads; call it from one thread.
#ifndef KVTIER_CLIENT_CLI_BENCH_H_
#define KVTIER_CLIENT_CLI_BENCH_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kvtier/client/client.h"
#include "latency.h"

namespace kvtier::cli {

enum class BenchMode { kPut, kGet, kMixed };

struct BenchOptions {
  std::vector<uint32_t> sizes_tokens = {256};  // chunk sizes, in tokens (<= tokens_per_chunk)
  uint32_t concurrency = 4;
  std::chrono::milliseconds duration{5000};
  // kPut: Puts only. kGet: Puts `warm_keys` chunks first, then Gets them at random.
  // kMixed: each iteration Puts a new chunk and Gets a random earlier one of the same worker.
  BenchMode mode = BenchMode::kMixed;
  uint32_t warm_keys = 64;
  client::DataFormat get_format = client::DataFormat::kTensor;
  uint64_t seed = 1;
};

struct BenchReport {
  uint64_t puts = 0, gets = 0, errors = 0;
  uint64_t put_bytes = 0, get_bytes = 0;
  double seconds = 0;
  LatencySummary put, get;
  std::string first_error;
  std::string ToText() const;
  std::string ToJson() const;
};

absl::StatusOr<BenchReport> RunBench(client::Client& client, const client::NamespaceSpec& ns,
                                     const BenchOptions& options);

}  // namespace kvtier::cli

#endif  // KVTIER_CLIENT_CLI_BENCH_H_
