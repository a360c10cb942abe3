// Body geometry of the raw, fp8 and kivi codecs (docs/FORMAT.md), shared by the CPU reference and
// the CUDA kernels so that both read and write the same offsets. Not a public header.
//
// A chunk is viewed as S "streams", each a T x V row-major matrix (T tokens, V = vector width):
//   MHA/GQA: S = layers * 2 * kv_heads, stream s = (layer, K|V, head) in canonical order, V = head_dim
//   MLA:     S = layers, stream s = layer, V = latent_dim + rope_dim (all streams are "value-like")
// Thread-safe (value types).
#ifndef KVTIER_KERNELS_SRC_CODECS_GEOMETRY_H_
#define KVTIER_KERNELS_SRC_CODECS_GEOMETRY_H_

#include <cstdint>

#include "codecs/numeric.h"

namespace kvtier::kernels::internal {

KVTIER_HD uint64_t Pad16(uint64_t n) { return (n + 15u) & ~uint64_t{15}; }

struct StreamShape {
  uint32_t num_streams = 0;
  uint32_t num_layers = 0;
  uint32_t heads = 1;   // kv heads (MHA) or 1 (MLA)
  bool mha = true;
  uint32_t tokens = 0;  // T
  uint32_t width = 0;   // V
  uint32_t elem_size = 2;

  // (layer, kv, head) of stream s.
  KVTIER_HD void Decompose(uint32_t s, uint32_t* layer, uint32_t* kv, uint32_t* head) const {
    if (mha) {
      *layer = s / (2u * heads);
      *kv = (s / heads) % 2u;
      *head = s % heads;
    } else {
      *layer = s;
      *kv = 0;
      *head = 0;
    }
  }
  KVTIER_HD bool IsKey(uint32_t s) const { return mha && ((s / heads) % 2u) == 0; }
  KVTIER_HD uint64_t Rows() const { return uint64_t{num_streams} * tokens; }
};

// fp8 body: [fp32 scale per row (S*T), zero-padded to 16 bytes][one E4M3 byte per element].
struct Fp8Geometry {
  uint64_t scales_offset = 0;
  uint64_t codes_offset = 0;
  uint64_t body_bytes = 0;

  KVTIER_HD static Fp8Geometry Make(const StreamShape& s) {
    Fp8Geometry g;
    g.scales_offset = 0;
    g.codes_offset = Pad16(s.Rows() * 4u);
    g.body_bytes = g.codes_offset + s.Rows() * s.width;
    return g;
  }
};

// kivi body: one block per stream in stream order; key streams and value streams each have a
// fixed block size. Inside a block, three sections, each zero-padded to 16 bytes:
//   codes (u32 words), meta (u32 = fp16 scale | fp16 min << 16), raw rows (input dtype).
// Key block:   codes [group g][word w][channel c], meta [group g][channel c]
// Value block: codes [token t][word w],            meta [token t][channel group]
// Tokens [t0, t0 + key_q) of key streams and [t0, t0 + val_q) of value streams are quantized;
// the other tokens are raw rows, in token order.
struct KiviGeometry {
  StreamShape shape;
  uint32_t bits = 2;
  uint32_t group = 32;
  uint32_t t0 = 0;     // first quantized token (after sink tokens)
  uint32_t key_q = 0;  // quantized key tokens (a multiple of group)
  uint32_t val_q = 0;  // quantized value tokens
  uint64_t key_codes_bytes = 0, key_meta_bytes = 0, key_raw_bytes = 0, key_block = 0;
  uint64_t val_codes_bytes = 0, val_meta_bytes = 0, val_raw_bytes = 0, val_block = 0;
  uint64_t body_bytes = 0;

  KVTIER_HD uint32_t CodesPerWord() const { return 32u / bits; }
  KVTIER_HD uint32_t KeyWordsPerGroup() const { return group * bits / 32u; }   // per channel
  KVTIER_HD uint32_t ValWordsPerToken() const { return shape.width * bits / 32u; }
  KVTIER_HD uint32_t ValGroupsPerToken() const { return shape.width / group; }

