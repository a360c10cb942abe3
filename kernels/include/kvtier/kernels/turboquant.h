// TurboQuant helpers for callers outside the codec: the Lloyd-Max codebooks, a single-vector
// quantizer (the exact arithmetic the chunk codec uses on every vector), and the query-side
// transform of the inner-product ("prod") estimator.
//
// The chunk codec itself is reached through kvtier/kernels/codec.h (CodecId::kTurboQuant); its
// body format is in docs/FORMAT.md, section "turboquant". A TurboQuantVectorQuantizer applies the
// same rotation, codebook and QJL matrix as the codec does for an instance of the same (dim,
// bits, variant, rotation, seed, part), so an engine can score queries against cached codes.
//
// Thread-safety: codebooks and quantizers are immutable after creation and safe to share; the
// process-wide caches behind them are internally synchronized.
#ifndef KVTIER_KERNELS_TURBOQUANT_H_
#define KVTIER_KERNELS_TURBOQUANT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvtier/kernels/codec.h"

namespace kvtier::kernels {

// Lloyd-Max codebook of 2^bits levels for one coordinate of a uniformly random unit vector in
// R^dim (density proportional to (1 - x^2)^((dim - 3) / 2) on [-1, 1]), computed by Lloyd
// iteration on that exact density (docs/FORMAT.md). For large dim the levels approach the N(0,1)
// Lloyd-Max levels times 1/sqrt(dim).
struct TurboQuantCodebook {
  uint32_t dim = 0;
  uint8_t bits = 0;
  std::vector<float> centroids;   // 2^bits, ascending, symmetric about 0
  std::vector<float> boundaries;  // 2^bits - 1 midpoints; code = #{k : x >= boundaries[k]}
  // dim * E[(x - q(x))^2] under the density: the expected D_mse of a unit vector.
  double expected_distortion = 0;
};

// dim in [8, 4096], bits in [1, 4]. Cached: repeated calls are cheap.
absl::StatusOr<std::shared_ptr<const TurboQuantCodebook>> GetTurboQuantCodebook(uint32_t dim,
                                                                               uint8_t bits);

// Which instance of a vector: the chunk codec uses part 0 for a whole head vector (or the
// outlier channels of a split, or an MLA latent), part 1 for the non-outlier channels of a split
// (or an MLA rope part). Rotation and QJL projection depend on (seed, dim, part, qjl); `matrix`
// selects their arithmetic.
struct TurboQuantVectorParams {
  uint32_t dim = 128;     // 8..4096; any dim (Hadamard on non-powers of two: docs/FORMAT.md)
  uint8_t bits = 2;       // total bits per coordinate, 1..4 (prod: bits - 1 for the mse stage)
  TurboQuantVariant variant = TurboQuantVariant::kMse;
  TurboQuantRotation rotation = TurboQuantRotation::kHadamard;
  uint64_t seed = 0;
  uint8_t part = 0;       // 0 or 1
  // Prod only (mse must keep kGaussian): the QJL projection S (CodecParams::tq_qjl).
  TurboQuantQjl qjl = TurboQuantQjl::kGaussian;
  // Arithmetic of the dense matrices (CodecParams::tq_matrix); kFixed only when the instance
  // uses one (rotation == dense, or prod with qjl == gaussian).
  TurboQuantMatrix matrix = TurboQuantMatrix::kFloat;

  absl::Status Validate() const;
};

// Quantizes one vector at a time, bit-exactly as the chunk codec does (norm and gamma are
// returned as floats here; the codec stores them as fp16).
class TurboQuantVectorQuantizer {
 public:
  static absl::StatusOr<std::unique_ptr<TurboQuantVectorQuantizer>> Create(
      const TurboQuantVectorParams& params);
  ~TurboQuantVectorQuantizer();

  const TurboQuantVectorParams& params() const { return params_; }
  // Bytes of codes per vector: ceil(dim * mse_bits / 8) (+ ceil(dim / 8) sign bytes for prod).
  size_t CodeBytes() const;

  // x: dim floats. codes: CodeBytes() bytes. norm = ||x||; gamma = ||residual|| of the unit
  // vector (prod only, 0 for mse).
  void Encode(const float* x, uint8_t* codes, float* norm, float* gamma) const;
  // out: dim floats. For prod, out = x_mse + c * gamma * S'^T signs (times norm; c below),
  // whose inner product with any y is an unbiased estimate of <y, x>.
  void Decode(const uint8_t* codes, float norm, float gamma, float* out) const;

  // Prod estimator without decoding the QJL part: S' = S * Rot is the effective sketch matrix
  // (S the seeded Gaussian or structured projection, Rot the rotation; with a Gaussian S, S' is
  // itself iid Gaussian). TransformQuery returns S' y (dim floats), computed once per query.
  // With matrix == kFixed, Rot and the Gaussian S are the effective matrices rot_q 2^-14 and
  // qjl_q 2^-11 that the fixed-point codec applies (docs/FORMAT.md), exactly representable.
  std::vector<float> TransformQuery(const float* y) const;
  // <y, x> ~ <y, x_mse> + c * gamma * norm * <S' y, signs>, with x_mse the decoded mse stage
  // (DecodeMse), signs in {-1, +1} from `codes`, c = sqrt(pi/2)/dim for the Gaussian S and
  // 1/(dim E|u_1|) for the structured one, whose S' here is Q * Rot without the sqrt(dim)
  // (docs/FORMAT.md). mse variant: <y, x_mse>.
  float EstimateInnerProduct(const float* y, const float* transformed_query, const uint8_t* codes,
                             float norm, float gamma) const;
  // The mse stage alone, times norm (= Decode for the mse variant).
  void DecodeMse(const uint8_t* codes, float norm, float* out) const;

 private:
  explicit TurboQuantVectorQuantizer(const TurboQuantVectorParams& params);
  TurboQuantVectorParams params_;
  std::shared_ptr<const void> tables_;  // internal::TqTables
};

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_TURBOQUANT_H_
