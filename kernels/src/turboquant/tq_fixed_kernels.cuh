// Fixed-point matrices on the int8 tensor cores: TurboQuant with matrix=fixed at head_dim 128
// (MHA/GQA, no split, fp16/bf16, 16-byte aligned): the dense rotation (mse, and prod with the
// Gaussian QJL) and the Hadamard rotation with the Gaussian QJL (prod). docs/FORMAT.md
// ("Fixed-point matrices") defines the arithmetic: every matrix-vector product is an exact integer
// sum of int16 x int16 products (mod 2^32), so the order in which the tensor cores add them cannot
// change a bit, and bodies equal the CPU reference's byte for byte.
//
// Included by tq_cuda.cu inside its anonymous namespace (it uses TqDevParams, TqTarget, QuadCode,
// QuadLoadNormalized, QuadStoreCodes, Lo16 / Hi16 / Pack2, g_tq_stream from there).
//
// Every int16 operand is split into two int8 planes (v = 256 hi + lo, both signed) and multiplied
// with mma.m16n8k32 (s8 x s8 -> s32): hi*hi, hi*lo + lo*hi and lo*lo in three accumulators,
// combined as (hh << 16) + (mid << 8) + ll in wrapping 32-bit arithmetic (= the exact sum mod
// 2^32). The matrices' B fragments are prepared on the host in fragment order (FxFragments: one
// 16-byte load per lane gives the hi and lo fragments of one (k, n) tile) and read through L1.
// Two kernel families, a block taking tiles of 64 vectors in both:
//  - shared-memory kernels (EncodeFxKernel / DecodeFxKernel: dense prod, Hadamard + Gaussian QJL,
//    and dense mse when selected for tests): per-vector steps in the quad layout of the quad
//    kernels (4 lanes per vector), int8 planes and int32 products through shared memory, all 8
//    warps on each 64 x 128 product; prod repeats the steps with the residual and the QJL matrix,
//    decode starts with the +-1 sign plane times the QJL matrix;
//  - register-fragment kernels (EncodeFxRegKernel / DecodeFxRegKernel, dense mse): each warp owns
//    16 rows, builds its A fragments in registers and consumes the accumulators in place.

constexpr uint32_t kFxTile = 64;            // vectors per block tile
constexpr uint32_t kFxThreads = 256;        // 8 warps
constexpr uint32_t kFxPitchA = 144;         // bytes per row of an int8 plane (conflict-free)
constexpr uint32_t kFxPitchC = 132;         // int32 per row of the result tile
constexpr uint32_t kFxFragWords = 4u * 16u * 32u;  // uint4 per matrix: 4 k-tiles x 16 n-tiles x 32 lanes
constexpr float kFxVecScale = 16384.0f;     // 2^14
constexpr float kFxOutScale = 3.7252902984619140625e-09f;  // 2^-28
constexpr float kFxQjlOutScale = 4.8828125e-04f;           // 2^-11

__device__ __forceinline__ void FxMma(int32_t c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The m16n8k32 A fragment of rows [row0, row0 + 16), bytes [32 kt, 32 kt + 32) of a plane.
__device__ __forceinline__ void FxLoadA(const uint8_t* plane, uint32_t row0, uint32_t kt,
                                        uint32_t lane, uint32_t a[4]) {
  const uint32_t r = row0 + (lane & 7u) + ((lane >> 3) & 1u) * 8u;
  const uint8_t* p = plane + r * kFxPitchA + kt * 32u + (lane >> 4) * 16u;
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(addr));
}

// C (64 x 128 int32, pitch kFxPitchC) = A * B^T over K = 128 for the block tile, B given in
// fragment order (FxFragments). kSplitA: A is two planes (hi, lo) and C = (hh << 16) +
// ((hl + lh) << 8) + ll; otherwise A is one plane (the +-1 signs) and C = (a*hi << 8) + a*lo.
// Warp w computes rows 32 (w & 1).., columns 32 (w >> 1).. in two passes of 16 columns (fewer
// live accumulators: two blocks fit on an SM).
template <bool kSplitA>
__device__ __forceinline__ void FxTileMma(const uint8_t* a_hi, const uint8_t* a_lo,
                                          const uint4* frag, int32_t* C, uint32_t warp,
                                          uint32_t lane) {
  const uint32_t wm = warp & 1u, wn = warp >> 1;
  const uint32_t g = lane >> 2, t = lane & 3u;
#pragma unroll
  for (uint32_t pass = 0; pass < 2; ++pass) {
    int32_t hh[2][2][4] = {}, mid[2][2][4] = {}, ll[2][2][4] = {};
#pragma unroll
    for (uint32_t kt = 0; kt < 4; ++kt) {
      uint32_t ah[2][4], al[2][4];
#pragma unroll
      for (uint32_t mi = 0; mi < 2; ++mi) {
        FxLoadA(a_hi, 32u * wm + 16u * mi, kt, lane, ah[mi]);
        if constexpr (kSplitA) FxLoadA(a_lo, 32u * wm + 16u * mi, kt, lane, al[mi]);
      }
#pragma unroll
      for (uint32_t ni = 0; ni < 2; ++ni) {
        const uint4 b = __ldg(frag + (kt * 16u + 4u * wn + 2u * pass + ni) * 32u + lane);
#pragma unroll
        for (uint32_t mi = 0; mi < 2; ++mi) {
          FxMma(hh[mi][ni], ah[mi], b.x, b.y);
          FxMma(mid[mi][ni], ah[mi], b.z, b.w);
          if constexpr (kSplitA) {
            FxMma(mid[mi][ni], al[mi], b.x, b.y);
            FxMma(ll[mi][ni], al[mi], b.z, b.w);
          }
        }
      }
    }
#pragma unroll
    for (uint32_t mi = 0; mi < 2; ++mi) {
#pragma unroll
      for (uint32_t ni = 0; ni < 2; ++ni) {
        uint32_t v[4];
#pragma unroll
        for (uint32_t e = 0; e < 4; ++e) {
          if constexpr (kSplitA) {
            v[e] = (static_cast<uint32_t>(hh[mi][ni][e]) << 16) +
                   (static_cast<uint32_t>(mid[mi][ni][e]) << 8) + static_cast<uint32_t>(ll[mi][ni][e]);
          } else {
            v[e] = (static_cast<uint32_t>(hh[mi][ni][e]) << 8) + static_cast<uint32_t>(mid[mi][ni][e]);
          }
        }
        const uint32_t row = 32u * wm + 16u * mi + g, col = 32u * wn + 16u * pass + 8u * ni + 2u * t;
        *reinterpret_cast<uint2*>(C + row * kFxPitchC + col) = make_uint2(v[0], v[1]);
        *reinterpret_cast<uint2*>(C + (row + 8u) * kFxPitchC + col) = make_uint2(v[2], v[3]);
      }
    }
  }
}

