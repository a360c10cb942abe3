// Internal: TurboQuant body geometry (docs/FORMAT.md, "turboquant") and the bit-level helpers
// shared by the CPU reference and the CUDA kernels. Not a public header. Thread-safe (values).
//
// A chunk is S streams of T vectors (codecs/geometry.h). Each vector is cut into 1 or 2 parts,
// each an independent TurboQuant instance:
//   MHA, no split: part 0 = all head_dim channels at `bits`.
//   MHA, split 2.5 / 3.5: part 0 = the stream's outlier channels (32 at 3 bits / 64 at 4 bits),
//     part 1 = the other channels (96 at 2 / 64 at 3), channels ascending within each part; the
//     outlier set is stored per stream as a 128-bit mask.
//   MLA: part 0 = the latent channels, part 1 = the rope channels (when rope_dim > 0), both at
//     `bits`.
// Body: [masks: S x 16 bytes, split only][scalars: fp16 per (vector, part): norm, then gamma for
// prod; padded to 16 bytes][codes: per vector, per part: mse codes then QJL signs].
#ifndef KVTIER_KERNELS_SRC_TURBOQUANT_TQ_GEOMETRY_H_
#define KVTIER_KERNELS_SRC_TURBOQUANT_TQ_GEOMETRY_H_

#include <cstdint>

#include "codecs/geometry.h"

namespace kvtier::kernels::internal {

struct TqPartShape {
  uint32_t dim = 0;
  uint32_t bits = 0;          // total bits per coordinate
  uint32_t mse_bits = 0;      // bits (mse) or bits - 1 (prod)
  uint32_t mse_bytes = 0;     // ceil(dim * mse_bits / 8)
  uint32_t sign_bytes = 0;    // ceil(dim / 8) for prod, else 0
  uint32_t code_offset = 0;   // within a vector's code record
  uint32_t first_channel = 0; // fixed parts (no split): channels [first, first + dim)
};

struct TqGeometry {
  StreamShape shape;
  bool split = false;
  bool prod = false;
  uint32_t num_parts = 1;
  TqPartShape parts[2];
  uint32_t scalars_per_vector = 1;  // num_parts * (prod ? 2 : 1)
  uint32_t vector_code_bytes = 0;
  uint64_t mask_bytes = 0;
  uint64_t scalars_offset = 0;
  uint64_t codes_offset = 0;
  uint64_t body_bytes = 0;

  KVTIER_HD uint64_t Vectors() const { return shape.Rows(); }
};

// bits in 1..4; n codes; byte k of the little-endian stream (code j at bits [bits*j, ...)).
KVTIER_HD uint8_t TqPackByte(const uint8_t* codes, uint32_t n, uint32_t bits, uint32_t k) {
  uint32_t v = 0;
  const uint32_t first_bit = 8u * k;
  uint32_t j = first_bit / bits;
  for (; j < n && j * bits < first_bit + 8u; ++j) {
    const int32_t shift = static_cast<int32_t>(j * bits) - static_cast<int32_t>(first_bit);
    const uint32_t c = codes[j];
    v |= shift >= 0 ? (c << shift) : (c >> (-shift));
  }
  return static_cast<uint8_t>(v & 0xFFu);
}

KVTIER_HD uint32_t TqCodeAt(const uint8_t* stream, uint32_t j, uint32_t bits) {
  const uint32_t bit = j * bits;
  uint32_t v = stream[bit / 8u];
  if ((bit % 8u) + bits > 8u) v |= static_cast<uint32_t>(stream[bit / 8u + 1u]) << 8;
  return (v >> (bit % 8u)) & ((1u << bits) - 1u);
}

}  // namespace kvtier::kernels::internal

#endif  // KVTIER_KERNELS_SRC_TURBOQUANT_TQ_GEOMETRY_H_
