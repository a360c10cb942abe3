// Synthetic KV with the structure of real caches (ALGORITHMS.md section 10), for quality tools:
// keys N(0,1) plus a few fixed outlier channels (std x10-15, non-zero mean), values with a
// log-normal per-token scale, an attention-sink token whose key aligns with the mean query
// direction, and GQA queries (H_q = 4 H_kv by default). Fully determined by the seed.
// Not thread-safe per object; independent objects are fine.
#ifndef KVTIER_BENCH_SYNTHETIC_KV_H_
#define KVTIER_BENCH_SYNTHETIC_KV_H_

#include <cstdint>
#include <vector>

namespace kvtier::bench {

struct SyntheticKvOptions {
  uint32_t layers = 1;
  uint32_t kv_heads = 2;
  uint32_t group = 4;             // query heads per KV head
  uint32_t head_dim = 128;
  uint32_t tokens = 4096;
  uint32_t queries = 8;           // query vectors per query head (the "recent" queries)
  uint32_t outlier_channels = 4;  // per KV head, fixed over tokens
  float outlier_std_min = 10.0f, outlier_std_max = 15.0f;
  float outlier_mean_abs_min = 2.0f, outlier_mean_abs_max = 6.0f;
  float value_log_sigma = 0.5f;   // per-token value scale exp(N(0, sigma^2))
  float query_mean_norm = 3.0f;   // |mean query| per KV head group
  float sink_logit = 8.0f;        // expected q.k_sink / sqrt(d) for a mean query
  bool sink = true;               // token 0 is an attention sink
  uint64_t seed = 1;
};

struct SyntheticKv {
  SyntheticKvOptions options;
  // Canonical chunk layout [layer][K|V][kv_head][token][dim], float (callers convert).
  std::vector<float> kv;
  // Queries [layer][query_head][query][dim]; query head h belongs to KV head h / group.
  std::vector<float> queries;

  const float* Keys(uint32_t layer, uint32_t head) const;
  const float* Values(uint32_t layer, uint32_t head) const;
  const float* Queries(uint32_t layer, uint32_t query_head) const;
};

SyntheticKv MakeSyntheticKv(const SyntheticKvOptions& options);

}  // namespace kvtier::bench

#endif  // KVTIER_BENCH_SYNTHETIC_KV_H_
