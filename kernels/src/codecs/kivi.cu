// CUDA kernels of the kivi codec (docs/FORMAT.md, "kivi"):
//   values, encode: one thread per (token, channel group) when a group is at most 8 16-byte
//           pieces (GroupValueEncodeKernel: no shuffles, one parameter computation per group,
//           whole code words stored); otherwise one group of TPR threads per token row, each
//           thread owning 16 bytes of kRows rows, min/max shuffle-reduced over G / VEC threads
//           and codes OR-combined by shuffles (ValueEncodeKernel);
//   values, decode: TPR threads per row, each thread 16 bytes of kRows rows of one stream;
//   keys:   one thread per (key stream, token group, 16 bytes of channels, code word), min/max
//           shuffle-reduced over a group's threads, 16-byte loads and stores throughout; in fp16
//           the min/max is taken on half2 pairs and the rows stay in registers for the codes;
//   raw:    sink / tail / remainder rows copied 16 bytes at a time.
// Block and thread indices are decomposed in 32-bit arithmetic (64-bit divisions per thread
// cost more than the quantization itself). Speed history: docs/BENCHMARKS.md, "Codecs: speed".
// The arithmetic is geometry.h's (MakeKiviGroup, KiviQuantize, KiviDequantize), the same as the
// CPU reference's, so encoded bodies are bit-identical; the kernels use cuda_common.cuh's
// equivalents (DevKiviGroup, DevKiviQuantize, DevKiviDequantize), which give the same bits with
// hardware fp16 conversions and without the quarter-rate rint / int <-> float conversions.
#include "codecs/cuda_common.cuh"

namespace kvtier::kernels::internal::cuda {
namespace {

constexpr int kKeyBlock = 128;
// Key encode (fp16): keep a thread's CPW rows in registers between the min/max pass and the
// quantization pass (true) or read them again from L1 (false).
constexpr bool kKeepKeyRows = true;
// The key kernels index threads in 32 bits (a chunk would need hundreds of GiB to exceed this).
constexpr uint64_t kMaxKeyThreads = (uint64_t{1} << 31) - kKeyBlock;

// Stream of value row `vs` (the vs-th value stream) and of key stream `ks`.
__device__ __forceinline__ uint32_t ValueStream(const StreamShape& s, uint32_t vs) {
  return s.mha ? (vs / s.heads) * 2u * s.heads + s.heads + vs % s.heads : vs;
}
__device__ __forceinline__ uint32_t KeyStream(const StreamShape& s, uint32_t ks) {
  return (ks / s.heads) * 2u * s.heads + ks % s.heads;
}
__host__ __device__ __forceinline__ uint32_t NumValueStreams(const StreamShape& s) {
  return s.mha ? s.num_layers * s.heads : s.num_streams;
}

// Value rows per thread: each thread handles kRows token rows of one value stream (its 16-byte
// loads all issued before any is used), so a block covers a tile of kBlock / TPR * kRows tokens
// of a single stream and the index arithmetic is done once per block, in 32 bits.
constexpr int kRows = 4;
// Blocks per SM the value kernels are compiled for (register cap 65536 / (threads * this)).
// 1 (no cap) measured best for decode: with 4 (64 registers) and kRows = 2, decode fell from
// 0.80 to 0.73-0.76 of copy on the H100.
constexpr int kValueMinBlocks = 1;

template <int TPR>
constexpr uint32_t ValueTile() {
  return static_cast<uint32_t>(kBlock / TPR * kRows);
}

template <typename Elem, int TPR, int BITS>
__global__ void __launch_bounds__(kBlock, kValueMinBlocks)
    ValueEncodeKernel(KiviGeometry g, const char* in, uint64_t in_stride, char* body,
                      uint64_t body_stride, bool vec, uint32_t tiles) {
  constexpr int VEC = VecOf<Elem>();
  constexpr int CPW = 32 / BITS;                // codes per word
  constexpr int LANE_BITS = VEC * BITS;         // code bits one thread produces
  constexpr int LPW = 32 / LANE_BITS;           // threads per word (1, 2 or 4)
  constexpr uint32_t RPP = kBlock / TPR;        // rows per pass of the block
  using T = typename Elem::Storage;
  const uint32_t V = g.shape.width, G = g.group, T_ = g.shape.tokens;
  const int lpg = static_cast<int>(G) / VEC;    // threads per channel group (power of 2)
  const uint32_t vs = blockIdx.x / tiles;
  const uint32_t tile = blockIdx.x - vs * tiles;
  const int lane = threadIdx.x % TPR;
  const uint32_t tok = tile * ValueTile<TPR>() + threadIdx.x / TPR;  // first of kRows, RPP apart
  const uint32_t s = ValueStream(g.shape, vs);
  const uint32_t chunk = blockIdx.y;
  const T* x = reinterpret_cast<const T*>(in + chunk * in_stride) +
               (uint64_t{s} * T_ + g.t0 + tok) * V;
  char* block = body + chunk * body_stride + g.BlockOffset(s);
  const uint32_t wpt = g.ValWordsPerToken(), gpt = g.ValGroupsPerToken();
  uint32_t* codes = reinterpret_cast<uint32_t*>(block) + uint64_t{tok} * wpt;
  uint32_t* meta = reinterpret_cast<uint32_t*>(block + g.val_codes_bytes) + uint64_t{tok} * gpt;
  bool row_ok[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) row_ok[r] = tok + r * RPP < g.val_q;
  for (uint32_t base = 0; base < V; base += TPR * VEC) {
    const uint32_t i = base + lane * VEC;
    float v[kRows][VEC];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (row_ok[r] && i < V) {
        LoadElems<Elem, VEC>(x + uint64_t{r * RPP} * V + i, vec, VEC, v[r]);
      } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) v[r][k] = 0.0f;
      }
    }
    float mn[kRows], mx[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      mn[r] = v[r][0], mx[r] = v[r][0];
#pragma unroll
      for (int k = 1; k < VEC; ++k) mn[r] = fminf(mn[r], v[r][k]), mx[r] = fmaxf(mx[r], v[r][k]);
    }
    for (int off = lpg / 2; off > 0; off /= 2) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        mn[r] = fminf(mn[r], __shfl_xor_sync(0xffffffffu, mn[r], off));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], off));
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const KiviGroupParams p = DevKiviGroup(mn[r], mx[r], BITS);
      uint32_t bits = 0;
