// Internal: everything one TurboQuant instance needs besides the data — codebook, rotation and
// QJL matrices — generated deterministically on the CPU from (dim, bits, variant, rotation, seed,
// part, qjl) and shared by the CPU reference and the CUDA kernels (which receive copies), so that both
// sides quantize with identical numbers. Generation rules are specified in docs/FORMAT.md.
#ifndef KVTIER_KERNELS_SRC_TURBOQUANT_TQ_TABLES_H_
#define KVTIER_KERNELS_SRC_TURBOQUANT_TQ_TABLES_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kvtier/kernels/turboquant.h"

namespace kvtier::kernels::internal {

// SplitMix64 (Steele, Lea, Flood 2014): the one PRNG behind every seeded table.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t state) : state_(state) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

enum class TqStream : uint64_t {
  kHadamardSigns = 1,
  kDenseRotation = 2,
  kQjlMatrix = 3,
  kQjlHadamardSigns = 4,
};
// Initial SplitMix64 state of one table's stream.
uint64_t TqStreamState(uint64_t seed, TqStream stream, uint32_t dim, uint32_t part);

// One window of the randomized Hadamard chain: coordinates [offset, offset + len), len a power
// of two; x <- H_len * diag(signs) * x / sqrt(len).
struct TqHadamardWindow {
  uint32_t offset = 0;
  uint32_t len = 0;
  std::vector<float> signs;  // +1 / -1
  float scale = 0;           // (float)(1 / sqrt(len))
};

// Fixed-point matrices (TurboQuantMatrix::kFixed, docs/FORMAT.md "turboquant"): rot_q =
// rint(rot * 2^kTqRotFrac), qjl_q = rint(qjl * 2^kTqQjlFrac); vectors enter the products as
// q(v * 2^kTqVecFrac) (TqQuantize), every |q| <= kTqFixedClamp so that it splits into two int8.
constexpr int kTqRotFrac = 14;
constexpr int kTqVecFrac = 14;
constexpr int kTqQjlFrac = 11;
constexpr int32_t kTqFixedClamp = 32639;

// q(v): 0 for NaN, else rint (half to even) of v clamped to [-32639, 32639] in binary32 first
// (so +-inf and huge values clamp).
inline int32_t TqQuantize(float v) {
  if (std::isnan(v)) return 0;
  const float c = std::min(std::max(v, -static_cast<float>(kTqFixedClamp)),
                           static_cast<float>(kTqFixedClamp));
  return static_cast<int32_t>(std::nearbyint(c));
}

struct TqTables {
  TurboQuantVectorParams params;
  uint32_t dim = 0;
  uint8_t mse_bits = 0;               // bits (mse) or bits - 1 (prod); may be 0
  bool prod = false;
  std::vector<float> centroids;       // 2^mse_bits (empty when mse_bits == 0)
  std::vector<float> boundaries;      // 2^mse_bits - 1
  std::vector<TqHadamardWindow> windows;  // Hadamard rotation, applied in order
  std::vector<float> rot;             // dense rotation, dim x dim row-major: z = rot * u
  std::vector<float> rot_t;           // its transpose (coalesced reads on the GPU)
  // Prod, qjl=gaussian: S, dim x dim row-major, and its transpose.
  std::vector<float> qjl;
  std::vector<float> qjl_t;
  // Prod, qjl=hadamard: the chain G of these windows (kTqQjlRounds rounds of the rotation's
  // window layout, own signs), applied like `windows`; G = g * H with H orthogonal: dim a
  // power of two: scale 1 (unscaled butterflies), g = dim; otherwise scale 1/sqrt(len), g = 1.
  // S = sqrt(dim) * H.
  bool qjl_hadamard = false;
  std::vector<TqHadamardWindow> qjl_windows;
  // Decode coefficient per unit of gamma: gaussian (float)(sqrt(pi/2) / dim) on S^T signs;
  // hadamard (float)(1 / (dim * m_dim * g)) on G^T signs, m_dim = E|u_1| of a uniform unit
  // vector (dim 128: 0x3A626E71).
  float qjl_scale = 0;
  // Fixed-point matrices (params.matrix == kFixed): rot_q when rotation == dense, qjl_q when
  // prod && qjl == gaussian (dim x dim row-major, like rot / qjl, which stay filled: the query
  // side and the tests read them). Integer sums wrap modulo 2^32 (docs/FORMAT.md).
  bool fixed = false;
  std::vector<int16_t> rot_q;
  std::vector<int16_t> qjl_q;