// Shared memory of the fixed kernels: [a_hi][a_lo][C][lut: 1024 float2, encode at 3+ mse bits]
// [cents: 16 floats][norms: 64 floats][encode: the next tile's input rows, 64 x kFxPitchIn].
// The matrices' fragments (32 KiB each) are read from global memory through L1, where they stay:
// every warp of the SM reads the same 32-64 KiB, and leaving them out of shared memory lets two
// blocks share an SM whatever the variant.
constexpr uint32_t kFxPitchIn = 272;  // bytes per staged input row (256 + 16: conflict-free)
template <bool kLut, bool kStage>
constexpr uint32_t FxSmem() {
  return 2u * kFxTile * kFxPitchA + kFxTile * kFxPitchC * 4u + (kLut ? kQuantLut * 8u : 0u) +
         16u * 4u + kFxTile * 4u + (kStage ? kFxTile * kFxPitchIn : 0u);
}

struct FxMatrices {
  const uint4* rot = nullptr;  // fragment order of the direction's B (FxFragments)
  const uint4* qjl = nullptr;
};

struct FxSmemView {
  uint8_t* a_hi;
  uint8_t* a_lo;
  int32_t* C;
  float2* lut;
  float* cents;
  float* norms;
  uint8_t* stage;  // encode: staged input rows, pitch kFxPitchIn
};

template <bool kLut>
__device__ FxSmemView FxCarve(unsigned char* smem) {
  FxSmemView s;
  unsigned char* p = smem;
  s.a_hi = p;
  p += kFxTile * kFxPitchA;
  s.a_lo = p;
  p += kFxTile * kFxPitchA;
  s.C = reinterpret_cast<int32_t*>(p);
  p += kFxTile * kFxPitchC * 4u;
  s.lut = reinterpret_cast<float2*>(p);
  if constexpr (kLut) p += kQuantLut * 8u;
  s.cents = reinterpret_cast<float*>(p);
  p += 64u;
  s.norms = reinterpret_cast<float*>(p);
  p += kFxTile * 4u;
  s.stage = p;
  return s;
}

template <bool kLut>
__device__ void FxLoadTables(const TqDevParams& P, const FxSmemView& s) {
  if constexpr (kLut) {
    for (uint32_t i = threadIdx.x; i < kQuantLut; i += blockDim.x) s.lut[i] = P.parts[0].lut[i];
  }
  if (threadIdx.x < 16) s.cents[threadIdx.x] = P.fast_cents[threadIdx.x];
  __syncthreads();
}

// Starts copying the input rows of the tile at `base` (64 rows of 256 bytes; rows past the chunk
// zero-filled) into the staging buffer with cp.async; FxWaitRows + __syncthreads complete it.
template <typename S>
__device__ __forceinline__ void FxStageRows(const S* in, uint64_t base, uint64_t nv, uint8_t* stage) {
  for (uint32_t i = threadIdx.x; i < kFxTile * 16u; i += blockDim.x) {
    const uint64_t v = base + i / 16u;
    const bool live = v < nv;
    const char* src = reinterpret_cast<const char*>(in) + (live ? v * 256u + (i % 16u) * 16u : 0u);
    const uint32_t dst =
        static_cast<uint32_t>(__cvta_generic_to_shared(stage + (i / 16u) * kFxPitchIn + (i % 16u) * 16u));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(live ? 16 : 0));
  }
  asm volatile("cp.async.commit_group;\n" ::);
}
__device__ __forceinline__ void FxWaitRows() { asm volatile("cp.async.wait_all;\n" ::); }

// Eight words of int8 plane bytes (hi / lo) from 32 values, four per word (v[4 w + e] is byte e
// of word w), through the spec's q(): NaN -> 0, clamp to +-32639, round half to even. The
// rounding is the binary32 add of 1.5 * 2^23, whose encoding then holds the integer in its low
// bits: byte 0 is the low plane's byte (v - 256 hi has v's low byte) and byte 1 of the same add
// with 128 more is the high plane's (hi = (v + 128) >> 8); 0x4B400000 has no bits in those bytes.
__device__ __forceinline__ void FxPlaneWords(const float v[32], uint32_t hi[8], uint32_t lo[8]) {
  constexpr float kMagic = 12582912.0f, kMagicHi = 12583040.0f;  // 1.5 * 2^23, + 128
#pragma unroll
  for (uint32_t w = 0; w < 8; ++w) {
    uint32_t l[4], h[4];
#pragma unroll
    for (uint32_t e = 0; e < 4; ++e) {
      const float x = v[4 * w + e];
      const float c = isnan(x) ? 0.0f : fminf(fmaxf(x, -32639.0f), 32639.0f);
      l[e] = __float_as_uint(__fadd_rn(c, kMagic));
      h[e] = __float_as_uint(__fadd_rn(c, kMagicHi));
    }
    lo[w] = __byte_perm(__byte_perm(l[0], l[1], 0x0040), __byte_perm(l[2], l[3], 0x0040), 0x5410);
    hi[w] = __byte_perm(__byte_perm(h[0], h[1], 0x0051), __byte_perm(h[2], h[3], 0x0051), 0x5410);
  }
}

// Row r's values in the quad layout (lane q: elements 32k + 8q + e at v[8k + e]) -> the int8
// planes in shared memory.
__device__ __forceinline__ void FxQuadPlanes(const FxSmemView& s, uint32_t r, uint32_t q,
                                             const float v[32]) {
  uint32_t hi[8], lo[8];
  FxPlaneWords(v, hi, lo);
#pragma unroll
  for (uint32_t k = 0; k < 4; ++k) {
    *reinterpret_cast<uint2*>(s.a_lo + r * kFxPitchA + 32u * k + 8u * q) = make_uint2(lo[2 * k], lo[2 * k + 1]);
    *reinterpret_cast<uint2*>(s.a_hi + r * kFxPitchA + 32u * k + 8u * q) = make_uint2(hi[2 * k], hi[2 * k + 1]);
  }
}