#pragma unroll
      for (int k = 0; k < VEC; ++k) bits |= DevKiviQuantize(v[r][k], p, BITS) << (k * BITS);
      if constexpr (LPW > 1) {
        bits <<= (lane % LPW) * LANE_BITS;
#pragma unroll
        for (int off = LPW / 2; off > 0; off /= 2) bits |= __shfl_xor_sync(0xffffffffu, bits, off);
      }
      if (row_ok[r] && i < V) {
        if (lane % LPW == 0) codes[uint64_t{r * RPP} * wpt + i / CPW] = bits;
        if (lane % lpg == 0) meta[uint64_t{r * RPP} * gpt + i / G] = PackMeta(p.scale_bits, p.min_bits);
      }
    }
  }
}

// Values, when a channel group is at most 8 16-byte pieces (G = 32 in fp16 / bf16 / fp32,
// G = 64 in fp16 / bf16): one thread per (token, channel group). It issues the group's PIECES
// 16-byte loads at once and keeps them in registers, reduces min/max without shuffles, computes the
// group's parameters once (not once per 16 bytes) and writes the group's G * BITS / 32 code words
// with 8- or 16-byte stores and its meta word; neighbouring threads hold neighbouring groups, so
// the stores are contiguous across the warp. A block covers kBlock / gpt tokens of one stream.
template <typename Elem, int PIECES, int BITS>
__global__ void __launch_bounds__(kBlock)
    GroupValueEncodeKernel(KiviGeometry g, const char* in, uint64_t in_stride, char* body,
                           uint64_t body_stride, bool vec_in, bool vec_out, uint32_t tiles,
                           uint32_t tile_tokens) {
  constexpr int VEC = VecOf<Elem>();
  constexpr int G = PIECES * VEC;
  constexpr int WPG = G * BITS / 32;         // code words per group (2..8)
  constexpr int PIECE_BITS = VEC * BITS;     // 8, 16 or 32: a piece never straddles a word
  using T = typename Elem::Storage;
  const uint32_t V = g.shape.width, T_ = g.shape.tokens;
  const uint32_t gpt = g.ValGroupsPerToken();
  const uint32_t vs = blockIdx.x / tiles;
  const uint32_t tile = blockIdx.x - vs * tiles;
  const uint32_t dt = threadIdx.x / gpt;
  const uint32_t gi = threadIdx.x - dt * gpt;
  const uint32_t tok = tile * tile_tokens + dt;
  if (dt >= tile_tokens || tok >= g.val_q) return;
  const uint32_t s = ValueStream(g.shape, vs);
  const uint32_t chunk = blockIdx.y;
  const T* x = reinterpret_cast<const T*>(in + chunk * in_stride) +
               (uint64_t{s} * T_ + g.t0 + tok) * V + gi * G;
  union Piece {
    uint4 u;
    T e[VEC];
  };
  Piece raw[PIECES];
  if (vec_in) {
#pragma unroll
    for (int k = 0; k < PIECES; ++k) raw[k].u = __ldg(reinterpret_cast<const uint4*>(x) + k);
  } else {
#pragma unroll
    for (int k = 0; k < PIECES; ++k) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) raw[k].e[j] = x[k * VEC + j];
    }
  }
  float mn = DevToFloat<Elem>(raw[0].e[0]), mx = mn;