  size_t MseBytes() const { return (static_cast<size_t>(dim) * mse_bits + 7) / 8; }
  size_t SignBytes() const { return prod ? (dim + 7) / 8 : 0; }
  size_t CodeBytes() const { return MseBytes() + SignBytes(); }
};

// Cached; params must be valid.
absl::StatusOr<std::shared_ptr<const TqTables>> GetTqTables(const TurboQuantVectorParams& params);

// ---- The canonical arithmetic (CPU reference; the CUDA kernels perform the same operations
// in the same order). Compiled with -ffp-contract=off.

// Sum of x[j]^2 as 32 lanes (lane l sums its block j in [l*p, (l+1)*p), p = ceil(n/32), in
// ascending order) combined by an xor butterfly (offsets 16, 8, 4, 2, 1); the GPU's warp
// reduction computes the same tree (with head_dim 128 each lane holds 4 consecutive values).
float TqSumSquares(const float* x, uint32_t n);

// Rounds of the structured QJL projection (docs/FORMAT.md; docs/QUALITY.md for why this many).
constexpr uint32_t kTqQjlRounds = 2;

// A window chain (TqTables::windows or qjl_windows) applied to x in place, and its inverse
// (= transpose: every window is orthogonal).
void TqApplyChain(const std::vector<TqHadamardWindow>& chain, float* x);
void TqApplyChainInverse(const std::vector<TqHadamardWindow>& chain, float* x);
// An unscaled chain of one window length (the QJL chain of a power-of-two dim) in binary16
// arithmetic: x rounded to binary16, each butterfly result rounded to binary16 (prod encode's
// sketch, docs/FORMAT.md).
void TqApplyChainHalf(const std::vector<TqHadamardWindow>& chain, float* x);

// Fixed-point matvecs (int32 results, sums modulo 2^32): out_i = sum_j m[i][j] v_j and
// out_j = sum_i m[i][j] v_i for an n x n row-major int16 matrix.
void TqFixedMatVec(const int16_t* m, const int32_t* v, uint32_t n, int32_t* out);
void TqFixedMatTVec(const int16_t* m, const int32_t* v, uint32_t n, int32_t* out);

// u -> Rot u (forward) and back, in place; scratch holds dim floats. Fixed tables with a dense
// rotation use the fixed-point arithmetic (docs/FORMAT.md).
void TqRotate(const TqTables& t, float* x, float* scratch);
void TqRotateInverse(const TqTables& t, float* x, float* scratch);

// Bits [bits*j, bits*j + bits) of the little-endian bit stream `out` (bit i = byte i/8, bit i%8).
void TqPackCodes(const uint8_t* codes, uint32_t n, uint8_t bits, uint8_t* out);
void TqUnpackCodes(const uint8_t* in, uint32_t n, uint8_t bits, uint8_t* codes);

// One vector: x (dim floats, unchanged) -> codes (CodeBytes), norm, gamma. scratch: 3*dim floats.
void TqEncodeVector(const TqTables& t, const float* x, uint8_t* codes, float* norm, float* gamma,
                    float* scratch);
// codes + norm/gamma -> out (dim floats). scratch: 2*dim floats.
void TqDecodeVector(const TqTables& t, const uint8_t* codes, float norm, float gamma, float* out,
                    float* scratch, bool include_qjl = true);

}  // namespace kvtier::kernels::internal

#endif  // KVTIER_KERNELS_SRC_TURBOQUANT_TQ_TABLES_H_