// Row r of the result tile in the quad layout, as int32 -> float * scale (exact scaling).
__device__ __forceinline__ void FxQuadLoadC(const FxSmemView& s, uint32_t r, uint32_t q, float scale,
                                            float out[32]) {
#pragma unroll
  for (uint32_t k = 0; k < 4; ++k) {
#pragma unroll
    for (uint32_t h = 0; h < 2; ++h) {
      const int4 c = *reinterpret_cast<const int4*>(s.C + r * kFxPitchC + 32u * k + 8u * q + 4u * h);
      out[8 * k + 4 * h + 0] = __fmul_rn(__int2float_rn(c.x), scale);
      out[8 * k + 4 * h + 1] = __fmul_rn(__int2float_rn(c.y), scale);
      out[8 * k + 4 * h + 2] = __fmul_rn(__int2float_rn(c.z), scale);
      out[8 * k + 4 * h + 3] = __fmul_rn(__int2float_rn(c.w), scale);
    }
  }
}

// z (quad layout) -> codes stored; prod: z becomes the residual, its planes are stored and gamma
// returned.
template <uint32_t kMb, bool kProd>
__device__ __forceinline__ float FxQuadQuantize(const TqDevParams& P, const FxSmemView& s, float z[32],
                                                uint8_t* rec, bool live, uint32_t r, uint32_t q) {
  if constexpr (kMb > 0) {
    uint32_t packed[4];
#pragma unroll
    for (uint32_t k = 0; k < 4; ++k) {
      uint32_t w = 0;
#pragma unroll
      for (uint32_t e = 0; e < 8; ++e) {
        const uint32_t c = QuadCode<kMb>(z[8 * k + e], s.lut, P);
        w |= c << (kMb * e);
        if constexpr (kProd) z[8 * k + e] = __fsub_rn(z[8 * k + e], s.cents[c]);
      }
      packed[k] = w;
    }
    QuadStoreCodes<kMb>(rec, packed, live, q);
  }
  if constexpr (kProd) {
    const float gamma = __fsqrt_rn(QuadSumSquares(z));
    const float sg = gamma > 0.0f ? __fdiv_rn(kFxVecScale, gamma) : 0.0f;
#pragma unroll
    for (uint32_t j = 0; j < 32; ++j) z[j] = __fmul_rn(z[j], sg);
    FxQuadPlanes(s, r, q, z);
    return gamma;
  }
  return 0.0f;
}

// Encode. kHad: the rotation is the Hadamard window of 128 (prod with the fixed Gaussian QJL),
// in registers as the quad kernels compute it; otherwise the dense fixed rotation.
template <typename E, uint32_t kMb, bool kProd, bool kHad>
__global__ void __launch_bounds__(kFxThreads, 2)
    EncodeFxKernel(const __grid_constant__ TqDevParams P, const FxMatrices M,
                   const typename E::Storage* in, uint8_t* body) {
  constexpr bool kLut = kMb >= 3;
  extern __shared__ __align__(16) unsigned char fx_smem[];
  const FxSmemView s = FxCarve<kLut>(fx_smem);
  FxLoadTables<kLut>(P, s);
  const uint32_t lane = threadIdx.x % 32u, warp = threadIdx.x / 32u, q = lane & 3u;
  const uint32_t r = 8u * warp + (lane >> 2);  // this quad's row of the tile
  const uint64_t nv = P.g.Vectors();
  const uint32_t rec_bytes = P.g.vector_code_bytes, mse_bytes = P.parts[0].mse_bytes;
  uint8_t* codes = body + P.g.codes_offset;
  uint16_t* scalars = reinterpret_cast<uint16_t*>(body + P.g.scalars_offset);
  uint32_t m[16] = {};
  float neg1 = 1.0f, neg2 = 1.0f, hscale = 0.0f;
  if constexpr (kHad) {
    QuadSignMasks(P.parts[0].signs, q, m);
    neg1 = (q & 1u) ? -1.0f : 1.0f;
    neg2 = (q & 2u) ? -1.0f : 1.0f;
    hscale = P.parts[0].win_scale[0];
  }
  const uint64_t step = uint64_t{gridDim.x} * kFxTile;
  // The next tile's rows are copied in (cp.async) while this tile's matrix products run.
  FxStageRows(in, uint64_t{blockIdx.x} * kFxTile, nv, s.stage);
  for (uint64_t base = uint64_t{blockIdx.x} * kFxTile; base < nv; base += step) {
    const uint64_t v = base + r;
    const bool live = v < nv;
    uint8_t* rec = codes + v * rec_bytes;
    FxWaitRows();
    __syncthreads();
    // (1) norm, u; dense: uq planes; Hadamard: z, codes, residual planes.
    uint4 raw[4];
#pragma unroll
    for (uint32_t k = 0; k < 4; ++k) {
      raw[k] = *reinterpret_cast<const uint4*>(s.stage + r * kFxPitchIn + 16u * (4u * k + q));
    }
    float x[32];
    const float norm = QuadLoadNormalized<E>(raw, m, x);
    if constexpr (kHad) {
      QuadFwht(x, neg1, neg2);
#pragma unroll
      for (uint32_t j = 0; j < 32; ++j) x[j] = __fmul_rn(x[j], hscale);
      const float gamma = FxQuadQuantize<kMb, true>(P, s, x, rec, live, r, q);
      if (live && q == 0) {
        scalars[2 * v] = FloatToHalfSaturate(norm);
        scalars[2 * v + 1] = FloatToHalfSaturate(gamma);
      }
    } else {
#pragma unroll
      for (uint32_t j = 0; j < 32; ++j) x[j] = __fmul_rn(x[j], kFxVecScale);
      FxQuadPlanes(s, r, q, x);
      if (q == 0) s.norms[r] = norm;
    }
    __syncthreads();
    if (base + step < nv) FxStageRows(in, base + step, nv, s.stage);
    if constexpr (!kHad) {
      // (2) z_int = Rot_q uq.
      FxTileMma<true>(s.a_hi, s.a_lo, M.rot, s.C, warp, lane);
      __syncthreads();
      // (3) codes; prod: the residual's planes.
      float z[32];
      FxQuadLoadC(s, r, q, kFxOutScale, z);
      const float gamma = FxQuadQuantize<kMb, kProd>(P, s, z, rec, live, r, q);
      if (live && q == 0) {
        if constexpr (kProd) {
          scalars[2 * v] = FloatToHalfSaturate(s.norms[r]);
          scalars[2 * v + 1] = FloatToHalfSaturate(gamma);
        } else {
          scalars[v] = FloatToHalfSaturate(s.norms[r]);
        }
      }
      if constexpr (kProd) __syncthreads();
    }
    if constexpr (kProd) {
      // (4) sketch = S_q rq; sign bit i (byte i / 8 = 4k + q, bit e) is sketch_i >= 0.
      FxTileMma<true>(s.a_hi, s.a_lo, M.qjl, s.C, warp, lane);
      __syncthreads();
      uint32_t word[4];
#pragma unroll
      for (uint32_t k = 0; k < 4; ++k) {
        uint32_t b = 0;
#pragma unroll
        for (uint32_t h = 0; h < 2; ++h) {
          const int4 c = *reinterpret_cast<const int4*>(s.C + r * kFxPitchC + 32u * k + 8u * q + 4u * h);
          b |= ((c.x >= 0 ? 1u : 0u) | (c.y >= 0 ? 2u : 0u) | (c.z >= 0 ? 4u : 0u) |
                (c.w >= 0 ? 8u : 0u)) << (4u * h);
        }
        word[k] = b << (8u * q);  // byte 4k + q of the sign bytes = byte q of word k
        word[k] |= __shfl_xor_sync(kFull, word[k], 1);
        word[k] |= __shfl_xor_sync(kFull, word[k], 2);
      }
      const uint32_t mine = q == 0 ? word[0] : q == 1 ? word[1] : q == 2 ? word[2] : word[3];
      if (live) reinterpret_cast<uint32_t*>(rec + mse_bytes)[q] = mine;
    }
    __syncthreads();
  }
}