#pragma unroll
  for (int k = 0; k < PIECES; ++k) {
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const float f = DevToFloat<Elem>(raw[k].e[j]);
      mn = fminf(mn, f), mx = fmaxf(mx, f);
    }
  }
  const KiviGroupParams p = DevKiviGroup(mn, mx, BITS);
  uint32_t w[WPG];
#pragma unroll
  for (int i = 0; i < WPG; ++i) w[i] = 0;
#pragma unroll
  for (int k = 0; k < PIECES; ++k) {
    uint32_t bits = 0;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      bits |= DevKiviQuantize(DevToFloat<Elem>(raw[k].e[j]), p, BITS) << (j * BITS);
    }
    w[k * PIECE_BITS / 32] |= bits << ((k * PIECE_BITS) % 32);
  }
  char* block = body + chunk * body_stride + g.BlockOffset(s);
  uint32_t* codes =
      reinterpret_cast<uint32_t*>(block) + uint64_t{tok} * g.ValWordsPerToken() + gi * WPG;
  if (vec_out) {
    if constexpr (WPG == 2) {
      *reinterpret_cast<uint2*>(codes) = make_uint2(w[0], w[1]);
    } else {
#pragma unroll
      for (int i = 0; i < WPG; i += 4) {
        *reinterpret_cast<uint4*>(codes + i) = make_uint4(w[i], w[i + 1], w[i + 2], w[i + 3]);
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < WPG; ++i) codes[i] = w[i];
  }
  reinterpret_cast<uint32_t*>(block + g.val_codes_bytes)[uint64_t{tok} * gpt + gi] =
      PackMeta(p.scale_bits, p.min_bits);
}