  // first_position, ends_sequence, sink and tail as in docs/FORMAT.md ("kivi").
  KVTIER_HD static KiviGeometry Make(const StreamShape& s, uint32_t bits, uint32_t group,
                                     uint64_t first_position, bool ends_sequence, uint32_t sink,
                                     uint32_t tail) {
    KiviGeometry g;
    g.shape = s;
    g.bits = bits;
    g.group = group;
    const uint32_t T = s.tokens;
    uint32_t t0 = 0;
    if (first_position < sink) {
      const uint64_t left = sink - first_position;
      t0 = left < T ? static_cast<uint32_t>(left) : T;
    }
    uint32_t tend = T;
    if (ends_sequence) tend = tail < T ? T - tail : 0;
    if (tend < t0) tend = t0;
    g.t0 = t0;
    g.val_q = tend - t0;
    g.key_q = s.mha ? (g.val_q / group) * group : 0;
    const uint64_t V = s.width;
    const uint64_t es = s.elem_size;
    if (s.mha) {
      g.key_codes_bytes = Pad16(uint64_t{g.key_q / group} * g.KeyWordsPerGroup() * V * 4u);
      g.key_meta_bytes = Pad16(uint64_t{g.key_q / group} * V * 4u);
      g.key_raw_bytes = Pad16(uint64_t{T - g.key_q} * V * es);
      g.key_block = g.key_codes_bytes + g.key_meta_bytes + g.key_raw_bytes;
    }
    g.val_codes_bytes = Pad16(uint64_t{g.val_q} * g.ValWordsPerToken() * 4u);
    g.val_meta_bytes = Pad16(uint64_t{g.val_q} * g.ValGroupsPerToken() * 4u);
    g.val_raw_bytes = Pad16(uint64_t{T - g.val_q} * V * es);
    g.val_block = g.val_codes_bytes + g.val_meta_bytes + g.val_raw_bytes;
    if (s.mha) {
      g.body_bytes = uint64_t{s.num_layers} * s.heads * (g.key_block + g.val_block);
    } else {
      g.body_bytes = uint64_t{s.num_streams} * g.val_block;
    }
    return g;
  }

  KVTIER_HD uint64_t BlockOffset(uint32_t stream) const {
    if (!shape.mha) return uint64_t{stream} * val_block;
    const uint32_t layer = stream / (2u * shape.heads);
    const uint32_t kv = (stream / shape.heads) % 2u;
    const uint32_t head = stream % shape.heads;
    const uint64_t layer_bytes = uint64_t{shape.heads} * (key_block + val_block);
    return layer * layer_bytes +
           (kv == 0 ? uint64_t{head} * key_block
                    : uint64_t{shape.heads} * key_block + uint64_t{head} * val_block);
  }
  // Quantized token count of a stream, and the token of raw row r.
  KVTIER_HD uint32_t QuantizedTokens(bool key) const { return key ? key_q : val_q; }
  KVTIER_HD uint32_t RawToken(bool key, uint32_t r) const {
    return r < t0 ? r : r + QuantizedTokens(key);
  }
  KVTIER_HD uint64_t CodesBytes(bool key) const { return key ? key_codes_bytes : val_codes_bytes; }
  KVTIER_HD uint64_t MetaBytes(bool key) const { return key ? key_meta_bytes : val_meta_bytes; }
};

// Packs scale and min (fp16 bit patterns) into a kivi meta word.
KVTIER_HD uint32_t PackMeta(uint16_t scale, uint16_t mn) {
  return static_cast<uint32_t>(scale) | (static_cast<uint32_t>(mn) << 16);
}

// kivi group parameters from a group's float min and max: scale and min as stored (fp16), and
// the values the encoder and decoder compute with. Identical on host and device.
struct KiviGroupParams {
  uint16_t scale_bits;
  uint16_t min_bits;
  float scale;
  float mn;
  float inv;  // 1 / scale (fp32, correctly rounded); 0 when scale is 0
};

KVTIER_HD KiviGroupParams MakeKiviGroup(float mn, float mx, uint32_t bits) {
  // +0.0f canonicalizes -0 so the reduction order (which picks among equal zeros) cannot matter.
  mn = mn + 0.0f;
  mx = mx + 0.0f;
  const float levels = static_cast<float>((1u << bits) - 1u);
#if defined(__CUDA_ARCH__)
  const float scale = __fdiv_rn(__fsub_rn(mx, mn), levels);
#else
  const float scale = (mx - mn) / levels;
#endif
  KiviGroupParams p;
  p.scale_bits = FloatToHalfSaturate(scale);
  p.min_bits = FloatToHalfSaturate(mn);
  p.scale = HalfToFloat(p.scale_bits);
  p.mn = HalfToFloat(p.min_bits);
  // A positive fp16 scale is >= 2^-24, so its reciprocal is finite.
#if defined(__CUDA_ARCH__)
  p.inv = p.scale > 0.0f ? __fdiv_rn(1.0f, p.scale) : 0.0f;
#else
  p.inv = p.scale > 0.0f ? 1.0f / p.scale : 0.0f;
#endif
  return p;
}

// q = clamp(round_even((x - min) * (1 / scale)), 0, 2^b - 1); 0 for a zero scale (constant
// group: decodes to min). NaN inputs give 0.
KVTIER_HD uint32_t KiviQuantize(float x, const KiviGroupParams& p, uint32_t bits) {
  if (!(p.scale > 0.0f)) return 0;
#if defined(__CUDA_ARCH__)
  const float v = __fmul_rn(__fsub_rn(x, p.mn), p.inv);
#else
  const float v = (x - p.mn) * p.inv;
#endif
  const float levels = static_cast<float>((1u << bits) - 1u);
#if defined(__CUDA_ARCH__)
  return static_cast<uint32_t>(fminf(fmaxf(RoundEven(v), 0.0f), levels));
#else
  // The same clamp as fminf(fmaxf(r, 0), levels) (NaN -> 0), as selects the compiler keeps
  // branch-free.
  float r = RoundEven(v);
  r = r > 0.0f ? r : 0.0f;
  r = r < levels ? r : levels;
  return static_cast<uint32_t>(r);
#endif
}

KVTIER_HD float KiviDequantize(uint32_t q, float scale, float mn) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(__fmul_rn(static_cast<float>(q), scale), mn);
#else
  return static_cast<float>(q) * scale + mn;
#endif
}