// Decode. kHad as for encode (prod only): the inverse Hadamard window in registers.
template <typename E, uint32_t kMb, bool kProd, bool kHad>
__global__ void __launch_bounds__(kFxThreads, 2)
    DecodeFxKernel(const __grid_constant__ TqDevParams P, const FxMatrices M, const uint8_t* body,
                   const TqTarget view) {
  extern __shared__ __align__(16) unsigned char fx_smem[];
  const FxSmemView s = FxCarve<false>(fx_smem);
  FxLoadTables<false>(P, s);
  const uint32_t lane = threadIdx.x % 32u, warp = threadIdx.x / 32u, q = lane & 3u;
  const uint32_t r = 8u * warp + (lane >> 2);
  const uint64_t nv = P.g.Vectors();
  const uint32_t T = P.g.shape.tokens;
  const uint32_t rec_bytes = P.g.vector_code_bytes, mse_bytes = P.parts[0].mse_bytes;
  const uint8_t* codes = body + P.g.codes_offset;
  const uint16_t* scalars = reinterpret_cast<const uint16_t*>(body + P.g.scalars_offset);
  const float qjl_scale = P.parts[0].qjl_scale;
  uint32_t m[16] = {};
  float neg1 = 1.0f, neg2 = 1.0f, hscale = 1.0f;  // dense: out = (x * 1) * norm = x * norm
  if constexpr (kHad) {
    QuadSignMasks(P.parts[0].signs, q, m);
    neg1 = (q & 1u) ? -1.0f : 1.0f;
    neg2 = (q & 2u) ? -1.0f : 1.0f;
    hscale = P.parts[0].win_scale[0];
  }
  for (uint64_t base = uint64_t{blockIdx.x} * kFxTile; base < nv; base += uint64_t{gridDim.x} * kFxTile) {
    const uint64_t v = base + r;
    const bool live = v < nv;
    const uint64_t vv = live ? v : nv - 1;  // dead rows read a real record, store nothing
    const uint8_t* rec = codes + vv * rec_bytes;
    if constexpr (kProd) {
      // (0) the +-1 sign plane (sign byte 4k + q = byte q of word k; bit e -> element
      // 32k + 8q + e); t_int = S_q^T s.
      const uint4 sw = __ldg(reinterpret_cast<const uint4*>(rec + mse_bytes));
      const uint32_t words[4] = {sw.x, sw.y, sw.z, sw.w};
#pragma unroll
      for (uint32_t k = 0; k < 4; ++k) {
        const uint32_t b = (words[k] >> (8u * q)) & 0xFFu;
        uint32_t half[2];
#pragma unroll
        for (uint32_t h = 0; h < 2; ++h) {
          const uint32_t n = b >> (4u * h);
          const uint32_t spread = (n & 1u) | ((n & 2u) << 7) | ((n & 4u) << 14) | ((n & 8u) << 21);
          half[h] = 0xFFFFFFFFu ^ (spread * 0xFEu);  // byte = bit ? 0x01 : 0xFF
        }
        *reinterpret_cast<uint2*>(s.a_hi + r * kFxPitchA + 32u * k + 8u * q) = make_uint2(half[0], half[1]);
      }
      __syncthreads();
      FxTileMma<false>(s.a_hi, nullptr, M.qjl, s.C, warp, lane);
      __syncthreads();
    }
    // (1) y = centroids (+ coef * t); dense: yq planes; Hadamard: the output.
    float y[32];
    if constexpr (kMb > 0) {
      uint32_t packed[4];
      QuadLoadCodes<kMb>(rec, q, packed);
#pragma unroll
      for (uint32_t k = 0; k < 4; ++k) {
#pragma unroll
        for (uint32_t e = 0; e < 8; ++e) y[8 * k + e] = s.cents[(packed[k] >> (kMb * e)) & ((1u << kMb) - 1u)];
      }
    } else {
#pragma unroll
      for (uint32_t j = 0; j < 32; ++j) y[j] = 0.0f;
    }
    if constexpr (kProd) {
      const float coef = __fmul_rn(qjl_scale, HalfToFloat(scalars[2 * vv + 1]));
      float t[32];
      FxQuadLoadC(s, r, q, kFxQjlOutScale, t);
#pragma unroll
      for (uint32_t j = 0; j < 32; ++j) y[j] = __fadd_rn(y[j], __fmul_rn(coef, t[j]));
    }
    const float norm = HalfToFloat(scalars[(kProd ? 2u : 1u) * vv]);
    uint32_t layer, kv, head;
    const uint32_t v32 = static_cast<uint32_t>(vv);
    P.g.shape.Decompose(v32 / T, &layer, &kv, &head);
    uint4* dst = reinterpret_cast<uint4*>(view.Row(P, layer, kv, head, v32 % T)) + q;
    if constexpr (kHad) {
      QuadFwht(y, neg1, neg2);
      QuadStoreOut<E>(dst, y, hscale, norm, m, live);
    } else {
#pragma unroll
      for (uint32_t j = 0; j < 32; ++j) y[j] = __fmul_rn(y[j], kFxVecScale);
      FxQuadPlanes(s, r, q, y);
      __syncthreads();
      // (2) x_int = Rot_q^T yq; (3) out = x * norm.
      FxTileMma<true>(s.a_hi, s.a_lo, M.rot, s.C, warp, lane);
      __syncthreads();
      float x[32];
      FxQuadLoadC(s, r, q, kFxOutScale, x);
      QuadStoreOut<E>(dst, x, hscale, norm, m, live);
    }
    __syncthreads();
  }
}