template <typename Elem, int TPR, int BITS>
__global__ void __launch_bounds__(kBlock, kValueMinBlocks)
    ValueDecodeKernel(KiviGeometry g, const char* body, uint64_t body_stride, TargetView target,
                      bool vec_out, uint32_t tiles) {
  constexpr int VEC = VecOf<Elem>();
  constexpr int CPW = 32 / BITS;
  constexpr uint32_t MASK = (1u << BITS) - 1u;
  constexpr uint32_t RPP = kBlock / TPR;
  using T = typename Elem::Storage;
  const uint32_t V = g.shape.width, G = g.group;
  const uint32_t vs = blockIdx.x / tiles;
  const uint32_t tile = blockIdx.x - vs * tiles;
  const int lane = threadIdx.x % TPR;
  const uint32_t tok = tile * ValueTile<TPR>() + threadIdx.x / TPR;
  if (tok >= g.val_q) return;
  const uint32_t s = ValueStream(g.shape, vs);
  const uint32_t chunk = blockIdx.y;
  const char* block = body + chunk * body_stride + g.BlockOffset(s);
  const uint32_t wpt = g.ValWordsPerToken(), gpt = g.ValGroupsPerToken();
  const uint32_t* codes = reinterpret_cast<const uint32_t*>(block) + uint64_t{tok} * wpt;
  const uint32_t* meta =
      reinterpret_cast<const uint32_t*>(block + g.val_codes_bytes) + uint64_t{tok} * gpt;
  uint32_t l, kv, h;
  g.shape.Decompose(s, &l, &kv, &h);
  bool row_ok[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) row_ok[r] = tok + r * RPP < g.val_q;
  for (uint32_t i = lane * VEC; i < V; i += TPR * VEC) {
    uint32_t word[kRows], m[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (row_ok[r]) {
        word[r] = __ldg(codes + uint64_t{r * RPP} * wpt + i / CPW) >> ((i % CPW) * BITS);
        m[r] = __ldg(meta + uint64_t{r * RPP} * gpt + i / G);
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (!row_ok[r]) continue;
      const float scale = HalfToFloat(static_cast<uint16_t>(m[r]));
      const float mn = HalfToFloat(static_cast<uint16_t>(m[r] >> 16));
      float v[VEC];
#pragma unroll
      for (int k = 0; k < VEC; ++k) v[k] = DevKiviDequantize((word[r] >> (k * BITS)) & MASK, scale, mn);
      T* out = reinterpret_cast<T*>(target.Row(l, kv, h, g.t0 + tok + r * RPP, chunk));
      StoreElems<Elem, VEC>(out + i, vec_out, VEC, v);
    }
  }
}

// Loads / stores N consecutive u32 words, 16 bytes at a time when `vec`.
template <int N>
__device__ __forceinline__ void LoadWords(const uint32_t* p, bool vec, uint32_t (&w)[N]) {
  if (vec && N % 4 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 4) {
      const uint4 u = __ldg(reinterpret_cast<const uint4*>(p + i));
      w[i] = u.x, w[i + 1] = u.y, w[i + 2] = u.z, w[i + 3] = u.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) w[i] = p[i];
  }
}
template <int N>
__device__ __forceinline__ void StoreWords(uint32_t* p, bool vec, const uint32_t (&w)[N]) {
  if (vec && N % 4 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 4) {
      *reinterpret_cast<uint4*>(p + i) = make_uint4(w[i], w[i + 1], w[i + 2], w[i + 3]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) p[i] = w[i];
  }
}

