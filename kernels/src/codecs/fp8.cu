// CUDA kernels of the fp8 codec. One group of TPR threads per row (a (layer, K|V, head, token)
// vector); each thread owns 16-byte pieces of the row. Encode: max |x| by shuffle reduction,
// scale = amax / 448, codes by the hardware E4M3 conversion, which rounds exactly as the CPU
// reference's FloatToE4M3 (bit-identical bodies; checked by kernels_codec_gpu_test), two codes
// per conversion instruction. Rows of at most 32 * VEC elements are encoded kRows per thread group
// (Fp8EncodeRowsKernel), longer rows by Fp8EncodeKernel.
#include <cuda_fp8.h>

#include "codecs/cuda_common.cuh"

namespace kvtier::kernels::internal::cuda {
namespace {

// E4M3 by the hardware conversion (round to nearest even, saturating to +-448: the same codes
// as numeric.h's FloatToE4M3 for every non-NaN input; NaN is mapped to 0x7F as there).
__device__ __forceinline__ uint8_t DevToE4M3(float f) {
  const uint8_t c = __nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3);
  return (c & 0x7F) == 0x7F ? 0x7F : c;
}

// Two codes by one paired conversion (lo -> first byte), each fixed up as DevToE4M3 does.
__device__ __forceinline__ void DevToE4M3x2(float lo, float hi, uint8_t* out) {
  const uint16_t c = __nv_cvt_float2_to_fp8x2(make_float2(lo, hi), __NV_SATFINITE, __NV_E4M3);
  const uint8_t a = static_cast<uint8_t>(c), b = static_cast<uint8_t>(c >> 8);
  out[0] = (a & 0x7F) == 0x7F ? 0x7F : a;
  out[1] = (b & 0x7F) == 0x7F ? 0x7F : b;
}

// Exact E4M3 -> fp32 (through the exact E4M3 -> fp16 hardware conversion).
__device__ __forceinline__ float DevFromE4M3(uint8_t c) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(c, __NV_E4M3);
  return __half2float(__half(h));
}

template <int VEC>
union Codes {
  uint8_t c[VEC];
  uint2 u2;
  uint32_t u1;
};

template <int VEC>
__device__ __forceinline__ void StoreCodes(uint8_t* dst, bool vec, int n, const Codes<VEC>& q) {
  if (vec && n == VEC) {
    if constexpr (VEC == 8) {
      *reinterpret_cast<uint2*>(dst) = q.u2;
    } else {
      *reinterpret_cast<uint32_t*>(dst) = q.u1;
    }
  } else {
    for (int k = 0; k < n; ++k) dst[k] = q.c[k];
  }
}

// Codes of VEC (even) elements. The three cases are separate loops so that the common one (multiply by
// the reciprocal) never pays for the division of the rare one.
template <int VEC>
__device__ __forceinline__ void QuantizeVec(const float (&v)[VEC], const Fp8RowParams& p,
                                            Codes<VEC>& q) {
  if (p.zero) {
#pragma unroll
    for (int k = 0; k < VEC; ++k) q.c[k] = 0;
  } else if (p.use_div) {
#pragma unroll
    for (int k = 0; k < VEC; ++k) q.c[k] = DevToE4M3(__fdiv_rn(v[k], p.scale));
  } else {
#pragma unroll
    for (int k = 0; k < VEC; k += 2) {
      DevToE4M3x2(__fmul_rn(v[k], p.inv), __fmul_rn(v[k + 1], p.inv), &q.c[k]);
    }
  }
}

// Rows of up to kCached * TPR * VEC elements stay in registers between the max pass and the
// quantization pass; longer rows are read again (from L1).
constexpr int kCached = 2;

