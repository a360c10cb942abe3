// CUDA kernels of the kivi codec (docs/FORMAT.md, "kivi"):
//   values: one group of TPR threads per quantized token row; each thread owns 16 bytes of the
//           row; a channel group's min/max is a shuffle reduction over G / VEC threads, and the
//           codes of neighbouring threads are OR-combined by shuffles into whole u32 words;
//   keys:   one thread per (key stream, token group, 16 bytes of channels, code word), min/max
//           shuffle-reduced over a group's threads, 16-byte loads and stores throughout;
//   raw:    sink / tail / remainder rows copied 16 bytes at a time.
// The arithmetic is geometry.h's (MakeKiviGroup, KiviQuantize, KiviDequantize), the same as the
// CPU reference's, so encoded bodies are bit-identical.
#include "codecs/cuda_common.cuh"

namespace kvtier::kernels::internal::cuda {
namespace {

constexpr int kKeyBlock = 128;

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

template <typename Elem, int TPR, int BITS>
__global__ void __launch_bounds__(kBlock)
    ValueEncodeKernel(KiviGeometry g, const char* in, uint64_t in_stride, char* body,
                      uint64_t body_stride, bool vec) {
  constexpr int VEC = VecOf<Elem>();
  constexpr int CPW = 32 / BITS;                // codes per word
  constexpr int LANE_BITS = VEC * BITS;         // code bits one thread produces
  constexpr int LPW = 32 / LANE_BITS;           // threads per word (1, 2 or 4)
  using T = typename Elem::Storage;
  const uint32_t V = g.shape.width, G = g.group, T_ = g.shape.tokens;
  const int lpg = static_cast<int>(G) / VEC;    // threads per channel group (power of 2)
  const uint64_t rows = uint64_t{NumValueStreams(g.shape)} * g.val_q;
  const uint64_t row = (uint64_t{blockIdx.x} * kBlock + threadIdx.x) / TPR;
  const int lane = threadIdx.x % TPR;
  const bool valid = row < rows;
  const uint32_t vs = valid ? static_cast<uint32_t>(row / g.val_q) : 0;
  const uint32_t i_tok = valid ? static_cast<uint32_t>(row % g.val_q) : 0;
  const uint32_t s = ValueStream(g.shape, vs);
  const uint32_t chunk = blockIdx.y;
  const T* x = reinterpret_cast<const T*>(in + chunk * in_stride) +
               (uint64_t{s} * T_ + g.t0 + i_tok) * V;
  char* block = body + chunk * body_stride + g.BlockOffset(s);
  uint32_t* codes = reinterpret_cast<uint32_t*>(block) + uint64_t{i_tok} * g.ValWordsPerToken();
  uint32_t* meta = reinterpret_cast<uint32_t*>(block + g.val_codes_bytes) +
                   uint64_t{i_tok} * g.ValGroupsPerToken();
  for (uint32_t base = 0; base < V; base += TPR * VEC) {
    const uint32_t i = base + lane * VEC;
    const bool active = valid && i < V;
    float v[VEC];
    if (active) {
      LoadElems<Elem, VEC>(x + i, vec, VEC, v);
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k) v[k] = 0.0f;
    }
    float mn = v[0], mx = v[0];
#pragma unroll
    for (int k = 1; k < VEC; ++k) mn = fminf(mn, v[k]), mx = fmaxf(mx, v[k]);
    for (int off = lpg / 2; off > 0; off /= 2) {
      mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, off));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    }
    const KiviGroupParams p = MakeKiviGroup(mn, mx, BITS);
    uint32_t bits = 0;
#pragma unroll
    for (int k = 0; k < VEC; ++k) bits |= KiviQuantize(v[k], p, BITS) << (k * BITS);
    if constexpr (LPW > 1) {
      bits <<= (lane % LPW) * LANE_BITS;
#pragma unroll
      for (int off = LPW / 2; off > 0; off /= 2) bits |= __shfl_xor_sync(0xffffffffu, bits, off);
    }
    if (active) {
      if (lane % LPW == 0) codes[i / CPW] = bits;
      if (lane % lpg == 0) meta[i / G] = PackMeta(p.scale_bits, p.min_bits);
    }
  }
}