// Keys: S = G / CPW threads (adjacent lanes) per (key stream, token group, run of CH = 16 bytes
// of channels); thread `sub` owns the CPW tokens of code word `sub`, so it produces whole words.
// Pass 1: min/max over its rows, then a shuffle reduction over the S threads; pass 2 (its rows
// again, from L1): codes. Every row access is one 16-byte load, and the CH channels' code and
// meta words are contiguous (layout [g][w][c]), so they are stored 16 bytes at a time too.
template <typename Elem, int BITS>
__global__ void __launch_bounds__(kKeyBlock)
    KeyEncodeKernel(KiviGeometry g, const char* in, uint64_t in_stride, char* body,
                    uint64_t body_stride, bool vec_in, bool vec_out) {
  constexpr int CH = VecOf<Elem>();
  constexpr int CPW = 32 / BITS;
  using T = typename Elem::Storage;
  const uint32_t V = g.shape.width, G = g.group, S = g.KeyWordsPerGroup();
  const uint32_t groups = g.key_q / G, runs = V / CH;
  // 32-bit index arithmetic: the launcher checks that the thread count fits.
  const uint32_t threads = g.shape.num_layers * g.shape.heads * groups * runs * S;
  const uint32_t idx = blockIdx.x * kKeyBlock + threadIdx.x;
  // Threads past the end stay for the shuffles (groups of S lanes are all valid or all not).
  const bool valid = idx < threads;
  const uint32_t vidx = valid ? idx : 0;
  const uint32_t sub = vidx % S;  // S is a power of two
  const uint32_t q1 = vidx / S;
  const uint32_t item = q1 / runs;
  const uint32_t run = q1 - item * runs;
  const uint32_t ks = item / groups, grp = item - ks * groups;
  const uint32_t s = KeyStream(g.shape, ks);
  const uint32_t chunk = blockIdx.y;
  const uint32_t c0 = run * CH;
  const uint32_t t_first = g.t0 + grp * G + sub * CPW;
  const T* x = reinterpret_cast<const T*>(in + chunk * in_stride) +
               (uint64_t{s} * g.shape.tokens + t_first) * V + c0;
  float mn[CH], mx[CH];
  constexpr bool kKeep = kKeepKeyRows && std::is_same_v<Elem, Fp16Elem>;
  uint4 kept[kKeep ? CPW : 1];  // the rows, for the quantization pass (fp16 path only)
  if (std::is_same_v<Elem, Fp16Elem> && vec_in) {
    // fp16: min/max on half2 pairs (exact, and NaN is skipped as fminf / fmaxf skip it), one
    // instruction per two elements and no conversions until the end.
    union H {
      uint4 u;
      __half2 h[4];
    } a, lo, hi;
    a.u = __ldg(reinterpret_cast<const uint4*>(x));
    lo.u = a.u, hi.u = a.u;
    if constexpr (kKeep) kept[0] = a.u;
#pragma unroll
    for (int k = 1; k < CPW; ++k) {
      a.u = __ldg(reinterpret_cast<const uint4*>(x + static_cast<uint64_t>(k) * V));
      if constexpr (kKeep) kept[k] = a.u;
#pragma unroll
      for (int j = 0; j < 4; ++j) lo.h[j] = __hmin2(lo.h[j], a.h[j]), hi.h[j] = __hmax2(hi.h[j], a.h[j]);
    }
#pragma unroll
    for (int j = 0; j < CH / 2; ++j) {
      mn[2 * j] = __low2float(lo.h[j]), mn[2 * j + 1] = __high2float(lo.h[j]);
      mx[2 * j] = __low2float(hi.h[j]), mx[2 * j + 1] = __high2float(hi.h[j]);
    }
  } else {
    LoadElems<Elem, CH>(x, vec_in, CH, mn);
#pragma unroll
    for (int j = 0; j < CH; ++j) mx[j] = mn[j];
#pragma unroll
    for (int k = 1; k < CPW; ++k) {
      float v[CH];
      LoadElems<Elem, CH>(x + static_cast<uint64_t>(k) * V, vec_in, CH, v);
#pragma unroll
      for (int j = 0; j < CH; ++j) mn[j] = fminf(mn[j], v[j]), mx[j] = fmaxf(mx[j], v[j]);
    }
  }
  for (uint32_t off = S / 2; off > 0; off /= 2) {
#pragma unroll
    for (int j = 0; j < CH; ++j) {
      mn[j] = fminf(mn[j], __shfl_xor_sync(0xffffffffu, mn[j], off));
      mx[j] = fmaxf(mx[j], __shfl_xor_sync(0xffffffffu, mx[j], off));
    }
  }
  if (!valid) return;
  KiviGroupParams p[CH];
  uint32_t m[CH];
#pragma unroll
  for (int j = 0; j < CH; ++j) {
    p[j] = DevKiviGroup(mn[j], mx[j], BITS);
    m[j] = PackMeta(p[j].scale_bits, p[j].min_bits);
  }
  char* block = body + chunk * body_stride + g.BlockOffset(s);
  if (sub == 0) {
    StoreWords<CH>(reinterpret_cast<uint32_t*>(block + g.key_codes_bytes) + uint64_t{grp} * V + c0,
                   vec_out, m);
  }
  uint32_t word[CH];
#pragma unroll
  for (int j = 0; j < CH; ++j) word[j] = 0;
#pragma unroll
  for (int k = 0; k < CPW; ++k) {
    float v[CH];
    if (kKeep && vec_in) {
      union {
        uint4 u;
        typename Elem::Storage e[CH];
      } r;
      r.u = kept[kKeep ? k : 0];
#pragma unroll
      for (int j = 0; j < CH; ++j) v[j] = DevToFloat<Elem>(r.e[j]);
    } else {
      LoadElems<Elem, CH>(x + static_cast<uint64_t>(k) * V, vec_in, CH, v);
    }
#pragma unroll
    for (int j = 0; j < CH; ++j) word[j] |= DevKiviQuantize(v[j], p[j], BITS) << (k * BITS);
  }
  StoreWords<CH>(reinterpret_cast<uint32_t*>(block) + (uint64_t{grp} * S + sub) * V + c0, vec_out,
                 word);
}

