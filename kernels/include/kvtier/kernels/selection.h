// Token selection: which prompt tokens of each (layer, KV head) a compacted context keeps.
//
// Methods (docs/QUALITY.md "## Token selection" compares them; ALGORITHMS.md 4-7):
//   SnapKV     attention mass from an observation window of the last W queries, pooled, top-k;
//   PyramidKV  SnapKV with budgets that shrink from the bottom layer to the top one;
//   H2O        accumulated attention (engine-supplied, or column sums computed from all queries);
//   StreamingLLM  attention sinks plus a recent window.
// GQA: scores of a KV head's n query heads (query head j uses KV head j / n) are averaged, and
// selection is per KV head. Kept tokens keep their original positions (no re-rotation); every
// returned position list is sorted ascending.
//
// Ties: a token with a higher score is kept first; between equal scores the LOWER position wins.
// The CPU reference and the CUDA kernels both follow this rule. Their scores are computed in fp32
// with different summation orders, so two distinct scores closer than about 1e-6 (relative) may
// rank differently on the two sides; exactly equal scores (e.g. a max-pooling plateau) never do.
//
// Memory space: inputs on the host run the scalar CPU reference; inputs in device memory run the
// CUDA kernels (InvalidArgument in a build without CUDA). Results are always host vectors. The
// device path supports head_dim 64 and 128 (Unimplemented otherwise; fp16/bf16 on tensor cores,
// fp32 on a scalar path), runs on the current device's default stream, takes its scratch from
// the stream-ordered allocator (cudaMallocAsync) and synchronizes before returning.
//
// Thread-safety: all functions are thread-safe; they keep no state between calls.
#ifndef KVTIER_KERNELS_SELECTION_H_
#define KVTIER_KERNELS_SELECTION_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvtier/kernels/codec.h"
#include "kvtier/kernels/layout.h"

namespace kvtier::kernels {

// 1-D smoothing of the per-token scores before top-k (stride 1, "same" padding, kernel odd).
//   kMax: max over the tokens inside the kernel (positions outside [0, T - W) are ignored);
//   kAvg: sum over the kernel divided by the kernel size (outside positions count as zero).
enum class Pooling : uint8_t { kMax = 0, kAvg = 1 };

// How SnapKV's budget is spread over layers.
enum class LayerBudgets : uint8_t {
  kUniform = 0,  // every layer keeps `budget` tokens (SnapKV)
  kPyramid = 1,  // PyramidKvCaps() (PyramidKV)
};

// SnapKV / PyramidKV parameters. Defaults are SnapKV's LongBench configuration.
struct SnapKvOptions {
  uint32_t window = 32;      // W: observation window, the last W prompt tokens; always kept
  uint32_t budget = 2048;    // C: tokens kept per (layer, KV head), window included (uniform)
  uint32_t pool_kernel = 7;  // odd, >= 1 (1 = no pooling)
  Pooling pooling = Pooling::kMax;
  LayerBudgets layer_budgets = LayerBudgets::kUniform;
  uint32_t pyramid_beta = 20;  // PyramidKV: the top layer keeps about B / beta (B = C - W)
  // A prompt shorter than the budget (T < C): false -> InvalidArgument ("budget larger than the
  // prompt"); true -> every token is kept (what PyramidKV's reference does).
  bool keep_all_if_short = false;

  // Rejects window == 0, budget < window, an even or zero pool_kernel, beta == 0, unknown enums.
  absl::Status Validate() const;
  // The same defaults with LayerBudgets::kPyramid.
  static SnapKvOptions PyramidKv();
};

// Keys, and the queries of the last `num_queries` prompt tokens (positions T - num_queries ..
// T - 1), of one prompt, contiguous, all in one memory space and one dtype.
//   keys:    [num_layers][num_kv_heads][num_tokens][head_dim]     (post-RoPE)
//   queries: [num_layers][num_query_heads][num_queries][head_dim] (post-RoPE)
// SnapKV needs num_queries == window; H2O from queries needs num_queries == num_tokens.
struct SelectionInput {
  const void* keys = nullptr;
  const void* queries = nullptr;
  MemorySpace space = MemorySpace::kHost;
  DType dtype = DType::kFloat16;
  uint32_t num_layers = 0;
  uint32_t num_kv_heads = 0;
  uint32_t num_query_heads = 0;  // a multiple of num_kv_heads
  uint32_t head_dim = 0;
  uint32_t num_tokens = 0;   // T
  uint32_t num_queries = 0;  // rows per query head

