// Synthetic KV generator (see synthetic_kv.h). std::mt19937_64 with std::normal_distribution:
// reproducible for a given standard library, which is all a quality tool needs.
#include "synthetic_kv.h"

#include <cmath>
#include <random>

namespace kvtier::bench {

const float* SyntheticKv::Keys(uint32_t layer, uint32_t head) const {
  const auto& o = options;
  return kv.data() + ((size_t{layer} * 2 + 0) * o.kv_heads + head) * o.tokens * o.head_dim;
}
const float* SyntheticKv::Values(uint32_t layer, uint32_t head) const {
  const auto& o = options;
  return kv.data() + ((size_t{layer} * 2 + 1) * o.kv_heads + head) * o.tokens * o.head_dim;
}
const float* SyntheticKv::Queries(uint32_t layer, uint32_t query_head) const {
  const auto& o = options;
  return queries.data() +
         (size_t{layer} * o.kv_heads * o.group + query_head) * o.queries * o.head_dim;
}

SyntheticKv MakeSyntheticKv(const SyntheticKvOptions& o) {
  SyntheticKv s;
  s.options = o;
  const uint32_t D = o.head_dim, T = o.tokens;
  s.kv.resize(size_t{o.layers} * 2 * o.kv_heads * T * D);
  s.queries.resize(size_t{o.layers} * o.kv_heads * o.group * o.queries * D);
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  for (uint32_t l = 0; l < o.layers; ++l) {
    for (uint32_t h = 0; h < o.kv_heads; ++h) {
      // Outlier channels of this head: distinct, with their std and mean.
      std::vector<uint32_t> ch;
      std::vector<float> sd, mean;
      while (ch.size() < o.outlier_channels && ch.size() < D) {
        const uint32_t c = static_cast<uint32_t>(rng() % D);
        bool dup = false;
        for (uint32_t x : ch) dup |= x == c;
        if (dup) continue;
        ch.push_back(c);
        sd.push_back(o.outlier_std_min + (o.outlier_std_max - o.outlier_std_min) * uni(rng));
        const float m = o.outlier_mean_abs_min +
                        (o.outlier_mean_abs_max - o.outlier_mean_abs_min) * uni(rng);
        mean.push_back(uni(rng) < 0.5f ? -m : m);
      }
      // Mean query direction of this KV head's group.
      std::vector<float> dir(D);
      double nn = 0;
      for (auto& x : dir) {
        x = normal(rng);
        nn += double(x) * x;
      }
      for (auto& x : dir) x = static_cast<float>(x / std::sqrt(nn));
      float* K = s.kv.data() + ((size_t{l} * 2 + 0) * o.kv_heads + h) * T * D;
      float* V = s.kv.data() + ((size_t{l} * 2 + 1) * o.kv_heads + h) * T * D;
      for (uint32_t t = 0; t < T; ++t) {
        for (uint32_t d = 0; d < D; ++d) K[size_t{t} * D + d] = normal(rng);
        for (size_t i = 0; i < ch.size(); ++i) {
          K[size_t{t} * D + ch[i]] = mean[i] + sd[i] * normal(rng);
        }
        const float scale = std::exp(o.value_log_sigma * normal(rng));
        for (uint32_t d = 0; d < D; ++d) V[size_t{t} * D + d] = scale * normal(rng);
      }
      if (o.sink && T > 0) {
        // Sink key along the mean query direction, long enough that a mean query gives it a
        // logit of about sink_logit: |k| = sink_logit * sqrt(D) / |mean query|.
        const float len = o.sink_logit * std::sqrt(static_cast<float>(D)) / o.query_mean_norm;
        for (uint32_t d = 0; d < D; ++d) K[d] = len * dir[d] + 0.1f * normal(rng);
      }
      for (uint32_t g = 0; g < o.group; ++g) {
        float* Q = s.queries.data() +
                   (size_t{l} * o.kv_heads * o.group + size_t{h} * o.group + g) * o.queries * D;
        for (uint32_t q = 0; q < o.queries; ++q) {
          for (uint32_t d = 0; d < D; ++d) {
            Q[size_t{q} * D + d] = o.query_mean_norm * dir[d] + normal(rng);
          }
        }
      }
    }
  }
  return s;
}

}  // namespace kvtier::bench