// Keys: one thread per (key stream, token group, run of CH channels, code word): it reads the
// run's meta and its word per channel and writes CPW rows of CH channels (16-byte stores).
template <typename Elem, int BITS>
__global__ void __launch_bounds__(kKeyBlock)
    KeyDecodeKernel(KiviGeometry g, const char* body, uint64_t body_stride, TargetView target,
                    bool vec_in) {
  constexpr int CH = VecOf<Elem>();
  constexpr int CPW = 32 / BITS;
  constexpr uint32_t MASK = (1u << BITS) - 1u;
  const uint32_t V = g.shape.width, G = g.group, S = g.KeyWordsPerGroup();
  const uint32_t groups = g.key_q / G, runs = V / CH;
  const uint32_t threads = g.shape.num_layers * g.shape.heads * groups * runs * S;
  const uint32_t idx = blockIdx.x * kKeyBlock + threadIdx.x;
  if (idx >= threads) return;
  const uint32_t sub = idx % S;
  const uint32_t q1 = idx / S;
  const uint32_t item = q1 / runs;
  const uint32_t run = q1 - item * runs;
  const uint32_t ks = item / groups, grp = item - ks * groups;
  const uint32_t s = KeyStream(g.shape, ks);
  const uint32_t chunk = blockIdx.y;
  const uint32_t c0 = run * CH;
  const char* block = body + chunk * body_stride + g.BlockOffset(s);
  uint32_t m[CH], word[CH];
  LoadWords<CH>(reinterpret_cast<const uint32_t*>(block + g.key_codes_bytes) + uint64_t{grp} * V + c0,
                vec_in, m);
  LoadWords<CH>(reinterpret_cast<const uint32_t*>(block) + (uint64_t{grp} * S + sub) * V + c0,
                vec_in, word);
  float scale[CH], mn[CH];
#pragma unroll
  for (int j = 0; j < CH; ++j) {
    scale[j] = HalfToFloat(static_cast<uint16_t>(m[j]));
    mn[j] = HalfToFloat(static_cast<uint16_t>(m[j] >> 16));
  }
  uint32_t l, kv, h;
  g.shape.Decompose(s, &l, &kv, &h);
  using T = typename Elem::Storage;
  const uint32_t t_first = g.t0 + grp * G + sub * CPW;
#pragma unroll 4
  for (int k = 0; k < CPW; ++k) {
    float v[CH];
#pragma unroll
    for (int j = 0; j < CH; ++j) v[j] = DevKiviDequantize((word[j] >> (k * BITS)) & MASK, scale[j], mn[j]);
    T* out = reinterpret_cast<T*>(target.Row(l, kv, h, t_first + k, chunk)) + c0;
    StoreElems<Elem, CH>(out, target.align16, CH, v);
  }
}

