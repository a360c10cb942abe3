// Device helpers shared by the codec kernels: element loads/stores of one lane's 16 bytes (vector
// access when the launch proved alignment, scalar otherwise) and fast device conversions.
// Not a public header.
#ifndef KVTIER_KERNELS_SRC_CODECS_CUDA_COMMON_CUH_
#define KVTIER_KERNELS_SRC_CODECS_CUDA_COMMON_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "codecs/codec_cuda.h"
#include "codecs/geometry.h"

namespace kvtier::kernels::internal::cuda {

constexpr int kBlock = 256;

// Exact widening; RNE narrowing (same results as numeric.h for all non-NaN values).
template <typename Elem>
__device__ __forceinline__ float DevToFloat(typename Elem::Storage v) {
  if constexpr (std::is_same_v<Elem, Fp16Elem>) {
    return __half2float(__ushort_as_half(v));
  } else if constexpr (std::is_same_v<Elem, Bf16Elem>) {
    return __bfloat162float(__ushort_as_bfloat16(v));
  } else {
    return v;
  }
}
template <typename Elem>
__device__ __forceinline__ typename Elem::Storage DevFromFloat(float f) {
  if constexpr (std::is_same_v<Elem, Fp16Elem>) {
    return __half_as_ushort(__float2half_rn(f));
  } else if constexpr (std::is_same_v<Elem, Bf16Elem>) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
  } else {
    return f;
  }
}

// MakeKiviGroup (geometry.h) with the hardware fp16 conversions and the correctly rounded
// hardware reciprocal: the same bits for every input (fp16 RNE conversion of a value clamped to
// +-65504 is what FloatToHalfSaturate computes; __half2float is exact; __frcp_rn is 1 / x correctly
// rounded). NaN scale or min (all-NaN or inf - inf groups) take the reference path, so NaN
// payloads stay the reference's.
__device__ __forceinline__ KiviGroupParams DevKiviGroup(float mn, float mx, uint32_t bits) {
  const float mn0 = mn + 0.0f;
  const float levels = static_cast<float>((1u << bits) - 1u);
  const float scale = __fdiv_rn(__fsub_rn(mx + 0.0f, mn0), levels);
  if (isnan(scale) || isnan(mn0)) return MakeKiviGroup(mn, mx, bits);
  const __half hs = __float2half_rn(fminf(fmaxf(scale, -65504.0f), 65504.0f));
  const __half hm = __float2half_rn(fminf(fmaxf(mn0, -65504.0f), 65504.0f));
  KiviGroupParams p;
  p.scale_bits = __half_as_ushort(hs);
  p.min_bits = __half_as_ushort(hm);
  p.scale = __half2float(hs);
  p.mn = __half2float(hm);
  p.inv = p.scale > 0.0f ? __frcp_rn(p.scale) : 0.0f;
  return p;
}

// KiviQuantize (geometry.h) without the conversion-pipe instructions (rint and float -> int run
// at a quarter of the FP32 rate and made the encoders compute-bound): clamping before rounding
// gives the same code as rounding before clamping (the bounds are integers; NaN -> 0 either way),
// and adding 1.5 * 2^23 to a value in [0, 15] rounds it to the nearest integer, ties to even,
// into the low mantissa bits.
__device__ __forceinline__ uint32_t DevKiviQuantize(float x, const KiviGroupParams& p,
                                                    uint32_t bits) {
  const float levels = static_cast<float>((1u << bits) - 1u);
  const float v = __fmul_rn(__fsub_rn(x, p.mn), p.inv);
  const float c = fminf(fmaxf(v, 0.0f), levels);
  // No test of the scale: p.inv is 0 exactly when the scale is not positive, and then v is 0 or
  // NaN, which both give code 0 as KiviQuantize's zero-scale rule does.
  return __float_as_uint(__fadd_rn(c, 12582912.0f)) - 0x4B400000u;
}

// KiviDequantize with the code converted to float by the exponent trick (2^23 + q - 2^23 is q
// exactly) instead of the quarter-rate integer conversion.
__device__ __forceinline__ float DevKiviDequantize(uint32_t q, float scale, float mn) {
  const float f = __fsub_rn(__uint_as_float(0x4B000000u | q), 8388608.0f);
  return __fadd_rn(__fmul_rn(f, scale), mn);
}

// Elements per 16 bytes.
template <typename Elem>
constexpr int VecOf() {
  return 16 / static_cast<int>(sizeof(typename Elem::Storage));
}

// Loads n (<= VEC) elements at p as floats; a 16-byte load when `vec` and n == VEC.
template <typename Elem, int VEC>
__device__ __forceinline__ void LoadElems(const void* p, bool vec, int n, float (&out)[VEC]) {
  using T = typename Elem::Storage;
  if (vec && n == VEC) {
    union {
      uint4 u;
      T e[VEC];
    } v;
    v.u = __ldg(reinterpret_cast<const uint4*>(p));
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = DevToFloat<Elem>(v.e[i]);
  } else {
    const T* e = static_cast<const T*>(p);
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = i < n ? DevToFloat<Elem>(e[i]) : 0.0f;
  }
}

template <typename Elem, int VEC>
__device__ __forceinline__ void StoreElems(void* p, bool vec, int n, const float (&in)[VEC]) {
  using T = typename Elem::Storage;
  if (vec && n == VEC) {
    union {
      uint4 u;
      T e[VEC];
    } v;
#pragma unroll
    for (int i = 0; i < VEC; ++i) v.e[i] = DevFromFloat<Elem>(in[i]);
    *reinterpret_cast<uint4*>(p) = v.u;
  } else {
    T* e = static_cast<T*>(p);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      if (i < n) e[i] = DevFromFloat<Elem>(in[i]);
    }
  }
}

// Copies `bytes` from src to dst with a group of `lanes` threads (lane = this thread's index in
// the group), 16 bytes at a time when both are 16-byte aligned.
__device__ __forceinline__ void CopyRow(char* dst, const char* src, uint64_t bytes, int lane,
                                        int lanes) {
  if (((reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src) | bytes) & 15) == 0) {
    const uint4* s = reinterpret_cast<const uint4*>(src);
    uint4* d = reinterpret_cast<uint4*>(dst);
    for (uint64_t i = lane; i < bytes / 16; i += lanes) d[i] = __ldg(s + i);
  } else {
    for (uint64_t i = lane; i < bytes; i += lanes) dst[i] = src[i];
  }
}

inline bool Aligned16(const void* p, uint64_t stride) {
  return ((reinterpret_cast<uintptr_t>(p) | stride) & 15) == 0;
}

// Threads per row for a row of `chunks` 16-byte pieces: 8, 16 or 32.
inline int ThreadsPerRow(uint32_t chunks) { return chunks <= 8 ? 8 : chunks <= 16 ? 16 : 32; }

inline unsigned GridFor(uint64_t items, int per_block) {
  return static_cast<unsigned>((items + per_block - 1) / per_block);
}

}  // namespace kvtier::kernels::internal::cuda

#endif  // KVTIER_KERNELS_SRC_CODECS_CUDA_COMMON_CUH_