// ---- Register-fragment path: dense mse ------------------------------------------------------------
// The mse form without the shared-memory round trips: each warp takes 16 rows of the tile and
// builds its int8 A fragments directly in registers. The m16n8k32 A fragment gives thread
// (g, t) = (lane / 4, lane % 4) the elements 32 kt + 16 h + 4 t + e (kt 0..3, h 0..1, e 0..3) of
// rows g and g + 8, i.e. 8 of the CPU norm tree's 32 lanes (lane L = 8 kt + 4 h + t): its xor
// butterfly's offsets 16, 8, 4 are register pairs and 2, 1 a shuffle in the quad. The products
// leave in the accumulator layout (row g / g + 8, columns 8 ni + 2 t + {0, 1} of each 32-column
// pass), where codes are packed by quad (decode: values stored) without passing through shared
// memory; the matrix fragments come from L1 as before.

constexpr uint32_t kFxRegThreads = 128;  // 4 warps x 16 rows = one 64-row tile

// The CPU's norm tree over a row held as above (8 lane sums per thread, quad shuffles last).
__device__ __forceinline__ float FxRegSumSquares(const float x[32]) {
  float s[8];
#pragma unroll
  for (uint32_t w = 0; w < 8; ++w) {
    float a = __fmul_rn(x[4 * w], x[4 * w]);
    a = __fadd_rn(a, __fmul_rn(x[4 * w + 1], x[4 * w + 1]));
    a = __fadd_rn(a, __fmul_rn(x[4 * w + 2], x[4 * w + 2]));
    s[w] = __fadd_rn(a, __fmul_rn(x[4 * w + 3], x[4 * w + 3]));
  }
  // w = 2 kt + h: lane L = 8 kt + 4 h + t, so offset 16 = w ^ 4, 8 = w ^ 2, 4 = w ^ 1.
  float s16[8], s8[8];
#pragma unroll
  for (uint32_t w = 0; w < 8; ++w) s16[w] = __fadd_rn(s[w], s[w ^ 4]);
#pragma unroll
  for (uint32_t w = 0; w < 8; ++w) s8[w] = __fadd_rn(s16[w], s16[w ^ 2]);
  float a = __fadd_rn(s8[0], s8[1]);
  a = __fadd_rn(a, __shfl_xor_sync(kFull, a, 2));
  return __fadd_rn(a, __shfl_xor_sync(kFull, a, 1));
}

// acc = A (16 rows: this warp's planes) x B columns [32 p, 32 p + 32), combined mod 2^32.
__device__ __forceinline__ void FxRegPass(const uint32_t ahi[4][4], const uint32_t alo[4][4],
                                          const uint4* frag, uint32_t p, uint32_t lane,
                                          uint32_t out[4][4]) {
  int32_t hh[4][4] = {}, mid[4][4] = {}, ll[4][4] = {};
#pragma unroll
  for (uint32_t kt = 0; kt < 4; ++kt) {
#pragma unroll
    for (uint32_t ni = 0; ni < 4; ++ni) {
      const uint4 b = __ldg(frag + (kt * 16u + 4u * p + ni) * 32u + lane);
      FxMma(hh[ni], ahi[kt], b.x, b.y);
      FxMma(mid[ni], ahi[kt], b.z, b.w);
      FxMma(mid[ni], alo[kt], b.x, b.y);
      FxMma(ll[ni], alo[kt], b.z, b.w);
    }
  }
#pragma unroll
  for (uint32_t ni = 0; ni < 4; ++ni) {
#pragma unroll
    for (uint32_t e = 0; e < 4; ++e) {
      out[ni][e] = (static_cast<uint32_t>(hh[ni][e]) << 16) +
                   (static_cast<uint32_t>(mid[ni][e]) << 8) + static_cast<uint32_t>(ll[ni][e]);
    }
  }
}

// Row words (hi / lo, word 2 kt + h) of rows g and g + 8 -> the m16n8k32 A fragments
// {row g: kt, h 0; row g + 8: kt, h 0; row g: kt, h 1; row g + 8: kt, h 1}.
__device__ __forceinline__ void FxRegFragments(const uint32_t r0[8], const uint32_t r1[8],
                                               uint32_t a[4][4]) {
#pragma unroll
  for (uint32_t kt = 0; kt < 4; ++kt) {
    a[kt][0] = r0[2 * kt];
    a[kt][1] = r1[2 * kt];
    a[kt][2] = r0[2 * kt + 1];
    a[kt][3] = r1[2 * kt + 1];
  }
}

