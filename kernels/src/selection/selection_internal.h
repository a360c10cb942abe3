// Internal: pieces shared by the selection dispatcher (selection.cc), the CPU reference
// (*_cpu.cc) and the CUDA kernels (selection_cuda.cu). Not a public header.
#ifndef KVTIER_KERNELS_SRC_SELECTION_SELECTION_INTERNAL_H_
#define KVTIER_KERNELS_SRC_SELECTION_SELECTION_INTERNAL_H_

#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvtier/kernels/selection.h"

namespace kvtier::kernels::internal {

// IEEE binary16 -> float, exact (subnormals, infinities and NaN included).
inline float HalfBitsToFloat(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // Subnormal: normalise.
    exp = 113;
    while (!(mant & 0x400u)) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float Bf16BitsToFloat(uint16_t b) {
  const uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Element `index` of a host array of `dtype`.
inline float LoadAsFloat(DType dtype, const void* data, size_t index) {
  switch (dtype) {
    case DType::kFloat16:
      return HalfBitsToFloat(static_cast<const uint16_t*>(data)[index]);
    case DType::kBFloat16:
      return Bf16BitsToFloat(static_cast<const uint16_t*>(data)[index]);
    case DType::kFloat32:
      return static_cast<const float*>(data)[index];
  }
  return 0.0f;
}

inline size_t ElementBytes(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }

// ---- CPU reference (selection_cpu.cc). ----

// Attention mass each key receives from the input's query rows (positions T - num_queries + i),
// causal softmax over all T keys, averaged over each KV head's query heads. Returns
// [L][H_kv][num_columns] for keys 0 .. num_columns - 1.
std::vector<float> ColumnMassHost(const SelectionInput& input, uint32_t num_columns);

// 1-D pooling over `n` scores (kernel odd).
void PoolHost(Pooling pooling, uint32_t kernel, const float* in, uint32_t n, float* out);

// The `k` highest of `n` scores (ties: lower position first), written ascending to `out`.
void TopKAscendingHost(const float* scores, uint32_t n, uint32_t k, uint32_t* out);

// Selection from per (layer, KV head) scores with `score_stride` floats each: per layer the top
// caps[l] of positions [0, num_scored) after pooling, plus every position in [num_scored, T).
Selection SelectFromScoresHost(const std::vector<float>& scores, size_t score_stride,
                               uint32_t num_layers, uint32_t num_kv_heads, uint32_t num_tokens,
                               uint32_t num_scored, const std::vector<uint32_t>& caps,
                               Pooling pooling, uint32_t pool_kernel);

// ---- CUDA (selection_cuda.cu; selection_nocuda.cc without CUDA). ----

// Column mass as ColumnMassHost, for device input; result copied to the host.
absl::StatusOr<std::vector<float>> ColumnMassDevice(const SelectionInput& input,
                                                    uint32_t num_columns);

// SnapKV/PyramidKV end to end on the device: scores, pooling, top-k. `caps` as in
// SelectFromScoresHost with num_scored = T - W.
absl::StatusOr<Selection> SnapKvSelectDevice(const SnapKvOptions& options,
                                             const SelectionInput& input,
                                             const std::vector<uint32_t>& caps);

// H2O from device scores [L][score_heads][T]: group mean (when score heads are query heads),
// then top heavy of [0, T - recent) plus the recent window.
absl::StatusOr<Selection> H2oSelectDevice(const H2oOptions& options, const H2oScoresInput& input);

// H2O from device queries: column mass of all rows, then as H2oSelectDevice.
absl::StatusOr<Selection> H2oFromQueriesSelectDevice(const H2oOptions& options,
                                                     const SelectionInput& input);

}  // namespace kvtier::kernels::internal

#endif  // KVTIER_KERNELS_SRC_SELECTION_SELECTION_INTERNAL_H_