template <typename Elem, int TPR>
__global__ void __launch_bounds__(kBlock)
    Fp8EncodeKernel(StreamShape shape, const char* in, uint64_t in_stride, char* body,
                    uint64_t body_stride, bool vec) {
  constexpr int VEC = VecOf<Elem>();
  using T = typename Elem::Storage;
  const uint64_t row = (uint64_t{blockIdx.x} * kBlock + threadIdx.x) / TPR;
  const int lane = threadIdx.x % TPR;
  const bool valid = row < shape.Rows();
  const uint32_t V = shape.width;
  const uint32_t chunk = blockIdx.y;
  const T* x = reinterpret_cast<const T*>(in + chunk * in_stride) + (valid ? row * V : 0);
  float v[kCached][VEC];
  float amax = 0.0f;
#pragma unroll
  for (int it = 0; it < kCached; ++it) {
    const uint32_t i = (it * TPR + lane) * VEC;
    if (valid && i < V) {
      LoadElems<Elem, VEC>(x + i, vec, min(VEC, static_cast<int>(V - i)), v[it]);
#pragma unroll
      for (int k = 0; k < VEC; ++k) amax = fmaxf(amax, fabsf(v[it][k]));
    }
  }
  for (uint32_t i = (kCached * TPR + lane) * VEC; valid && i < V; i += TPR * VEC) {
    float w[VEC];
    LoadElems<Elem, VEC>(x + i, vec, min(VEC, static_cast<int>(V - i)), w);
#pragma unroll
    for (int k = 0; k < VEC; ++k) amax = fmaxf(amax, fabsf(w[k]));
  }
#pragma unroll
  for (int off = TPR / 2; off > 0; off /= 2) {
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
  }
  if (!valid) return;
  const Fp8Geometry g = Fp8Geometry::Make(shape);
  char* b = body + chunk * body_stride;
  const Fp8RowParams p = MakeFp8Row(amax);
  if (lane == 0) reinterpret_cast<float*>(b + g.scales_offset)[row] = p.scale;
  uint8_t* codes = reinterpret_cast<uint8_t*>(b + g.codes_offset) + row * V;
#pragma unroll
  for (int it = 0; it < kCached; ++it) {
    const uint32_t i = (it * TPR + lane) * VEC;
    if (i < V) {
      Codes<VEC> q;
      QuantizeVec<VEC>(v[it], p, q);
      StoreCodes<VEC>(codes + i, vec, min(VEC, static_cast<int>(V - i)), q);
    }
  }
  for (uint32_t i = (kCached * TPR + lane) * VEC; i < V; i += TPR * VEC) {
    const int n = min(VEC, static_cast<int>(V - i));
    float w[VEC];
    LoadElems<Elem, VEC>(x + i, vec, n, w);
    Codes<VEC> q;
    QuantizeVec<VEC>(w, p, q);
    StoreCodes<VEC>(codes + i, vec, n, q);
  }
}

// Rows of at most TPR * VEC elements (head_dim 128 in fp16: 16 threads of 8): each thread
// handles kRows rows, RPP = kBlock / TPR rows apart, with all their 16-byte loads issued before
// the first is used, so more bytes are in flight per thread than with one row each.
// Measured on the H100 (encode / copy, paired conversions): 2 rows 0.86, 4 rows 0.76 (64
// registers, half the occupancy); the earlier one-row kernel with single conversions: 0.69.
constexpr int kRows = 2;

template <typename Elem, int TPR>
__global__ void __launch_bounds__(kBlock)
    Fp8EncodeRowsKernel(StreamShape shape, const char* in, uint64_t in_stride, char* body,
                        uint64_t body_stride, bool vec) {
  constexpr int VEC = VecOf<Elem>();
  constexpr uint32_t RPP = kBlock / TPR;
  using T = typename Elem::Storage;
  const uint32_t V = shape.width;
  const uint64_t rows = shape.Rows();
  const uint64_t row0 = uint64_t{blockIdx.x} * (RPP * kRows) + threadIdx.x / TPR;
  const int lane = threadIdx.x % TPR;
  const uint32_t i = lane * VEC;
  const int n = i < V ? min(VEC, static_cast<int>(V - i)) : 0;
  const uint32_t chunk = blockIdx.y;
  const T* x = reinterpret_cast<const T*>(in + chunk * in_stride) + row0 * V + i;
  float v[kRows][VEC];
  float amax[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    amax[r] = 0.0f;
    if (row0 + r * RPP < rows && n > 0) {
      LoadElems<Elem, VEC>(x + uint64_t{r * RPP} * V, vec, n, v[r]);
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k) v[r][k] = 0.0f;
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int k = 0; k < VEC; ++k) amax[r] = fmaxf(amax[r], fabsf(v[r][k]));
  }
#pragma unroll
  for (int off = TPR / 2; off > 0; off /= 2) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      amax[r] = fmaxf(amax[r], __shfl_xor_sync(0xffffffffu, amax[r], off));
    }
  }
  const Fp8Geometry g = Fp8Geometry::Make(shape);
  char* b = body + chunk * body_stride;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const uint64_t row = row0 + r * RPP;
    if (row >= rows) break;
    const Fp8RowParams p = MakeFp8Row(amax[r]);
    if (lane == 0) reinterpret_cast<float*>(b + g.scales_offset)[row] = p.scale;
    if (n > 0) {
      Codes<VEC> q;
      QuantizeVec<VEC>(v[r], p, q);
      StoreCodes<VEC>(reinterpret_cast<uint8_t*>(b + g.codes_offset) + row * V + i, vec, n, q);
    }
  }
}

