// Helpers shared by the codec tests: seeded random chunks with KV-like structure (a few outlier
// key channels, per-token value scales), element access by (layer, kv, head, token, dim), and
// conversion between the codecs' storage types and float.
#ifndef KVTIER_TESTS_KERNELS_CODEC_TEST_UTIL_H_
#define KVTIER_TESTS_KERNELS_CODEC_TEST_UTIL_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "codecs/numeric.h"
#include "kvtier/kernels/codec.h"

namespace kvtier::kernels::testing {

inline float StoredToFloat(DType t, const uint8_t* p) {
  if (t == DType::kFloat32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return t == DType::kFloat16 ? internal::HalfToFloat(h) : internal::Bf16ToFloat(h);
}

inline void FloatToStored(DType t, float f, uint8_t* p) {
  if (t == DType::kFloat32) {
    std::memcpy(p, &f, 4);
    return;
  }
  const uint16_t h = t == DType::kFloat16 ? internal::FloatToHalf(f) : internal::FloatToBf16(f);
  std::memcpy(p, &h, 2);
}

// Canonical byte offset of element (layer, kv, head, token, dim).
inline size_t CanonicalOffset(const KvLayout& l, uint32_t T, uint32_t layer, uint32_t kv,
                              uint32_t head, uint32_t t, uint32_t d) {
  const size_t V = l.VectorDim();
  size_t row;
  if (l.kind == LayoutKind::kMha) {
    row = ((size_t{layer} * 2 + kv) * l.num_kv_heads + head) * T + t;
  } else {
    row = size_t{layer} * T + t;
  }
  return (row * V + d) * DTypeSize(l.dtype);
}

// A chunk of KV-like data in the canonical layout: keys N(0,1) with a few large-mean outlier
// channels, values N(0,1) times a log-normal per-token scale. Seeded: same seed, same bytes.
inline std::vector<uint8_t> RandomChunk(const KvLayout& l, uint32_t T, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::vector<uint8_t> out(l.ChunkBytes(T));
  const uint32_t V = l.VectorDim();
  const uint32_t heads = l.kind == LayoutKind::kMha ? l.num_kv_heads : 1;
  const uint32_t kvs = l.kind == LayoutKind::kMha ? 2 : 1;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    for (uint32_t kv = 0; kv < kvs; ++kv) {
      for (uint32_t h = 0; h < heads; ++h) {
        for (uint32_t t = 0; t < T; ++t) {
          const float tok_scale = std::exp(0.5f * n01(rng));
          for (uint32_t d = 0; d < V; ++d) {
            float x = n01(rng);
            if (kv == 0 && l.kind == LayoutKind::kMha && d % 37 == 5) x = 4.0f + 12.0f * x;
            if (kv == 1 || l.kind == LayoutKind::kMla) x *= tok_scale;
            FloatToStored(l.dtype, x, out.data() + CanonicalOffset(l, T, layer, kv, h, t, d));
          }
        }
      }
    }
  }
  return out;
}

// Fills a buffer with a poison pattern (0xA5 bytes: a NaN-free, clearly wrong value).
inline void Poison(std::vector<uint8_t>* buf) { std::fill(buf->begin(), buf->end(), 0xA5); }

}  // namespace kvtier::kernels::testing

#endif  // KVTIER_TESTS_KERNELS_CODEC_TEST_UTIL_H_