// Raw rows: for each stream, tokens outside its quantized range, in token order. Row index ->
// (stream, raw row r): MHA layers hold H key streams of raw_k rows then H value streams of raw_v.
template <bool kEncode>
__global__ void __launch_bounds__(kBlock)
    RawRowsKernel(KiviGeometry g, const char* in, uint64_t in_stride, char* body,
                  uint64_t body_stride, TargetView target, int lanes) {
  const StreamShape& sh = g.shape;
  const uint32_t T_ = sh.tokens;
  const uint64_t raw_k = sh.mha ? T_ - g.key_q : 0, raw_v = T_ - g.val_q;
  const uint64_t per_layer = sh.mha ? uint64_t{sh.heads} * (raw_k + raw_v) : raw_v;
  const uint64_t rows = per_layer * sh.num_layers;
  const uint64_t row = (uint64_t{blockIdx.x} * kBlock + threadIdx.x) / lanes;
  const int lane = threadIdx.x % lanes;
  if (row >= rows) return;
  const uint32_t layer = static_cast<uint32_t>(row / per_layer);
  uint64_t rem = row % per_layer;
  uint32_t s, r;
  bool key;
  if (!sh.mha) {
    s = layer, r = static_cast<uint32_t>(rem), key = false;
  } else if (rem < sh.heads * raw_k) {
    key = true;
    s = layer * 2u * sh.heads + static_cast<uint32_t>(rem / raw_k);
    r = static_cast<uint32_t>(rem % raw_k);
  } else {
    rem -= sh.heads * raw_k;
    key = false;
    s = layer * 2u * sh.heads + sh.heads + static_cast<uint32_t>(rem / raw_v);
    r = static_cast<uint32_t>(rem % raw_v);
  }
  const uint32_t t = g.RawToken(key, r);
  const uint64_t row_bytes = uint64_t{sh.width} * sh.elem_size;
  const uint32_t chunk = blockIdx.y;
  char* raw = body + chunk * body_stride + g.BlockOffset(s) + g.CodesBytes(key) + g.MetaBytes(key) +
              r * row_bytes;
  if constexpr (kEncode) {
    CopyRow(raw, in + chunk * in_stride + (uint64_t{s} * T_ + t) * row_bytes, row_bytes, lane,
            lanes);
  } else {
    uint32_t l, kv, h;
    sh.Decompose(s, &l, &kv, &h);
    CopyRow(target.Row(l, kv, h, t, chunk), raw, row_bytes, lane, lanes);
  }
}

uint64_t RawRows(const KiviGeometry& g) {
  const StreamShape& sh = g.shape;
  const uint64_t raw_k = sh.mha ? sh.tokens - g.key_q : 0, raw_v = sh.tokens - g.val_q;
  return (sh.mha ? uint64_t{sh.heads} * (raw_k + raw_v) : raw_v) * sh.num_layers;
}

template <typename F>
void WithTpr(int tpr, F&& f) {
  if (tpr == 8) f(std::integral_constant<int, 8>{});
  else if (tpr == 16) f(std::integral_constant<int, 16>{});
  else f(std::integral_constant<int, 32>{});
}

}  // namespace

int LaunchKiviEncode(uint8_t dtype, const KiviGeometry& g, const void* in, uint64_t in_stride,
                     void* body, uint64_t body_stride, uint32_t num_chunks, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const char* src = static_cast<const char*>(in);
  char* dst = static_cast<char*>(body);
  bool too_big = false;
  const bool ok = DispatchElem(dtype, [&](auto e) {
    using Elem = decltype(e);
    constexpr int VEC = VecOf<Elem>();
    DispatchKiviBits(g.bits, [&](auto b) {
      constexpr int BITS = decltype(b)::value;
      const uint64_t vrows = uint64_t{NumValueStreams(g.shape)} * g.val_q;
      if (vrows > 0) {
        const bool vec = Aligned16(in, in_stride);
        const uint32_t pieces = g.group / VEC, gpt = g.ValGroupsPerToken();
        if ((pieces == 4 || pieces == 8) && gpt <= static_cast<uint32_t>(kBlock)) {
          // One thread per (token, channel group).
          const uint32_t tile_tokens = kBlock / gpt;
          const uint32_t tiles = (g.val_q + tile_tokens - 1) / tile_tokens;
          dim3 grid(NumValueStreams(g.shape) * tiles, num_chunks);
          const bool vec_out = Aligned16(body, body_stride);
          auto launch = [&](auto pc) {
            GroupValueEncodeKernel<Elem, decltype(pc)::value, BITS><<<grid, kBlock, 0, st>>>(
                g, src, in_stride, dst, body_stride, vec, vec_out, tiles, tile_tokens);
          };
          if (pieces == 4) launch(std::integral_constant<int, 4>{});
          else launch(std::integral_constant<int, 8>{});
        } else {
          const int tpr = ThreadsPerRow(g.shape.width / VEC);
          WithTpr(tpr, [&](auto t) {
            constexpr int TPR = decltype(t)::value;
            const uint32_t tiles = (g.val_q + ValueTile<TPR>() - 1) / ValueTile<TPR>();
            dim3 grid(NumValueStreams(g.shape) * tiles, num_chunks);
            ValueEncodeKernel<Elem, TPR, BITS>
                <<<grid, kBlock, 0, st>>>(g, src, in_stride, dst, body_stride, vec, tiles);
          });
        }
      }
      if (g.shape.mha && g.key_q > 0) {
        const uint64_t items = uint64_t{g.shape.num_layers} * g.shape.heads *
                               (g.key_q / g.group) * (g.shape.width / VEC) * g.KeyWordsPerGroup();
        if (items > kMaxKeyThreads) {
          too_big = true;
          return;
        }
        dim3 grid(GridFor(items, kKeyBlock), num_chunks);
        KeyEncodeKernel<Elem, BITS><<<grid, kKeyBlock, 0, st>>>(
            g, src, in_stride, dst, body_stride, Aligned16(in, in_stride),
            Aligned16(body, body_stride));
      }
    });
  });
  if (!ok || too_big) return kUnsupported;
  if (const uint64_t raw = RawRows(g); raw > 0) {
    const int lanes = ThreadsPerRow((g.shape.width * g.shape.elem_size + 15) / 16);
    dim3 grid(GridFor(raw * lanes, kBlock), num_chunks);
    RawRowsKernel<true><<<grid, kBlock, 0, st>>>(g, src, in_stride, dst, body_stride,
                                                 TargetView{}, lanes);
  }
  return cudaGetLastError();
}

