// Bit-exact scalar conversions shared by the CPU reference and the CUDA kernels: fp16, bf16 and
// fp8 E4M3 <-> fp32, all round-to-nearest-even. Encoders on both sides call these same functions
// so that a body's bytes do not depend on where it was computed (docs/FORMAT.md, "Rounding ties").
// Not a public header. Thread-safe (pure functions).
#ifndef KVTIER_KERNELS_SRC_CODECS_NUMERIC_H_
#define KVTIER_KERNELS_SRC_CODECS_NUMERIC_H_

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__CUDACC__)
#define KVTIER_HD __host__ __device__ __forceinline__
#else
#define KVTIER_HD inline
#include <cmath>
#endif

namespace kvtier::kernels::internal {

KVTIER_HD uint32_t FloatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

KVTIER_HD float BitsFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// Round to nearest integer, ties to even. Device: cvt.rni. Host: the 1.5 * 2^23 trick (exact in
// round-to-nearest-even arithmetic for |x| < 2^22; the sign of a zero result may differ from
// rintf's), which avoids a libm call per element without SSE4.1. Larger |x| are returned
// unchanged: every caller clamps to a small range afterwards (kivi codes) or passes |x| < 8
// (E4M3 subnormals), where both give the same result.
KVTIER_HD float RoundEven(float x) {
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  if (!(x < 4194304.0f && x > -4194304.0f)) return x;
  // Two correctly rounded additions (the codecs are never built with -ffast-math, which could fold
  // them away).
  return (x + 12582912.0f) - 12582912.0f;
#endif
}

// IEEE maxNum / minNum (a NaN operand yields the other operand). Device: fmaxf / fminf. Host:
// comparisons, inlined (fmaxf is a libm call without -ffinite-math-only). Which zero comes back
// from max(+0, -0) is unspecified on both sides; callers canonicalize zeros where it matters.
KVTIER_HD float MaxNum(float a, float b) {
#if defined(__CUDA_ARCH__)
  return fmaxf(a, b);
#else
  if (a != a) return b;
  if (b != b) return a;
  return a > b ? a : b;
#endif
}
KVTIER_HD float MinNum(float a, float b) {
#if defined(__CUDA_ARCH__)
  return fminf(a, b);
#else
  if (a != a) return b;
  if (b != b) return a;
  return a < b ? a : b;
#endif
}

// ---- fp16 ---------------------------------------------------------------------------------------

KVTIER_HD float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in fp32.
    const float v = static_cast<float>(mant) * 5.9604644775390625e-08f;
    return BitsFloat(FloatBits(v) | sign);
  }
  if (exp == 31) return BitsFloat(sign | 0x7F800000u | (mant << 13));
  return BitsFloat(sign | ((exp + 112u) << 23) | (mant << 13));
}