// fp8 row parameters from the row's max |x| (docs/FORMAT.md, "fp8"): the stored scale is
// amax / 448; elements are converted as x * (448 / amax), or x / scale in the rare rows where
// 448 / amax overflows; a row whose scale is 0 or not finite gets all-zero codes.
struct Fp8RowParams {
  float scale;
  float inv;
  bool zero;
  bool use_div;
};

KVTIER_HD Fp8RowParams MakeFp8Row(float amax) {
  Fp8RowParams p;
#if defined(__CUDA_ARCH__)
  p.scale = __fdiv_rn(amax, 448.0f);
  p.inv = __fdiv_rn(448.0f, amax);
#else
  p.scale = amax / 448.0f;
  p.inv = 448.0f / amax;
#endif
  p.zero = !(p.scale > 0.0f) || !(p.scale < 3.402823466e38f);
  p.use_div = !(p.inv < 3.402823466e38f);
  return p;
}

// The value that is rounded to E4M3 (meaningless when p.zero).
KVTIER_HD float Fp8Scaled(float x, const Fp8RowParams& p) {
#if defined(__CUDA_ARCH__)
  return p.use_div ? __fdiv_rn(x, p.scale) : __fmul_rn(x, p.inv);
#else
  return p.use_div ? x / p.scale : x * p.inv;
#endif
}

KVTIER_HD uint8_t Fp8Quantize(float x, const Fp8RowParams& p) {
  return p.zero ? 0 : FloatToE4M3(Fp8Scaled(x, p));
}

KVTIER_HD float Fp8Dequantize(uint8_t code, float scale) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(E4M3ToFloat(code), scale);
#else
  return E4M3ToFloat(code) * scale;
#endif
}

// Where decoded rows go: DecodeTarget with its arrays in the memory of the side that writes
// (host arrays for the CPU, device arrays for kernels), plus a per-chunk offset for batched
// device decodes (chunk i writes at byte offset i * chunk_stride from chunk 0's addresses).
struct TargetView {
  char* const* layer_base = nullptr;
  int64_t stride_kv = 0;
  int64_t stride_head = 0;
  int64_t stride_token = 0;
  const int32_t* block_table = nullptr;
  uint32_t block_size = 0;
  int64_t stride_block = 0;
  int64_t chunk_stride = 0;
  // Every row start is 16-byte aligned (layer bases, strides and chunk_stride all are): kernels
  // may then store 16 bytes at a time.
  bool align16 = false;

  KVTIER_HD char* Row(uint32_t layer, uint32_t kv, uint32_t head, uint32_t token,
                      uint32_t chunk = 0) const {
    int64_t tok;
    if (block_table != nullptr) {
      tok = int64_t{block_table[token / block_size]} * stride_block +
            int64_t{token % block_size} * stride_token;
    } else {
      tok = int64_t{token} * stride_token;
    }
    return layer_base[layer] + int64_t{kv} * stride_kv + int64_t{head} * stride_head + tok +
           int64_t{chunk} * chunk_stride;
  }
};

}  // namespace kvtier::kernels::internal

#endif  // KVTIER_KERNELS_SRC_CODECS_GEOMETRY_H_