int LaunchKiviDecode(uint8_t dtype, const KiviGeometry& g, const void* body,
                     uint64_t body_stride, const TargetView& target, uint32_t num_chunks,
                     void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const char* src = static_cast<const char*>(body);
  bool too_big = false;
  const bool ok = DispatchElem(dtype, [&](auto e) {
    using Elem = decltype(e);
    constexpr int VEC = VecOf<Elem>();
    DispatchKiviBits(g.bits, [&](auto b) {
      constexpr int BITS = decltype(b)::value;
      const uint64_t vrows = uint64_t{NumValueStreams(g.shape)} * g.val_q;
      if (vrows > 0) {
        const int tpr = ThreadsPerRow(g.shape.width / VEC);
        WithTpr(tpr, [&](auto t) {
          constexpr int TPR = decltype(t)::value;
          const uint32_t tiles = (g.val_q + ValueTile<TPR>() - 1) / ValueTile<TPR>();
          dim3 grid(NumValueStreams(g.shape) * tiles, num_chunks);
          ValueDecodeKernel<Elem, TPR, BITS>
              <<<grid, kBlock, 0, st>>>(g, src, body_stride, target, target.align16, tiles);
        });
      }
      if (g.shape.mha && g.key_q > 0) {
        const uint64_t items = uint64_t{g.shape.num_layers} * g.shape.heads *
                               (g.key_q / g.group) * (g.shape.width / VEC) * g.KeyWordsPerGroup();
        if (items > kMaxKeyThreads) {
          too_big = true;
          return;
        }
        dim3 grid(GridFor(items, kKeyBlock), num_chunks);
        KeyDecodeKernel<Elem, BITS><<<grid, kKeyBlock, 0, st>>>(g, src, body_stride, target,
                                                                Aligned16(body, body_stride));
      }
    });
  });
  if (!ok || too_big) return kUnsupported;
  if (const uint64_t raw = RawRows(g); raw > 0) {
    const int lanes = ThreadsPerRow((g.shape.width * g.shape.elem_size + 15) / 16);
    dim3 grid(GridFor(raw * lanes, kBlock), num_chunks);
    RawRowsKernel<false><<<grid, kBlock, 0, st>>>(g, nullptr, 0, const_cast<char*>(src),
                                                  body_stride, target, lanes);
  }
  return cudaGetLastError();
}

}  // namespace kvtier::kernels::internal::cuda
