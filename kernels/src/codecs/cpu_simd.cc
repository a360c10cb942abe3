// AVX2 + F16C row decoders (cpu_simd.h). Compiled with target attributes so the rest of the
// library keeps the baseline instruction set; callers check CpuHasAvx2F16c() first.
#include "codecs/cpu_simd.h"

#include <cpuid.h>
#include <immintrin.h>

#include <cstring>

#include "codecs/numeric.h"

namespace kvtier::kernels::internal {
namespace {

#define KVTIER_AVX2 __attribute__((target("avx2,f16c")))

struct E4M3Floats {
  float v[256];
  E4M3Floats() {
    for (int i = 0; i < 256; ++i) v[i] = E4M3ToFloat(static_cast<uint8_t>(i));
  }
};
const E4M3Floats& Table() {
  static const E4M3Floats t;
  return t;
}

// Narrows 8 floats with round-to-nearest-even and stores 16 bytes.
KVTIER_AVX2 inline void Store8(uint8_t dtype, __m256 f, void* out) {
  __m128i h;
  if (dtype == 1) {
    h = _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  } else {
    // bf16: (x + 0x7FFF + ((x >> 16) & 1)) >> 16; NaN -> quiet NaN (x >> 16 | 0x40).
    const __m256i x = _mm256_castps_si256(f);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7FFF)), lsb), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q));
    const __m256i qnan = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
    r = _mm256_blendv_epi8(r, qnan, nan);
    // Pack the low 16 bits of 8 lanes.
    const __m256i packed = _mm256_packus_epi32(r, r);  // r < 65536: no saturation
    h = _mm_unpacklo_epi64(_mm256_castsi256_si128(packed), _mm256_extracti128_si256(packed, 1));
  }
  _mm_storeu_si128(static_cast<__m128i*>(out), h);
}

}  // namespace

bool CpuHasAvx2F16c() {
  // __builtin_cpu_supports("avx2") includes the OS's AVX state check; F16C is CPUID.1:ECX[29]
  // (read directly: clang 14 has no "f16c" feature name for the builtin).
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __builtin_cpu_supports("avx2") && __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
  }();
  return has;
}

KVTIER_AVX2 void Fp8DecodeRowAvx2(uint8_t dtype, const uint8_t* codes, float scale, void* out,
                                  uint32_t n) {
  const float* table = Table().v;
  const __m256 s = _mm256_set1_ps(scale);
  uint8_t* o = static_cast<uint8_t*>(out);
  for (uint32_t i = 0; i < n; i += 8) {
    uint64_t c8;
    std::memcpy(&c8, codes + i, 8);
    const __m256i idx = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(c8)));
    const __m256 v = _mm256_mul_ps(_mm256_i32gather_ps(table, idx, 4), s);
    Store8(dtype, v, o + i * 2);
  }
}

KVTIER_AVX2 void KiviDequantPackedAvx2(uint8_t dtype, uint32_t bits, const uint32_t* words,
                                       float scale, float mn, void* out, uint32_t n) {
  const __m256 s = _mm256_set1_ps(scale), m = _mm256_set1_ps(mn);
  const __m256i mask = _mm256_set1_epi32((1 << bits) - 1);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i shifts = _mm256_mullo_epi32(lanes, _mm256_set1_epi32(static_cast<int>(bits)));
  const uint32_t per_word = 32 / bits;
  uint8_t* o = static_cast<uint8_t*>(out);
  for (uint32_t i = 0; i < n; i += 8) {
    uint32_t word;
    std::memcpy(&word, words + i / per_word, 4);
    word >>= bits * (i % per_word);
    const __m256i q = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(word)), shifts), mask);
    // q * scale + mn as two roundings (a multiply then an add), as the scalar reference does.
    const __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q), s), m);
    Store8(dtype, v, o + i * 2);
  }
}

KVTIER_AVX2 void KiviDequantColumnsAvx2(uint8_t dtype, uint32_t bits, uint32_t shift,
                                        const uint32_t* words, const float* scale, const float* mn,
                                        void* out, uint32_t n) {
  const __m256i mask = _mm256_set1_epi32((1 << bits) - 1);
  const __m128i sh = _mm_cvtsi32_si128(static_cast<int>(shift));
  uint8_t* o = static_cast<uint8_t*>(out);
  for (uint32_t c = 0; c < n; c += 8) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + c));
    const __m256i q = _mm256_and_si256(_mm256_srl_epi32(w, sh), mask);
    const __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_loadu_ps(scale + c)),
                                   _mm256_loadu_ps(mn + c));
    Store8(dtype, v, o + c * 2);
  }
}

}  // namespace kvtier::kernels::internal
