// Test helpers for the selection tests: seeded random keys/queries in fp16/bf16/fp32.
#ifndef KVTIER_TESTS_KERNELS_SELECTION_TEST_DATA_H_
#define KVTIER_TESTS_KERNELS_SELECTION_TEST_DATA_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kvtier/kernels/selection.h"

namespace kvtier::kernels::testing {

inline uint16_t FloatToHalfBits(float f) {  // round to nearest even; inputs here stay normal
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  int32_t exp = int32_t((x >> 23) & 0xFF) - 127 + 15;
  uint32_t mant = x & 0x7FFFFFu;
  if (exp <= 0) return uint16_t(sign);  // flush tiny values (not produced by these tests)
  if (exp >= 31) return uint16_t(sign | 0x7C00u);
  uint32_t h = sign | (uint32_t(exp) << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return uint16_t(h);
}

inline uint16_t FloatToBf16Bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t lsb = (x >> 16) & 1u;
  return uint16_t((x + 0x7FFFu + lsb) >> 16);
}

// Bytes of `values` in `dtype`.
inline std::vector<uint8_t> Encode(const std::vector<float>& values, DType dtype) {
  const size_t es = dtype == DType::kFloat32 ? 4 : 2;
  std::vector<uint8_t> out(values.size() * es);
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kFloat32) {
      std::memcpy(&out[i * 4], &values[i], 4);
    } else {
      const uint16_t b =
          dtype == DType::kFloat16 ? FloatToHalfBits(values[i]) : FloatToBf16Bits(values[i]);
      std::memcpy(&out[i * 2], &b, 2);
    }
  }
  return out;
}

// Random keys/queries with structure: N(0,1) entries, a sink at position 0 aligned with the
// queries' mean direction and (optionally) one "needle" token per (layer, KV head) that the
// window queries point at.
struct AttentionData {
  uint32_t L, H_kv, H_q, D, T, Wq;
  std::vector<float> keys;     // [L][H_kv][T][D]
  std::vector<float> queries;  // [L][H_q][Wq][D]
  std::vector<uint32_t> needle;  // [L * H_kv]
};

inline AttentionData MakeAttentionData(uint32_t L, uint32_t H_kv, uint32_t H_q, uint32_t D,
                                       uint32_t T, uint32_t Wq, uint32_t seed,
                                       bool plant_needle = true) {
  AttentionData a{L, H_kv, H_q, D, T, Wq, {}, {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  a.keys.resize(size_t(L) * H_kv * T * D);
  a.queries.resize(size_t(L) * H_q * Wq * D);
  for (float& x : a.keys) x = n01(rng);
  for (float& x : a.queries) x = n01(rng);
  std::uniform_int_distribution<uint32_t> pos(1, T > Wq + 2 ? T - Wq - 2 : 1);
  const uint32_t group = H_q / H_kv;
  for (uint32_t l = 0; l < L; ++l) {
    for (uint32_t h = 0; h < H_kv; ++h) {
      const uint32_t needle = pos(rng);
      a.needle.push_back(needle);
      std::vector<float> dir(D);
      for (float& x : dir) x = n01(rng);
      float* k_needle = &a.keys[((size_t(l) * H_kv + h) * T + needle) * D];
      for (uint32_t g = 0; g < group; ++g) {
        for (uint32_t r = 0; r < Wq; ++r) {
          float* q = &a.queries[((size_t(l) * H_q + h * group + g) * Wq + r) * D];
          for (uint32_t d = 0; d < D; ++d) q[d] = 0.5f * q[d] + (plant_needle ? 0.6f * dir[d] : 0);
        }
      }
      if (plant_needle) {
        for (uint32_t d = 0; d < D; ++d) k_needle[d] = 0.6f * dir[d];
      }
    }
  }
  return a;
}

}  // namespace kvtier::kernels::testing

#endif  // KVTIER_TESTS_KERNELS_SELECTION_TEST_DATA_H_