KVTIER_HD uint16_t FloatToHalf(float f) {
  const uint32_t x = FloatBits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7FFFFFFFu;
  if (a >= 0x7F800000u) return static_cast<uint16_t>(sign | (a > 0x7F800000u ? 0x7E00u : 0x7C00u));
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520: rounds to inf
  if (a < 0x38800000u) {                                                // below 2^-14: subnormal
    if (a <= 0x33000000u) return static_cast<uint16_t>(sign);           // <= 2^-25: ties to 0
    const uint32_t e = a >> 23;
    const uint32_t mant = (a & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14..24
    uint32_t r = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    r += static_cast<uint32_t>(rem > half) | (static_cast<uint32_t>(rem == half) & r & 1u);
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t r = (a >> 13) - (112u << 10);
  const uint32_t rem = a & 0x1FFFu;
  // Branch-free: the round-up decision is data-dependent and would mispredict half the time.
  r += static_cast<uint32_t>(rem > 0x1000u) | (static_cast<uint32_t>(rem == 0x1000u) & r & 1u);
  return static_cast<uint16_t>(sign | r);
}

// fp16 with the magnitude clamped to 65504 first (kivi's scale and min never become infinite).
KVTIER_HD uint16_t FloatToHalfSaturate(float f) {
  if (f > 65504.0f) f = 65504.0f;
  if (f < -65504.0f) f = -65504.0f;
  return FloatToHalf(f);
}

// ---- bf16 ---------------------------------------------------------------------------------------

KVTIER_HD float Bf16ToFloat(uint16_t h) { return BitsFloat(static_cast<uint32_t>(h) << 16); }

KVTIER_HD uint16_t FloatToBf16(float f) {
  const uint32_t x = FloatBits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

// ---- fp8 E4M3 (OCP "E4M3FN": bias 7, no infinities, 0x7F/0xFF are NaN, max finite 448) --------

KVTIER_HD uint8_t FloatToE4M3(float f) {
  const uint32_t x = FloatBits(f);
  const uint32_t sign = (x >> 24) & 0x80u;
  const uint32_t a = x & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return 0x7Fu;                                   // NaN
  if (a >= 0x43E00000u) return static_cast<uint8_t>(sign | 0x7Eu);    // >= 448 (and inf): saturate
  if (a < 0x3C800000u) {                                               // below 2^-6: subnormal
    // m * 2^-9 with m in 0..8 (8 is the smallest normal, 0x08). Scaling by 2^9 is exact.
    const float m = RoundEven(BitsFloat(a) * 512.0f);
    return static_cast<uint8_t>(sign | static_cast<uint32_t>(m));
  }
  const uint32_t e = (a >> 23) - 127u + 7u;  // 1..15
  const uint32_t mant = a & 0x7FFFFFu;
  uint32_t code = (e << 3) | (mant >> 20);
  const uint32_t rem = mant & 0xFFFFFu;
  // Round up (carrying into the exponent), branch-free; then saturate.
  code += static_cast<uint32_t>(rem > 0x80000u) | (static_cast<uint32_t>(rem == 0x80000u) & code & 1u);
  code = code > 0x7Eu ? 0x7Eu : code;
  return static_cast<uint8_t>(sign | code);
}

KVTIER_HD float E4M3ToFloat(uint8_t c) {
  const uint32_t sign = static_cast<uint32_t>(c & 0x80u) << 24;
  const uint32_t e = (c >> 3) & 0xFu;
  const uint32_t m = c & 7u;
  if (e == 15 && m == 7) return BitsFloat(0x7FC00000u | sign);
  if (e == 0) return BitsFloat(FloatBits(static_cast<float>(m) * 0.001953125f) | sign);
  return BitsFloat(sign | ((e + 120u) << 23) | (m << 20));
}

// ---- Element types ------------------------------------------------------------------------------
// Storage type and conversions per DType; the one place that maps a dtype to arithmetic.

struct Fp16Elem {
  using Storage = uint16_t;
  static KVTIER_HD float ToFloat(uint16_t v) { return HalfToFloat(v); }
  static KVTIER_HD uint16_t FromFloat(float f) { return FloatToHalf(f); }
};
struct Bf16Elem {
  using Storage = uint16_t;
  static KVTIER_HD float ToFloat(uint16_t v) { return Bf16ToFloat(v); }
  static KVTIER_HD uint16_t FromFloat(float f) { return FloatToBf16(f); }
};
struct Fp32Elem {
  using Storage = float;
  static KVTIER_HD float ToFloat(float v) { return v; }
  static KVTIER_HD float FromFloat(float f) { return f; }
};

// The one compile-time dtype dispatch of the codecs (CPU and CUDA launchers alike): calls
// f(Fp16Elem{}), f(Bf16Elem{}) or f(Fp32Elem{}) for DType codes 1, 2, 3 and returns false for
// any other code, which callers report as "unsupported dtype".
template <typename F>
bool DispatchElem(uint8_t dtype_code, F&& f) {
  switch (dtype_code) {
    case 1: f(Fp16Elem{}); return true;
    case 2: f(Bf16Elem{}); return true;
    case 3: f(Fp32Elem{}); return true;
    default: return false;
  }
}

// The one compile-time dispatch over kivi bit widths (2 and 4): f(std::integral_constant<...>).
template <typename F>
bool DispatchKiviBits(uint32_t bits, F&& f) {
  switch (bits) {
    case 2: f(std::integral_constant<uint32_t, 2>{}); return true;
    case 4: f(std::integral_constant<uint32_t, 4>{}); return true;
    default: return false;
  }
}

}  // namespace kvtier::kernels::internal

#endif  // KVTIER_KERNELS_SRC_CODECS_NUMERIC_H_
