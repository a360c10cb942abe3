// Scalar CPU reference for token selection: the oracle the CUDA kernels are checked against.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "selection/selection_internal.h"

namespace kvtier::kernels::internal {

std::vector<float> ColumnMassHost(const SelectionInput& in, uint32_t num_columns) {
  const uint32_t T = in.num_tokens, D = in.head_dim, Wq = in.num_queries;
  const uint32_t group = in.num_query_heads / in.num_kv_heads;
  const uint32_t q_pos0 = T - Wq;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::vector<float> out(size_t(in.num_layers) * in.num_kv_heads * num_columns, 0.0f);
  std::vector<float> k(size_t(T) * D), q(D), logits(T);
  std::vector<double> mass(num_columns);
  for (uint32_t l = 0; l < in.num_layers; ++l) {
    for (uint32_t h = 0; h < in.num_kv_heads; ++h) {
      const size_t k_base = (size_t(l) * in.num_kv_heads + h) * T * D;
      for (size_t i = 0; i < size_t(T) * D; ++i) k[i] = LoadAsFloat(in.dtype, in.keys, k_base + i);
      std::fill(mass.begin(), mass.end(), 0.0);
      for (uint32_t g = 0; g < group; ++g) {
        const uint32_t qh = h * group + g;
        for (uint32_t r = 0; r < Wq; ++r) {
          const size_t q_base = ((size_t(l) * in.num_query_heads + qh) * Wq + r) * D;
          for (uint32_t d = 0; d < D; ++d) q[d] = LoadAsFloat(in.dtype, in.queries, q_base + d);
          const uint32_t visible = q_pos0 + r + 1;  // causal: keys 0 .. position
          float m = -INFINITY;
          for (uint32_t t = 0; t < visible; ++t) {
            const float* kt = &k[size_t(t) * D];
            float s = 0.0f;
            for (uint32_t d = 0; d < D; ++d) s += q[d] * kt[d];
            logits[t] = s * scale;
            m = std::max(m, logits[t]);
          }
          double z = 0.0;
          for (uint32_t t = 0; t < visible; ++t) {
            logits[t] = std::exp(logits[t] - m);
            z += logits[t];
          }
          const double inv_z = 1.0 / z;
          const uint32_t upto = std::min(visible, num_columns);
          for (uint32_t t = 0; t < upto; ++t) mass[t] += logits[t] * inv_z;
        }
      }
      float* o = &out[(size_t(l) * in.num_kv_heads + h) * num_columns];
      for (uint32_t t = 0; t < num_columns; ++t) o[t] = static_cast<float>(mass[t] / group);
    }
  }
  return out;
}

void PoolHost(Pooling pooling, uint32_t kernel, const float* in, uint32_t n, float* out) {
  const int64_t half = kernel / 2;
  for (int64_t t = 0; t < int64_t(n); ++t) {
    const int64_t lo = std::max<int64_t>(0, t - half);
    const int64_t hi = std::min<int64_t>(int64_t(n) - 1, t + half);
    if (pooling == Pooling::kMax) {
      float m = in[lo];
      for (int64_t j = lo + 1; j <= hi; ++j) m = std::max(m, in[j]);
      out[t] = m;
    } else {
      float s = 0.0f;
      for (int64_t j = lo; j <= hi; ++j) s += in[j];
      out[t] = s / static_cast<float>(kernel);
    }
  }
}

void TopKAscendingHost(const float* scores, uint32_t n, uint32_t k, uint32_t* out) {
  std::vector<uint32_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0u);
  auto better = [scores](uint32_t a, uint32_t b) {
    return scores[a] != scores[b] ? scores[a] > scores[b] : a < b;
  };
  if (k < n) std::nth_element(idx.begin(), idx.begin() + k, idx.end(), better);
  std::sort(idx.begin(), idx.begin() + k);
  std::copy(idx.begin(), idx.begin() + k, out);
}

Selection SelectFromScoresHost(const std::vector<float>& scores, size_t score_stride,
                               uint32_t num_layers, uint32_t num_kv_heads, uint32_t num_tokens,
                               uint32_t num_scored, const std::vector<uint32_t>& caps,
                               Pooling pooling, uint32_t pool_kernel) {
  Selection sel;
  sel.num_layers = num_layers;
  sel.num_kv_heads = num_kv_heads;
  sel.num_tokens = num_tokens;
  const uint32_t tail = num_tokens - num_scored;
  size_t total = 0;
  for (uint32_t l = 0; l < num_layers; ++l) {
    sel.kept_per_layer.push_back(caps[l] + tail);
    total += size_t(caps[l] + tail) * num_kv_heads;
  }
  sel.positions.resize(total);
  std::vector<float> pooled(num_scored);
  size_t at = 0;
  for (uint32_t l = 0; l < num_layers; ++l) {
    for (uint32_t h = 0; h < num_kv_heads; ++h) {
      const float* s = &scores[(size_t(l) * num_kv_heads + h) * score_stride];
      PoolHost(pooling, pool_kernel, s, num_scored, pooled.data());
      TopKAscendingHost(pooled.data(), num_scored, caps[l], &sel.positions[at]);
      at += caps[l];
      for (uint32_t t = num_scored; t < num_tokens; ++t) sel.positions[at++] = t;
    }
  }
  return sel;
}

}  // namespace kvtier::kernels::internal