template <typename E, uint32_t kMb>
__global__ void __launch_bounds__(kFxRegThreads, 4)
    EncodeFxRegKernel(const __grid_constant__ TqDevParams P, const FxMatrices M,
                      const typename E::Storage* in, uint8_t* body) {
  constexpr bool kLut = kMb >= 3;
  extern __shared__ __align__(16) unsigned char fx_smem[];
  uint8_t* stage = fx_smem;  // 64 rows, pitch kFxPitchIn
  float2* lut = reinterpret_cast<float2*>(fx_smem + kFxTile * kFxPitchIn);
  if constexpr (kLut) {
    for (uint32_t i = threadIdx.x; i < kQuantLut; i += blockDim.x) lut[i] = P.parts[0].lut[i];
  }
  const uint32_t lane = threadIdx.x % 32u, warp = threadIdx.x / 32u;
  const uint32_t g = lane >> 2, t = lane & 3u;
  const uint64_t nv = P.g.Vectors();
  const uint32_t rec_bytes = P.g.vector_code_bytes;
  uint8_t* codes = body + P.g.codes_offset;
  uint16_t* scalars = reinterpret_cast<uint16_t*>(body + P.g.scalars_offset);
  const uint64_t step = uint64_t{gridDim.x} * kFxTile;
  FxStageRows(in, uint64_t{blockIdx.x} * kFxTile, nv, stage);
  for (uint64_t base = uint64_t{blockIdx.x} * kFxTile; base < nv; base += step) {
    FxWaitRows();
    __syncthreads();
    uint32_t rhi[2][8], rlo[2][8];
    float norm[2];
#pragma unroll
    for (uint32_t rr = 0; rr < 2; ++rr) {
      const uint32_t r = 16u * warp + g + 8u * rr;
      float x[32];
#pragma unroll
      for (uint32_t w = 0; w < 8; ++w) {  // elements 32 kt + 16 h + 4 t .. + 3, w = 2 kt + h
        const uint2 raw = *reinterpret_cast<const uint2*>(stage + r * kFxPitchIn + 2u * (16u * w + 4u * t));
        x[4 * w + 0] = Lo16<E>(raw.x);
        x[4 * w + 1] = Hi16<E>(raw.x);
        x[4 * w + 2] = Lo16<E>(raw.y);
        x[4 * w + 3] = Hi16<E>(raw.y);
      }
      norm[rr] = __fsqrt_rn(FxRegSumSquares(x));
      const float inv = norm[rr] > 0.0f ? __fdiv_rn(1.0f, norm[rr]) : 0.0f;
#pragma unroll
      for (uint32_t j = 0; j < 32; ++j) x[j] = __fmul_rn(__fmul_rn(x[j], inv), kFxVecScale);
      FxPlaneWords(x, rhi[rr], rlo[rr]);
    }
    __syncthreads();
    if (base + step < nv) FxStageRows(in, base + step, nv, stage);
    uint32_t ahi[4][4], alo[4][4];
    FxRegFragments(rhi[0], rhi[1], ahi);
    FxRegFragments(rlo[0], rlo[1], alo);
    const uint64_t v0 = base + 16u * warp + g, v1 = v0 + 8u;
    uint8_t* rec[2] = {codes + v0 * rec_bytes, codes + v1 * rec_bytes};
    const bool live[2] = {v0 < nv, v1 < nv};
#pragma unroll 1
    for (uint32_t p = 0; p < 4; ++p) {
      uint32_t zi[4][4];
      FxRegPass(ahi, alo, M.rot, p, lane, zi);
      // Codes of columns 32 p + 8 ni + 2 t + {0, 1} (rows g: e 0, 1; g + 8: e 2, 3); the quad's
      // 8 codes of a block of 8 columns are kMb bytes, stored by thread t == ni.
#pragma unroll
      for (uint32_t rr = 0; rr < 2; ++rr) {
        uint32_t word[4];
#pragma unroll
        for (uint32_t ni = 0; ni < 4; ++ni) {
          uint32_t f = 0;
#pragma unroll
          for (uint32_t c = 0; c < 2; ++c) {
            const float z = __fmul_rn(__int2float_rn(static_cast<int32_t>(zi[ni][2 * rr + c])), kFxOutScale);
            f |= QuadCode<kMb>(z, lut, P) << (kMb * c);
          }
          f <<= 2u * kMb * t;
          f |= __shfl_xor_sync(kFull, f, 1);
          word[ni] = f | __shfl_xor_sync(kFull, f, 2);
        }
        const uint32_t mine = t == 0 ? word[0] : t == 1 ? word[1] : t == 2 ? word[2] : word[3];
        if (live[rr]) {
          uint8_t* dst = rec[rr] + (4u * p + t) * kMb;
          if constexpr (kMb == 1) *dst = static_cast<uint8_t>(mine);
          if constexpr (kMb == 2) *reinterpret_cast<uint16_t*>(dst) = static_cast<uint16_t>(mine);
          if constexpr (kMb == 4) *reinterpret_cast<uint32_t*>(dst) = mine;
          if constexpr (kMb == 3) {
            dst[0] = static_cast<uint8_t>(mine);
            dst[1] = static_cast<uint8_t>(mine >> 8);
            dst[2] = static_cast<uint8_t>(mine >> 16);
          }
        }
      }
    }
    if (t == 0) {
      if (live[0]) scalars[v0] = FloatToHalfSaturate(norm[0]);
      if (live[1]) scalars[v1] = FloatToHalfSaturate(norm[1]);
    }
  }
}

template <typename E, uint32_t kMb>
__global__ void __launch_bounds__(kFxRegThreads, 4)
    DecodeFxRegKernel(const __grid_constant__ TqDevParams P, const FxMatrices M, const uint8_t* body,
                      const TqTarget view) {
  __shared__ float cents[16];
  if (threadIdx.x < 16) cents[threadIdx.x] = P.fast_cents[threadIdx.x];
  __syncthreads();
  const uint32_t lane = threadIdx.x % 32u, warp = threadIdx.x / 32u;
  const uint32_t g = lane >> 2, t = lane & 3u;
  const uint64_t nv = P.g.Vectors();
  const uint32_t T = P.g.shape.tokens;
  const uint32_t rec_bytes = P.g.vector_code_bytes;
  const uint8_t* codes = body + P.g.codes_offset;
  const uint16_t* scalars = reinterpret_cast<const uint16_t*>(body + P.g.scalars_offset);
  for (uint64_t base = uint64_t{blockIdx.x} * kFxTile; base < nv; base += uint64_t{gridDim.x} * kFxTile) {
    uint32_t rhi[2][8], rlo[2][8];
    uint64_t vv[2];
    bool live[2];
#pragma unroll
    for (uint32_t rr = 0; rr < 2; ++rr) {
      const uint64_t v = base + 16u * warp + g + 8u * rr;
      live[rr] = v < nv;
      vv[rr] = live[rr] ? v : nv - 1;  // dead rows read a real record, store nothing
      const uint32_t* w32 = reinterpret_cast<const uint32_t*>(codes + vv[rr] * rec_bytes);
      float y[32];
#pragma unroll
      for (uint32_t w = 0; w < 8; ++w) {  // codes of elements 16 w + 4 t .. + 3
        const uint32_t bit = kMb * (16u * w + 4u * t);
        uint32_t f = __ldg(w32 + bit / 32u) >> (bit % 32u);
        if ((bit % 32u) + 4u * kMb > 32u) f |= __ldg(w32 + bit / 32u + 1u) << (32u - bit % 32u);
#pragma unroll
        for (uint32_t e = 0; e < 4; ++e) {
          y[4 * w + e] = __fmul_rn(cents[(f >> (kMb * e)) & ((1u << kMb) - 1u)], kFxVecScale);
        }
      }
      FxPlaneWords(y, rhi[rr], rlo[rr]);
    }
    uint32_t ahi[4][4], alo[4][4];
    FxRegFragments(rhi[0], rhi[1], ahi);
    FxRegFragments(rlo[0], rlo[1], alo);
    float norm[2];
    uint32_t* row[2];
#pragma unroll
    for (uint32_t rr = 0; rr < 2; ++rr) {
      norm[rr] = HalfToFloat(scalars[vv[rr]]);
      uint32_t layer, kv, head;
      const uint32_t v32 = static_cast<uint32_t>(vv[rr]);
      P.g.shape.Decompose(v32 / T, &layer, &kv, &head);
      row[rr] = reinterpret_cast<uint32_t*>(view.Row(P, layer, kv, head, v32 % T));
    }
#pragma unroll 1
    for (uint32_t p = 0; p < 4; ++p) {
      uint32_t xi[4][4];
      FxRegPass(ahi, alo, M.rot, p, lane, xi);
#pragma unroll
      for (uint32_t rr = 0; rr < 2; ++rr) {
        if (!live[rr]) continue;
#pragma unroll
        for (uint32_t ni = 0; ni < 4; ++ni) {
          float o[2];
#pragma unroll
          for (uint32_t c = 0; c < 2; ++c) {
            const float x = __fmul_rn(__int2float_rn(static_cast<int32_t>(xi[ni][2 * rr + c])), kFxOutScale);
            o[c] = __fmul_rn(x, norm[rr]);
          }
          // Columns 32 p + 8 ni + 2 t, + 1: one 4-byte word of the row.
          const uint32_t w = isfinite(norm[rr])
                                 ? Pack2<E>(o[0], o[1])
                                 : (static_cast<uint32_t>(E::FromFloat(o[0])) |
                                    (static_cast<uint32_t>(E::FromFloat(o[1])) << 16));
          __stcs(row[rr] + 16u * p + 4u * ni + t, w);
        }
      }
    }
  }
}

