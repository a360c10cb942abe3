// Chunk-key cost: ns per token of the chained SHA-256 (the client computes this per request).
#include <numeric>
#include <vector>

#include <benchmark/benchmark.h>

#include "kvtier/common/chunk_key.h"
#include "kvtier/common/crc32c.h"

namespace {

void BM_ComputeChunkKeys(benchmark::State& state) {
  const uint32_t per_chunk = static_cast<uint32_t>(state.range(0));
  std::vector<uint32_t> tokens(32768);
  std::iota(tokens.begin(), tokens.end(), 1000);
  for (auto _ : state) {
    auto keys = kvtier::ComputeChunkKeys(tokens, "tenant", per_chunk);
    benchmark::DoNotOptimize(keys.data());
  }
  state.SetItemsProcessed(state.iterations() * tokens.size());  // items = tokens
  state.counters["ns_per_token"] = benchmark::Counter(
      static_cast<double>(state.iterations() * tokens.size()),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_ComputeChunkKeys)->Arg(16)->Arg(256)->Arg(512);

void BM_Crc32c(benchmark::State& state) {
  std::vector<uint8_t> buf(state.range(0), 0x5a);
  for (auto _ : state) benchmark::DoNotOptimize(kvtier::Crc32c(buf.data(), buf.size()));
  state.SetBytesProcessed(state.iterations() * buf.size());
}
BENCHMARK(BM_Crc32c)->Arg(1 << 20);

}  // namespace

BENCHMARK_MAIN();