template <typename Elem, int TPR>
__global__ void __launch_bounds__(kBlock)
    Fp8DecodeKernel(StreamShape shape, const char* body, uint64_t body_stride, TargetView target,
                    bool vec_in, bool vec_out) {
  constexpr int VEC = VecOf<Elem>();
  using T = typename Elem::Storage;
  const uint64_t row = (uint64_t{blockIdx.x} * kBlock + threadIdx.x) / TPR;
  const int lane = threadIdx.x % TPR;
  if (row >= shape.Rows()) return;
  const uint32_t V = shape.width;
  const uint32_t chunk = blockIdx.y;
  const Fp8Geometry g = Fp8Geometry::Make(shape);
  const char* b = body + chunk * body_stride;
  const float scale = __ldg(reinterpret_cast<const float*>(b + g.scales_offset) + row);
  const uint8_t* codes = reinterpret_cast<const uint8_t*>(b + g.codes_offset) + row * V;
  const uint32_t s = static_cast<uint32_t>(row / shape.tokens);
  const uint32_t t = static_cast<uint32_t>(row % shape.tokens);
  uint32_t l, kv, h;
  shape.Decompose(s, &l, &kv, &h);
  T* out = reinterpret_cast<T*>(target.Row(l, kv, h, t, chunk));
  for (uint32_t i = lane * VEC; i < V; i += TPR * VEC) {
    const int n = min(VEC, static_cast<int>(V - i));
    Codes<VEC> q;
    if (vec_in && n == VEC) {
      if constexpr (VEC == 8) {
        q.u2 = __ldg(reinterpret_cast<const uint2*>(codes + i));
      } else {
        q.u1 = __ldg(reinterpret_cast<const uint32_t*>(codes + i));
      }
    } else {
      for (int k = 0; k < VEC; ++k) q.c[k] = k < n ? codes[i + k] : 0;
    }
    float v[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) v[k] = __fmul_rn(DevFromE4M3(q.c[k]), scale);
    StoreElems<Elem, VEC>(out + i, vec_out, n, v);
  }
}

template <typename Elem, template <typename, int> class K, typename... Args>
void LaunchRows(uint32_t V, uint64_t rows, uint32_t num_chunks, cudaStream_t stream,
                Args... args) {
  constexpr int VEC = VecOf<Elem>();
  const int tpr = ThreadsPerRow((V + VEC - 1) / VEC);
  dim3 grid(GridFor(rows * tpr, kBlock), num_chunks);
  (void)grid;
  switch (tpr) {
    case 8:
      K<Elem, 8>::Launch(grid, stream, args...);
      break;
    case 16:
      K<Elem, 16>::Launch(grid, stream, args...);
      break;
    default:
      K<Elem, 32>::Launch(grid, stream, args...);
      break;
  }
}

template <typename Elem, int TPR>
struct EncodeLauncher {
  template <typename... Args>
  static void Launch(dim3 grid, cudaStream_t stream, Args... args) {
    Fp8EncodeKernel<Elem, TPR><<<grid, kBlock, 0, stream>>>(args...);
  }
};
template <typename Elem, int TPR>
struct EncodeRowsLauncher {
  template <typename... Args>
  static void Launch(dim3 grid, cudaStream_t stream, Args... args) {
    grid.x = (grid.x + kRows - 1) / kRows;  // kRows rows per thread group
    Fp8EncodeRowsKernel<Elem, TPR><<<grid, kBlock, 0, stream>>>(args...);
  }
};
template <typename Elem, int TPR>
struct DecodeLauncher {
  template <typename... Args>
  static void Launch(dim3 grid, cudaStream_t stream, Args... args) {
    Fp8DecodeKernel<Elem, TPR><<<grid, kBlock, 0, stream>>>(args...);
  }
};

}  // namespace

int LaunchFp8Encode(uint8_t dtype, const StreamShape& shape, const void* in, uint64_t in_stride,
                    void* body, uint64_t body_stride, uint32_t num_chunks, void* stream) {
  const bool ok = DispatchElem(dtype, [&](auto e) {
    using Elem = decltype(e);
    constexpr int VEC = VecOf<Elem>();
    // Vector access needs 16-byte aligned rows in and VEC-byte aligned code rows out.
    const bool vec = Aligned16(in, in_stride) && Aligned16(body, body_stride) &&
                     shape.width % VEC == 0;
    // Rows that fit one pass of their thread group (V <= 32 * VEC) take the multi-row kernel.
    if (shape.width <= 32u * VEC) {
      LaunchRows<Elem, EncodeRowsLauncher>(shape.width, shape.Rows(), num_chunks,
                                           static_cast<cudaStream_t>(stream), shape,
                                           static_cast<const char*>(in), in_stride,
                                           static_cast<char*>(body), body_stride, vec);
    } else {
      LaunchRows<Elem, EncodeLauncher>(shape.width, shape.Rows(), num_chunks,
                                       static_cast<cudaStream_t>(stream), shape,
                                       static_cast<const char*>(in), in_stride,
                                       static_cast<char*>(body), body_stride, vec);
    }
  });
  if (!ok) return kUnsupported;
  return cudaGetLastError();
}

int LaunchFp8Decode(uint8_t dtype, const StreamShape& shape, const void* body,
                    uint64_t body_stride, const TargetView& target, uint32_t num_chunks,
                    void* stream) {
  const bool ok = DispatchElem(dtype, [&](auto e) {
    using Elem = decltype(e);
    constexpr int VEC = VecOf<Elem>();
    const bool vec_in = Aligned16(body, body_stride) && shape.width % VEC == 0;
    const bool vec_out = target.align16 && shape.width % VEC == 0;
    LaunchRows<Elem, DecodeLauncher>(shape.width, shape.Rows(), num_chunks,
                                     static_cast<cudaStream_t>(stream), shape,
                                     static_cast<const char*>(body), body_stride, target, vec_in,
                                     vec_out);
  });
  if (!ok) return kUnsupported;
  return cudaGetLastError();
}

}  // namespace kvtier::kernels::internal::cuda