template <typename Elem, int TPR, int BITS>
__global__ void __launch_bounds__(kBlock)
    ValueDecodeKernel(KiviGeometry g, const char* body, uint64_t body_stride, TargetView target,
                      bool vec_out) {
  constexpr int VEC = VecOf<Elem>();
  constexpr int CPW = 32 / BITS;
  constexpr uint32_t MASK = (1u << BITS) - 1u;
  using T = typename Elem::Storage;
  const uint32_t V = g.shape.width, G = g.group;
  const uint64_t rows = uint64_t{NumValueStreams(g.shape)} * g.val_q;
  const uint64_t row = (uint64_t{blockIdx.x} * kBlock + threadIdx.x) / TPR;
  const int lane = threadIdx.x % TPR;
  if (row >= rows) return;
  const uint32_t vs = static_cast<uint32_t>(row / g.val_q);
  const uint32_t i_tok = static_cast<uint32_t>(row % g.val_q);
  const uint32_t s = ValueStream(g.shape, vs);
  const uint32_t chunk = blockIdx.y;
  const char* block = body + chunk * body_stride + g.BlockOffset(s);
  const uint32_t* codes =
      reinterpret_cast<const uint32_t*>(block) + uint64_t{i_tok} * g.ValWordsPerToken();
  const uint32_t* meta = reinterpret_cast<const uint32_t*>(block + g.val_codes_bytes) +
                         uint64_t{i_tok} * g.ValGroupsPerToken();
  uint32_t l, kv, h;
  g.shape.Decompose(s, &l, &kv, &h);
  T* out = reinterpret_cast<T*>(target.Row(l, kv, h, g.t0 + i_tok, chunk));
  for (uint32_t i = lane * VEC; i < V; i += TPR * VEC) {
    const uint32_t word = __ldg(codes + i / CPW) >> ((i % CPW) * BITS);
    const uint32_t m = __ldg(meta + i / G);
    const float scale = HalfToFloat(static_cast<uint16_t>(m));
    const float mn = HalfToFloat(static_cast<uint16_t>(m >> 16));
    float v[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) v[k] = KiviDequantize((word >> (k * BITS)) & MASK, scale, mn);
    StoreElems<Elem, VEC>(out + i, vec_out, VEC, v);
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
  const uint64_t threads = uint64_t{g.shape.num_layers} * g.shape.heads * groups * runs * S;
  const uint64_t idx = uint64_t{blockIdx.x} * kKeyBlock + threadIdx.x;
  // Threads past the end stay for the shuffles (groups of S lanes are all valid or all not).
  const bool valid = idx < threads;
  const uint64_t vidx = valid ? idx : 0;
  const uint32_t sub = static_cast<uint32_t>(vidx % S);
  const uint32_t run = static_cast<uint32_t>((vidx / S) % runs);
  const uint64_t item = vidx / S / runs;
  const uint32_t ks = static_cast<uint32_t>(item / groups), grp = static_cast<uint32_t>(item % groups);
  const uint32_t s = KeyStream(g.shape, ks);
  const uint32_t chunk = blockIdx.y;
  const uint32_t c0 = run * CH;
  const uint32_t t_first = g.t0 + grp * G + sub * CPW;
  const T* x = reinterpret_cast<const T*>(in + chunk * in_stride) +
               (uint64_t{s} * g.shape.tokens + t_first) * V + c0;
  float mn[CH], mx[CH];
  LoadElems<Elem, CH>(x, vec_in, CH, mn);
#pragma unroll
  for (int j = 0; j < CH; ++j) mx[j] = mn[j];
#pragma unroll
  for (int k = 1; k < CPW; ++k) {
    float v[CH];
    LoadElems<Elem, CH>(x + uint64_t{k} * V, vec_in, CH, v);
#pragma unroll
    for (int j = 0; j < CH; ++j) mn[j] = fminf(mn[j], v[j]), mx[j] = fmaxf(mx[j], v[j]);
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
    p[j] = MakeKiviGroup(mn[j], mx[j], BITS);
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
    LoadElems<Elem, CH>(x + uint64_t{k} * V, vec_in, CH, v);
#pragma unroll
    for (int j = 0; j < CH; ++j) word[j] |= KiviQuantize(v[j], p[j], BITS) << (k * BITS);
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
  const uint64_t threads = uint64_t{g.shape.num_layers} * g.shape.heads * groups * runs * S;
  const uint64_t idx = uint64_t{blockIdx.x} * kKeyBlock + threadIdx.x;
  if (idx >= threads) return;
  const uint32_t sub = static_cast<uint32_t>(idx % S);
  const uint32_t run = static_cast<uint32_t>((idx / S) % runs);
  const uint64_t item = idx / S / runs;
  const uint32_t ks = static_cast<uint32_t>(item / groups), grp = static_cast<uint32_t>(item % groups);
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
    for (int j = 0; j < CH; ++j) v[j] = KiviDequantize((word[j] >> (k * BITS)) & MASK, scale[j], mn[j]);
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
  const bool ok = DispatchElem(dtype, [&](auto e) {
    using Elem = decltype(e);
    constexpr int VEC = VecOf<Elem>();
    DispatchKiviBits(g.bits, [&](auto b) {
      constexpr int BITS = decltype(b)::value;
      const uint64_t vrows = uint64_t{NumValueStreams(g.shape)} * g.val_q;
      if (vrows > 0) {
        const int tpr = ThreadsPerRow(g.shape.width / VEC);
        const bool vec = Aligned16(in, in_stride);
        dim3 grid(GridFor(vrows * tpr, kBlock), num_chunks);
        WithTpr(tpr, [&](auto t) {
          ValueEncodeKernel<Elem, decltype(t)::value, BITS>
              <<<grid, kBlock, 0, st>>>(g, src, in_stride, dst, body_stride, vec);
        });
      }
      if (g.shape.mha && g.key_q > 0) {
        const uint64_t items = uint64_t{g.shape.num_layers} * g.shape.heads *
                               (g.key_q / g.group) * (g.shape.width / VEC) * g.KeyWordsPerGroup();
        dim3 grid(GridFor(items, kKeyBlock), num_chunks);
        KeyEncodeKernel<Elem, BITS><<<grid, kKeyBlock, 0, st>>>(
            g, src, in_stride, dst, body_stride, Aligned16(in, in_stride),
            Aligned16(body, body_stride));
      }
    });
  });
  if (!ok) return kUnsupported;
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
  const bool ok = DispatchElem(dtype, [&](auto e) {
    using Elem = decltype(e);
    constexpr int VEC = VecOf<Elem>();
    DispatchKiviBits(g.bits, [&](auto b) {
      constexpr int BITS = decltype(b)::value;
      const uint64_t vrows = uint64_t{NumValueStreams(g.shape)} * g.val_q;
      if (vrows > 0) {
        const int tpr = ThreadsPerRow(g.shape.width / VEC);
        dim3 grid(GridFor(vrows * tpr, kBlock), num_chunks);
        WithTpr(tpr, [&](auto t) {
          ValueDecodeKernel<Elem, decltype(t)::value, BITS>
              <<<grid, kBlock, 0, st>>>(g, src, body_stride, target, target.align16);
        });
      }
      if (g.shape.mha && g.key_q > 0) {
        const uint64_t items = uint64_t{g.shape.num_layers} * g.shape.heads *
                               (g.key_q / g.group) * (g.shape.width / VEC) * g.KeyWordsPerGroup();
        dim3 grid(GridFor(items, kKeyBlock), num_chunks);
        KeyDecodeKernel<Elem, BITS><<<grid, kKeyBlock, 0, st>>>(g, src, body_stride, target,
                                                                Aligned16(body, body_stride));
      }
    });
  });
  if (!ok) return kUnsupported;
  if (const uint64_t raw = RawRows(g); raw > 0) {
    const int lanes = ThreadsPerRow((g.shape.width * g.shape.elem_size + 15) / 16);
    dim3 grid(GridFor(raw * lanes, kBlock), num_chunks);
    RawRowsKernel<false><<<grid, kBlock, 0, st>>>(g, nullptr, 0, const_cast<char*>(src),
                                                  body_stride, target, lanes);
  }
  return cudaGetLastError();
}

}  // namespace kvtier::kernels::internal::cuda