// ---- Host side ------------------------------------------------------------------------------------

// B of one direction in fragment order: Bm[n][k] (n: output index, k: input index) is q[n][k]
// (encode: z = q u) or q[k][n] (`transpose`, decode: x = q^T y), q an int16 128 x 128 row-major
// matrix. Entry (kt * 16 + nt) * 32 + lane = {hi b0, hi b1, lo b0, lo b1} of lane (g, t) =
// (lane / 4, lane % 4): b0 holds k = 32 kt + 4 t + e, b1 k = 32 kt + 16 + 4 t + e (byte e),
// n = 8 nt + g (the m16n8k32 B fragment layout of the PTX ISA).
std::vector<uint4> FxFragments(const std::vector<int16_t>& q, bool transpose) {
  std::vector<uint4> out(kFxFragWords);
  for (uint32_t kt = 0; kt < 4; ++kt) {
    for (uint32_t nt = 0; nt < 16; ++nt) {
      for (uint32_t lane = 0; lane < 32; ++lane) {
        const uint32_t g = lane / 4, t = lane % 4, n = 8 * nt + g;
        uint32_t w[4] = {0, 0, 0, 0};
        for (uint32_t half = 0; half < 2; ++half) {
          for (uint32_t e = 0; e < 4; ++e) {
            const uint32_t k = 32 * kt + 16 * half + 4 * t + e;
            const int32_t v = transpose ? q[k * 128 + n] : q[n * 128 + k];
            const int32_t hi = (v + 128) >> 8, lo = v - hi * 256;
            w[half] |= (static_cast<uint32_t>(hi) & 0xFFu) << (8 * e);
            w[2 + half] |= (static_cast<uint32_t>(lo) & 0xFFu) << (8 * e);
          }
        }
        out[(kt * 16 + nt) * 32 + lane] = make_uint4(w[0], w[1], w[2], w[3]);
      }
    }
  }
  return out;
}

struct FxDevice {
  std::shared_ptr<const TqTables> host;  // keeps the key pointer alive
  uint4* buf = nullptr;
  FxMatrices enc, dec;
};

// The fragment buffers of `t` on the current device, uploaded once per (device, tables).
absl::StatusOr<FxDevice> FxDeviceTables(const std::shared_ptr<const TqTables>& t) {
  int dev = 0;
  KVTIER_RETURN_IF_ERROR(Cuda(cudaGetDevice(&dev), "cudaGetDevice"));
  static auto* cache = new std::map<std::pair<int, const TqTables*>, FxDevice>();
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache->find({dev, t.get()});
  if (it != cache->end()) return it->second;
  std::vector<uint4> all;
  for (const std::vector<int16_t>* m : {&t->rot_q, &t->qjl_q}) {
    if (m->empty()) continue;
    for (bool transpose : {false, true}) {
      std::vector<uint4> r = FxFragments(*m, transpose);
      all.insert(all.end(), r.begin(), r.end());
    }
  }
  FxDevice d;
  d.host = t;
  KVTIER_RETURN_IF_ERROR(Cuda(cudaMalloc(&d.buf, all.size() * sizeof(uint4)), "cudaMalloc"));
  KVTIER_RETURN_IF_ERROR(Cuda(
      cudaMemcpy(d.buf, all.data(), all.size() * sizeof(uint4), cudaMemcpyHostToDevice), "upload"));
  const uint4* at = d.buf;
  if (!t->rot_q.empty()) {
    d.enc.rot = at;
    d.dec.rot = at + kFxFragWords;
    at += 2 * kFxFragWords;
  }
  if (!t->qjl_q.empty()) {
    d.enc.qjl = at;
    d.dec.qjl = at + kFxFragWords;
  }
  cache->emplace(std::make_pair(dev, t.get()), d);
  return d;
}

// The tensor-core path: MHA/GQA without split, head_dim 128, fixed-point matrices: the dense
// rotation (mse, or prod with the Gaussian QJL) or the Hadamard window of 128 with the Gaussian
// QJL (prod). The caller checks dtype (2 bytes), alignment and, for 3+ mse bits on encode, the
// quantizer table.
bool FxPath(const TqPlan& plan) {
  if (!(plan.g.shape.mha && !plan.g.split && plan.g.num_parts == 1 && plan.g.shape.width == 128)) {
    return false;
  }
  const TqTables& t = *plan.tables[0];
  if (!t.fixed || (t.prod && (t.qjl_hadamard || t.qjl_q.size() != 128u * 128u))) return false;
  if (t.params.rotation == TurboQuantRotation::kDense) return t.rot_q.size() == 128u * 128u;
  return t.prod && t.windows.size() == 1 && t.windows[0].len == 128;
}

bool FxHadamard(const TqPlan& plan) {
  return plan.tables[0]->params.rotation == TurboQuantRotation::kHadamard;
}

