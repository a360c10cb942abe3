// Validation of the selection options and inputs, and the Selection result type.
#include <cmath>
#include <string>

#include <fmt/format.h>

#include "selection/selection_internal.h"

namespace kvtier::kernels {
namespace {

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

bool KnownDType(DType d) {
  return d == DType::kFloat16 || d == DType::kBFloat16 || d == DType::kFloat32;
}

}  // namespace

absl::Status SnapKvOptions::Validate() const {
  if (window == 0) return Invalid("snapkv: window must be >= 1");
  if (budget < window) {
    return Invalid(fmt::format("snapkv: budget {} is smaller than the window {} (the budget "
                               "includes the window)", budget, window));
  }
  if (pool_kernel == 0 || pool_kernel % 2 == 0) {
    return Invalid(fmt::format("snapkv: pool_kernel must be odd and >= 1, got {}", pool_kernel));
  }
  if (pooling != Pooling::kMax && pooling != Pooling::kAvg) {
    return Invalid("snapkv: unknown pooling type");
  }
  if (layer_budgets != LayerBudgets::kUniform && layer_budgets != LayerBudgets::kPyramid) {
    return Invalid("snapkv: unknown layer budget schedule");
  }
  if (pyramid_beta == 0) return Invalid("pyramidkv: beta must be >= 1");
  return absl::OkStatus();
}

SnapKvOptions SnapKvOptions::PyramidKv() {
  SnapKvOptions o;
  o.layer_budgets = LayerBudgets::kPyramid;
  return o;
}

absl::Status SelectionInput::Validate() const {
  if (keys == nullptr) return Invalid("selection input: keys is null");
  if (queries == nullptr) return Invalid("selection input: queries is null");
  if (!KnownDType(dtype)) return Invalid("selection input: unknown dtype");
  if (space != MemorySpace::kHost && space != MemorySpace::kDevice) {
    return Invalid("selection input: unknown memory space");
  }
  if (num_layers == 0 || num_kv_heads == 0 || num_query_heads == 0 || head_dim == 0 ||
      num_tokens == 0 || num_queries == 0) {
    return Invalid(fmt::format("selection input: zero size (layers {}, kv heads {}, query heads "
                               "{}, head_dim {}, tokens {}, queries {})", num_layers, num_kv_heads,
                               num_query_heads, head_dim, num_tokens, num_queries));
  }
  if (num_query_heads % num_kv_heads != 0) {
    return Invalid(fmt::format("selection input: {} query heads is not a multiple of {} KV heads",
                               num_query_heads, num_kv_heads));
  }
  if (num_queries > num_tokens) {
    return Invalid(fmt::format("selection input: {} query rows but only {} tokens", num_queries,
                               num_tokens));
  }
  return absl::OkStatus();
}

absl::Status H2oOptions::Validate() const {
  if (uint64_t(heavy_budget) + recent_budget == 0) {
    return Invalid("h2o: heavy_budget + recent_budget must be >= 1");
  }
  return absl::OkStatus();
}

H2oOptions H2oOptions::Fraction(uint32_t num_tokens, double heavy, double recent) {
  H2oOptions o;
  o.heavy_budget = static_cast<uint32_t>(std::floor(num_tokens * heavy));
  o.recent_budget = static_cast<uint32_t>(std::floor(num_tokens * recent));
  return o;
}

absl::Status H2oScoresInput::Validate() const {
  if (scores == nullptr) return Invalid("h2o scores: scores is null");
  if (space != MemorySpace::kHost && space != MemorySpace::kDevice) {
    return Invalid("h2o scores: unknown memory space");
  }
  if (num_layers == 0 || num_score_heads == 0 || num_kv_heads == 0 || num_query_heads == 0 ||
      num_tokens == 0) {
    return Invalid("h2o scores: zero size");
  }
  if (num_query_heads % num_kv_heads != 0) {
    return Invalid(fmt::format("h2o scores: {} query heads is not a multiple of {} KV heads",
                               num_query_heads, num_kv_heads));
  }
  if (num_score_heads != num_query_heads && num_score_heads != num_kv_heads) {
    return Invalid(fmt::format("h2o scores: {} score heads; expected the query heads ({}) or the "
                               "KV heads ({})", num_score_heads, num_query_heads, num_kv_heads));
  }
  return absl::OkStatus();
}

absl::Status StreamingOptions::Validate() const {
  if (uint64_t(sink_tokens) + recent_tokens == 0) {
    return Invalid("streaming: sink_tokens + recent_tokens must be >= 1");
  }
  return absl::OkStatus();
}

absl::Span<const uint32_t> Selection::Kept(uint32_t layer, uint32_t kv_head) const {
  size_t off = 0;
  for (uint32_t l = 0; l < layer; ++l) off += size_t(kept_per_layer[l]) * num_kv_heads;
  off += size_t(kv_head) * kept_per_layer[layer];
  return absl::Span<const uint32_t>(positions.data() + off, kept_per_layer[layer]);
}

absl::Status Selection::Validate() const {
  if (kept_per_layer.size() != num_layers) {
    return Invalid(fmt::format("selection: {} layer counts for {} layers", kept_per_layer.size(),
                               num_layers));
  }
  size_t total = 0;
  for (uint32_t k : kept_per_layer) {
    if (k > num_tokens) {
      return Invalid(fmt::format("selection: {} kept of {} tokens", k, num_tokens));
    }
    total += size_t(k) * num_kv_heads;
  }
  if (total != positions.size()) {
    return Invalid(fmt::format("selection: {} positions, counts say {}", positions.size(), total));
  }
  for (uint32_t l = 0; l < num_layers; ++l) {
    for (uint32_t h = 0; h < num_kv_heads; ++h) {
      auto kept = Kept(l, h);
      for (size_t i = 0; i < kept.size(); ++i) {
        if (kept[i] >= num_tokens || (i > 0 && kept[i] <= kept[i - 1])) {
          return Invalid(fmt::format("selection: layer {} head {}: positions not strictly "
                                     "ascending below {}", l, h, num_tokens));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace kvtier::kernels