  // Rejects null pointers, zero sizes, query heads not a multiple of KV heads,
  // num_queries > num_tokens, unknown dtypes.
  absl::Status Validate() const;
};

// Per (layer, KV head) kept positions. Within a layer every KV head keeps the same number.
struct Selection {
  uint32_t num_layers = 0;
  uint32_t num_kv_heads = 0;
  uint32_t num_tokens = 0;                   // T of the source prompt
  std::vector<uint32_t> kept_per_layer;      // [num_layers]
  std::vector<uint32_t> positions;           // concatenation over (layer, head), each ascending

  // Kept positions of (layer, kv_head); both must be in range.
  absl::Span<const uint32_t> Kept(uint32_t layer, uint32_t kv_head) const;
  size_t TotalKept() const { return positions.size(); }
  // Checks sizes, ranges and strict ascending order (used on decode and in tests).
  absl::Status Validate() const;
};

// PyramidKV per-layer caps, window NOT included (each layer keeps cap + W tokens). With
// B = budget - window: min = B / beta, max = 2B - min; if max >= T - W: max = T - W, min = 2B - max;
// step = (max - min) / (L - 1); cap_l = max - l * step (integer divisions). If T < budget every
// token is kept (cap = T - W); if T < 2B every layer gets the uniform B; a single layer gets B.
// Example: L = 32, W = 8, C = 128, T large: 234, 227, ..., 17.
absl::StatusOr<std::vector<uint32_t>> PyramidKvCaps(uint32_t num_layers, uint32_t num_tokens,
                                                    uint32_t window, uint32_t budget,
                                                    uint32_t beta = 20);

// SnapKV scores before pooling: [L][H_kv][T - W] fp32, the window's attention mass on each
// non-window token, averaged over the KV head's query heads. Host or device input.
absl::StatusOr<std::vector<float>> SnapKvScores(const SnapKvOptions& options,
                                                const SelectionInput& input);

// SnapKV (or PyramidKV with LayerBudgets::kPyramid): per layer keeps cap_l non-window tokens
// (top pooled scores) plus the W window tokens.
absl::StatusOr<Selection> SelectSnapKv(const SnapKvOptions& options, const SelectionInput& input);

// H2O budgets, in tokens per (layer, KV head); heavy + recent must not exceed T. The reference
// configuration is 10% + 10% of T (H2oOptions::Fraction).
struct H2oOptions {
  uint32_t heavy_budget = 1024;   // top accumulated-score tokens outside the recent window
  uint32_t recent_budget = 1024;  // the last tokens, always kept

  absl::Status Validate() const;  // rejects heavy + recent == 0
  static H2oOptions Fraction(uint32_t num_tokens, double heavy = 0.1, double recent = 0.1);
};

// Engine-supplied accumulated attention: scores [num_layers][num_score_heads][num_tokens] fp32,
// num_score_heads being the query heads (averaged over each group here) or the KV heads.
struct H2oScoresInput {
  const float* scores = nullptr;
  MemorySpace space = MemorySpace::kHost;
  uint32_t num_layers = 0;
  uint32_t num_score_heads = 0;  // == num_query_heads or == num_kv_heads
  uint32_t num_kv_heads = 0;
  uint32_t num_query_heads = 0;
  uint32_t num_tokens = 0;

  absl::Status Validate() const;
};

absl::StatusOr<Selection> SelectH2o(const H2oOptions& options, const H2oScoresInput& input);

// Column sums of the causal softmax attention of all prompt queries (input.num_queries == T),
// averaged over each KV head's query heads: [L][H_kv][T] fp32. Host or device input.
absl::StatusOr<std::vector<float>> H2oColumnScores(const SelectionInput& input);

// H2O from all prompt queries: H2oColumnScores() then the same selection as SelectH2o().
absl::StatusOr<Selection> SelectH2oFromQueries(const H2oOptions& options,
                                               const SelectionInput& input);

// StreamingLLM: the first `sink_tokens` and the last `recent_tokens` tokens, in every layer/head.
struct StreamingOptions {
  uint32_t sink_tokens = 4;
  uint32_t recent_tokens = 2044;  // 2048 kept in all with the default sinks

  absl::Status Validate() const;  // rejects sink + recent == 0
};

// Needs only the shape; sink + recent must not exceed T.
absl::StatusOr<Selection> SelectStreaming(const StreamingOptions& options, uint32_t num_layers,
                                          uint32_t num_kv_heads, uint32_t num_tokens);

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_SELECTION_H_
