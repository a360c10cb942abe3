// Low-rank latent codec: per (layer, K|V, KV head) of a namespace, a PCA basis of rank r fitted on
// calibration chunks; a chunk is stored as its r coefficients per vector (optionally quantized by
// fp8 or kivi) and reconstructed as mean + coefficients x components on decode.
//
// The basis belongs to the caller (one per namespace, stored beside its chunks): a latent
// payload (CodecId::kLatent, docs/FORMAT.md "latent") names the id of the basis it was encoded
// with, and only DecodeLatent with that basis decodes it. The generic Decode() of codec.h cannot.
// Fitting runs on the CPU (a Jacobi eigendecomposition of each stream's covariance, in double).
// Quality is data-dependent: docs/QUALITY.md reports error versus rank.
//
// Thread-safety: LatentBasis is immutable after construction and safe to share; the functions
// are thread-safe.
#ifndef KVTIER_KERNELS_LATENT_H_
#define KVTIER_KERNELS_LATENT_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvtier/kernels/codec.h"
#include "kvtier/kernels/layout.h"

namespace kvtier::kernels {

// How coefficients are stored. kFp32 is exact up to float rounding; kFp16 (default) adds
// ~2^-11 relative error per coefficient; kFp8 and kKivi2/kKivi4 (group 32 along the rank,
// requires rank % 32 == 0) store the coefficient matrix with those codecs.
enum class LatentCoefficients : uint8_t { kFp32 = 0, kFp16 = 1, kFp8 = 2, kKivi2 = 3, kKivi4 = 4 };

class LatentBasis {
 public:
  LatentBasis() = default;

  const KvLayout& layout() const { return layout_; }
  uint32_t rank() const { return rank_; }
  // Vector width: head_dim (MHA/GQA) or latent_dim + rope_dim (MLA).
  uint32_t dim() const { return dim_; }
  // Streams in canonical order: (layer, K|V, head) for MHA/GQA, layer for MLA.
  uint32_t num_streams() const { return streams_; }
  // 64-bit FNV-1a of Serialize()'s bytes: names the basis in payloads.
  uint64_t id() const { return id_; }

  // dim() floats: the stream's calibration mean.
  const float* Mean(uint32_t stream) const;
  // rank() x dim() floats, row-major, orthonormal rows by decreasing explained variance.
  const float* Components(uint32_t stream) const;

  // Self-contained, checksummed little-endian bytes (docs/FORMAT.md, "latent").
  std::vector<uint8_t> Serialize() const;
  static absl::StatusOr<LatentBasis> Deserialize(absl::Span<const uint8_t> bytes);

 private:
  friend absl::StatusOr<LatentBasis> FitLatentBasis(absl::Span<const ChunkInput>, const KvLayout&,
                                                    uint32_t);
  void Finish();  // computes id_

  KvLayout layout_;
  uint32_t rank_ = 0, dim_ = 0, streams_ = 0;
  uint64_t id_ = 0;
  std::vector<float> data_;  // per stream: mean[dim], components[rank][dim]
};

// Fits a rank-`rank` basis per stream from host chunks in `layout` (any dtype; every chunk's
// layout must equal `layout`). rank in [1, dim]. Errors: InvalidArgument.
absl::StatusOr<LatentBasis> FitLatentBasis(absl::Span<const ChunkInput> calibration,
                                           const KvLayout& layout, uint32_t rank);

// Encodes a host chunk (layout must equal the basis's) into a kLatent payload.
absl::StatusOr<std::vector<uint8_t>> EncodeLatent(
    const LatentBasis& basis, const ChunkInput& chunk,
    LatentCoefficients coefficients = LatentCoefficients::kFp16);

// Decodes a kLatent payload into a host target (dtype must equal the layout's). Errors:
// InvalidArgument / DataLoss (malformed or corrupt payload), FailedPrecondition (the payload
// names another basis, or its layout differs from the basis's).
absl::Status DecodeLatent(const LatentBasis& basis, absl::Span<const uint8_t> payload,
                          const DecodeTarget& target);

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_LATENT_H_