template <auto kKernel>
unsigned FxBlocks(uint64_t vectors, uint32_t smem) {
  static const unsigned cap = [smem] {
    cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    int dev = 0, sms = 132, per_sm = 1;
    if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kKernel, kFxThreads, smem);
    return static_cast<unsigned>(std::max(1, sms * std::max(1, per_sm)));
  }();
  return static_cast<unsigned>(std::min<uint64_t>((vectors + kFxTile - 1) / kFxTile, cap));
}

template <auto kKernel>
unsigned FxRegBlocks(uint64_t vectors, uint32_t smem) {
  static const unsigned cap = [smem] {
    if (smem > 48u * 1024u) {
      cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    }
    int dev = 0, sms = 132, per_sm = 1;
    if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kKernel, kFxRegThreads, smem);
    return static_cast<unsigned>(std::max(1, sms * std::max(1, per_sm)));
  }();
  return static_cast<unsigned>(std::min<uint64_t>((vectors + kFxTile - 1) / kFxTile, cap));
}

// Dense mse: the register-fragment kernels (the default) or the shared-memory ones
// (TqSetFixedRegisterPathForTesting(false), kept so that both are measured and checked).
bool g_fx_register_path = true;

template <typename E>
void LaunchEncodeFxReg(const TqDevParams& P, const FxMatrices& m, const typename E::Storage* in,
                       uint8_t* body) {
  const uint64_t n = P.g.Vectors();
#define KVTIER_TQ_GO(B, K)                                                                       \
  K<<<FxRegBlocks<K>(n, kFxTile * kFxPitchIn + (B >= 3 ? kQuantLut * 8u : 0u)), kFxRegThreads,  \
      kFxTile * kFxPitchIn + (B >= 3 ? kQuantLut * 8u : 0u), g_tq_stream>>>(P, m, in, body)
  switch (P.parts[0].mse_bits) {
    case 1: KVTIER_TQ_GO(1, (EncodeFxRegKernel<E, 1>)); break;
    case 2: KVTIER_TQ_GO(2, (EncodeFxRegKernel<E, 2>)); break;
    case 3: KVTIER_TQ_GO(3, (EncodeFxRegKernel<E, 3>)); break;
    default: KVTIER_TQ_GO(4, (EncodeFxRegKernel<E, 4>)); break;
  }
#undef KVTIER_TQ_GO
}

template <typename E>
void LaunchDecodeFxReg(const TqDevParams& P, const FxMatrices& m, const uint8_t* body,
                       const TqTarget& view) {
  const uint64_t n = P.g.Vectors();
#define KVTIER_TQ_GO(K) K<<<FxRegBlocks<K>(n, 0), kFxRegThreads, 0, g_tq_stream>>>(P, m, body, view)
  switch (P.parts[0].mse_bits) {
    case 1: KVTIER_TQ_GO((DecodeFxRegKernel<E, 1>)); break;
    case 2: KVTIER_TQ_GO((DecodeFxRegKernel<E, 2>)); break;
    case 3: KVTIER_TQ_GO((DecodeFxRegKernel<E, 3>)); break;
    default: KVTIER_TQ_GO((DecodeFxRegKernel<E, 4>)); break;
  }
#undef KVTIER_TQ_GO
}

template <typename E, bool kProd, bool kHad>
void LaunchEncodeFxAt(const TqDevParams& P, const FxMatrices& m, const typename E::Storage* in,
                      uint8_t* body) {
  if constexpr (!kProd && !kHad) {
    if (g_fx_register_path) return LaunchEncodeFxReg<E>(P, m, in, body);
  }
  const uint64_t n = P.g.Vectors();
#define KVTIER_TQ_GO(B, K) K<<<FxBlocks<K>(n, FxSmem<(B >= 3), true>()), kFxThreads, FxSmem<(B >= 3), true>(), g_tq_stream>>>(P, m, in, body)
  switch (P.parts[0].mse_bits) {
    case 0: if constexpr (kProd) KVTIER_TQ_GO(0, (EncodeFxKernel<E, 0, kProd, kHad>)); break;
    case 1: KVTIER_TQ_GO(1, (EncodeFxKernel<E, 1, kProd, kHad>)); break;
    case 2: KVTIER_TQ_GO(2, (EncodeFxKernel<E, 2, kProd, kHad>)); break;
    case 3: KVTIER_TQ_GO(3, (EncodeFxKernel<E, 3, kProd, kHad>)); break;
    default: if constexpr (!kProd) KVTIER_TQ_GO(4, (EncodeFxKernel<E, 4, kProd, kHad>)); break;
  }
#undef KVTIER_TQ_GO
}

template <typename E, bool kProd, bool kHad>
void LaunchDecodeFxAt(const TqDevParams& P, const FxMatrices& m, const uint8_t* body,
                      const TqTarget& view) {
  if constexpr (!kProd && !kHad) {
    if (g_fx_register_path) return LaunchDecodeFxReg<E>(P, m, body, view);
  }
  const uint64_t n = P.g.Vectors();
  constexpr uint32_t smem = FxSmem<false, false>();
#define KVTIER_TQ_GO(K) K<<<FxBlocks<K>(n, smem), kFxThreads, smem, g_tq_stream>>>(P, m, body, view)
  switch (P.parts[0].mse_bits) {
    case 0: if constexpr (kProd) KVTIER_TQ_GO((DecodeFxKernel<E, 0, kProd, kHad>)); break;
    case 1: KVTIER_TQ_GO((DecodeFxKernel<E, 1, kProd, kHad>)); break;
    case 2: KVTIER_TQ_GO((DecodeFxKernel<E, 2, kProd, kHad>)); break;
    case 3: KVTIER_TQ_GO((DecodeFxKernel<E, 3, kProd, kHad>)); break;
    default: if constexpr (!kProd) KVTIER_TQ_GO((DecodeFxKernel<E, 4, kProd, kHad>)); break;
  }
#undef KVTIER_TQ_GO
}

// Runs go(prod, hadamard, tables) with the variant as std::bool_constant types, after the
// fragment buffers are on the device.
template <typename F>
absl::Status FxDispatch(const TqPlan& plan, const TqDevParams& P, F&& go) {
  KVTIER_ASSIGN_OR_RETURN(FxDevice d, FxDeviceTables(plan.tables[0]));
  if (FxHadamard(plan)) {
    go(std::true_type{}, std::true_type{}, d);
  } else if (P.g.prod) {
    go(std::true_type{}, std::false_type{}, d);
  } else {
    go(std::false_type{}, std::false_type{}, d);
  }
  return absl::OkStatus();
}
