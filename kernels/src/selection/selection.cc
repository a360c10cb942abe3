// The selection dispatcher: checks shapes and budgets, then runs the CPU reference for host
// input or the CUDA kernels for device input.
#include <algorithm>

#include <fmt/format.h>

#include "kvtier/common/status.h"
#include "selection/selection_internal.h"

namespace kvtier::kernels {
namespace {

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

absl::Status CheckSnapKv(const SnapKvOptions& options, const SelectionInput& input) {
  KVTIER_RETURN_IF_ERROR(options.Validate());
  KVTIER_RETURN_IF_ERROR(input.Validate());
  if (options.window > input.num_tokens) {
    return Invalid(fmt::format("snapkv: window {} is longer than the prompt ({} tokens)",
                               options.window, input.num_tokens));
  }
  if (input.num_queries != options.window) {
    return Invalid(fmt::format("snapkv: queries hold {} rows per head; the observation window "
                               "needs exactly window = {}", input.num_queries, options.window));
  }
  return absl::OkStatus();
}

// Non-window caps per layer for SnapKV/PyramidKV (after CheckSnapKv).
absl::StatusOr<std::vector<uint32_t>> SnapKvCaps(const SnapKvOptions& o,
                                                 const SelectionInput& in) {
  const uint32_t T = in.num_tokens;
  if (o.budget > T && !o.keep_all_if_short) {
    return Invalid(fmt::format("snapkv: budget {} is larger than the prompt ({} tokens); set "
                               "keep_all_if_short to keep everything instead", o.budget, T));
  }
  if (o.layer_budgets == LayerBudgets::kPyramid) {
    return PyramidKvCaps(in.num_layers, T, o.window, o.budget, o.pyramid_beta);
  }
  return std::vector<uint32_t>(in.num_layers, std::min(o.budget, T) - o.window);
}

absl::Status CheckH2oBudget(const H2oOptions& options, uint32_t num_tokens) {
  KVTIER_RETURN_IF_ERROR(options.Validate());
  if (uint64_t(options.heavy_budget) + options.recent_budget > num_tokens) {
    return Invalid(fmt::format("h2o: heavy {} + recent {} is larger than the prompt ({} tokens)",
                               options.heavy_budget, options.recent_budget, num_tokens));
  }
  return absl::OkStatus();
}

absl::Status NeedCuda(MemorySpace space) {
#ifdef KVTIER_HAVE_CUDA
  (void)space;
  return absl::OkStatus();
#else
  if (space == MemorySpace::kDevice) {
    return Invalid("selection: device input, but this build of kvtier has no CUDA");
  }
  return absl::OkStatus();
#endif
}

// Mean over each group of query-head scores -> KV-head scores (host).
std::vector<float> GroupMeanHost(const H2oScoresInput& in) {
  const uint32_t T = in.num_tokens;
  if (in.num_score_heads == in.num_kv_heads) {
    return std::vector<float>(in.scores, in.scores + size_t(in.num_layers) * in.num_kv_heads * T);
  }
  const uint32_t group = in.num_query_heads / in.num_kv_heads;
  std::vector<float> out(size_t(in.num_layers) * in.num_kv_heads * T);
  for (uint32_t l = 0; l < in.num_layers; ++l) {
    for (uint32_t h = 0; h < in.num_kv_heads; ++h) {
      for (uint32_t t = 0; t < T; ++t) {
        double s = 0;
        for (uint32_t g = 0; g < group; ++g) {
          s += in.scores[((size_t(l) * in.num_query_heads) + h * group + g) * T + t];
        }
        out[(size_t(l) * in.num_kv_heads + h) * T + t] = static_cast<float>(s / group);
      }
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<uint32_t>> PyramidKvCaps(uint32_t num_layers, uint32_t num_tokens,
                                                    uint32_t window, uint32_t budget,
                                                    uint32_t beta) {
  if (num_layers == 0) return Invalid("pyramidkv: zero layers");
  if (beta == 0) return Invalid("pyramidkv: beta must be >= 1");
  if (window == 0 || budget < window) {
    return Invalid(fmt::format("pyramidkv: need 1 <= window ({}) <= budget ({})", window, budget));
  }
  if (window > num_tokens) {
    return Invalid(fmt::format("pyramidkv: window {} is longer than the prompt ({} tokens)",
                               window, num_tokens));
  }
  const int64_t T = num_tokens, W = window, B = int64_t(budget) - W, L = num_layers;
  if (T < int64_t(budget)) return std::vector<uint32_t>(num_layers, uint32_t(T - W));
  if (T < 2 * B || L == 1) return std::vector<uint32_t>(num_layers, uint32_t(B));
  int64_t min_cap = B / int64_t(beta);
  int64_t max_cap = 2 * B - min_cap;
  if (max_cap >= T - W) {
    max_cap = T - W;
    min_cap = 2 * B - max_cap;
  }
  const int64_t step = (max_cap - min_cap) / (L - 1);
  std::vector<uint32_t> caps(num_layers);
  for (int64_t l = 0; l < L; ++l) caps[l] = static_cast<uint32_t>(max_cap - l * step);
  return caps;
}

absl::StatusOr<std::vector<float>> SnapKvScores(const SnapKvOptions& options,
                                                const SelectionInput& input) {
  KVTIER_RETURN_IF_ERROR(CheckSnapKv(options, input));
  KVTIER_RETURN_IF_ERROR(NeedCuda(input.space));
  const uint32_t n = input.num_tokens - options.window;
  if (input.space == MemorySpace::kDevice) return internal::ColumnMassDevice(input, n);
  return internal::ColumnMassHost(input, n);
}

absl::StatusOr<Selection> SelectSnapKv(const SnapKvOptions& options, const SelectionInput& input) {
  KVTIER_RETURN_IF_ERROR(CheckSnapKv(options, input));
  KVTIER_RETURN_IF_ERROR(NeedCuda(input.space));
  KVTIER_ASSIGN_OR_RETURN(std::vector<uint32_t> caps, SnapKvCaps(options, input));
  if (input.space == MemorySpace::kDevice) {
    return internal::SnapKvSelectDevice(options, input, caps);
  }
  const uint32_t n = input.num_tokens - options.window;
  std::vector<float> scores = internal::ColumnMassHost(input, n);
  return internal::SelectFromScoresHost(scores, n, input.num_layers, input.num_kv_heads,
                                        input.num_tokens, n, caps, options.pooling,
                                        options.pool_kernel);
}

absl::StatusOr<Selection> SelectH2o(const H2oOptions& options, const H2oScoresInput& input) {
  KVTIER_RETURN_IF_ERROR(input.Validate());
  KVTIER_RETURN_IF_ERROR(CheckH2oBudget(options, input.num_tokens));
  KVTIER_RETURN_IF_ERROR(NeedCuda(input.space));
  if (input.space == MemorySpace::kDevice) return internal::H2oSelectDevice(options, input);
  std::vector<float> scores = GroupMeanHost(input);
  const uint32_t T = input.num_tokens;
  return internal::SelectFromScoresHost(
      scores, T, input.num_layers, input.num_kv_heads, T, T - options.recent_budget,
      std::vector<uint32_t>(input.num_layers, options.heavy_budget), Pooling::kMax, 1);
}

absl::StatusOr<std::vector<float>> H2oColumnScores(const SelectionInput& input) {
  KVTIER_RETURN_IF_ERROR(input.Validate());
  if (input.num_queries != input.num_tokens) {
    return Invalid(fmt::format("h2o: queries hold {} rows per head; column sums need all {} "
                               "prompt queries", input.num_queries, input.num_tokens));
  }
  KVTIER_RETURN_IF_ERROR(NeedCuda(input.space));
  if (input.space == MemorySpace::kDevice) {
    return internal::ColumnMassDevice(input, input.num_tokens);
  }
  return internal::ColumnMassHost(input, input.num_tokens);
}

absl::StatusOr<Selection> SelectH2oFromQueries(const H2oOptions& options,
                                               const SelectionInput& input) {
  KVTIER_RETURN_IF_ERROR(input.Validate());
  KVTIER_RETURN_IF_ERROR(CheckH2oBudget(options, input.num_tokens));
  if (input.num_queries != input.num_tokens) {
    return Invalid(fmt::format("h2o: queries hold {} rows per head; column sums need all {} "
                               "prompt queries", input.num_queries, input.num_tokens));
  }
  KVTIER_RETURN_IF_ERROR(NeedCuda(input.space));
  if (input.space == MemorySpace::kDevice) {
    return internal::H2oFromQueriesSelectDevice(options, input);
  }
  const uint32_t T = input.num_tokens;
  std::vector<float> scores = internal::ColumnMassHost(input, T);
  return internal::SelectFromScoresHost(
      scores, T, input.num_layers, input.num_kv_heads, T, T - options.recent_budget,
      std::vector<uint32_t>(input.num_layers, options.heavy_budget), Pooling::kMax, 1);
}

absl::StatusOr<Selection> SelectStreaming(const StreamingOptions& options, uint32_t num_layers,
                                          uint32_t num_kv_heads, uint32_t num_tokens) {
  KVTIER_RETURN_IF_ERROR(options.Validate());
  if (num_layers == 0 || num_kv_heads == 0 || num_tokens == 0) {
    return Invalid("streaming: zero size");
  }
  if (uint64_t(options.sink_tokens) + options.recent_tokens > num_tokens) {
    return Invalid(fmt::format("streaming: sinks {} + recent {} is larger than the prompt ({} "
                               "tokens)", options.sink_tokens, options.recent_tokens, num_tokens));
  }
  Selection sel;
  sel.num_layers = num_layers;
  sel.num_kv_heads = num_kv_heads;
  sel.num_tokens = num_tokens;
  const uint32_t kept = options.sink_tokens + options.recent_tokens;
  sel.kept_per_layer.assign(num_layers, kept);
  sel.positions.reserve(size_t(kept) * num_layers * num_kv_heads);
  for (uint32_t i = 0; i < num_layers * num_kv_heads; ++i) {
    for (uint32_t t = 0; t < options.sink_tokens; ++t) sel.positions.push_back(t);
    for (uint32_t t = num_tokens - options.recent_tokens; t < num_tokens; ++t) {
      sel.positions.push_back(t);
    }
  }
  return sel;
}

}  // namespace kvtier::kernels
