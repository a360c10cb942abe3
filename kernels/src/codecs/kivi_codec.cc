// kivi: asymmetric b-bit quantization, keys per channel (groups of G tokens of one channel),
// values per token (groups of G channels), fp16 scale and min per group, sink and tail tokens
// kept in the input dtype (docs/FORMAT.md, "kivi"). CPU reference; CUDA kernels in kivi.cu.
#include <cmath>
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "codec_impl.h"
#include "codecs/codec_cuda.h"
#include "codecs/cpu_simd.h"
#include "codecs/device_memory.h"
#include "codecs/stream_shape.h"

namespace kvtier::kernels::internal {
namespace {

KiviGeometry MakeGeometry(const CodecParams& p, const ChunkShape& c) {
  return KiviGeometry::Make(MakeStreamShape(c), p.bits, p.group_size, c.first_position,
                            c.ends_sequence, p.sink_tokens, p.tail_tokens);
}

constexpr float kInf = std::numeric_limits<float>::infinity();

// The min/max loops are selects starting from +-inf, which skip NaNs like fminf/fmaxf (the GPU's
// reduction) and stay branch-free; a group of NaNs only must come out NaN as fminf/fmaxf give.
void FinishMinMax(float* mn, float* mx) {
  if (*mn > *mx) *mn = *mx = std::numeric_limits<float>::quiet_NaN();
}

void StoreU32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }  // little-endian hosts only
uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

template <typename Elem>
void EncodeStream(const KiviGeometry& g, uint32_t stream, const typename Elem::Storage* x,
                  uint8_t* body) {
  using T = typename Elem::Storage;
  const StreamShape& s = g.shape;
  const uint32_t V = s.width, G = g.group, b = g.bits, cpw = g.CodesPerWord();
  const bool key = s.IsKey(stream);
  uint8_t* codes = body + g.BlockOffset(stream);
  uint8_t* meta = codes + g.CodesBytes(key);
  uint8_t* raw = meta + g.MetaBytes(key);
  const uint32_t q = g.QuantizedTokens(key);
  if (key) {
    std::vector<float> mn(V), mx(V);
    std::vector<KiviGroupParams> gp(V);
    const uint32_t W = g.KeyWordsPerGroup();
    for (uint32_t grp = 0; grp < q / G; ++grp) {
      const uint32_t tb = g.t0 + grp * G;
      std::fill(mn.begin(), mn.end(), kInf);
      std::fill(mx.begin(), mx.end(), -kInf);
      for (uint32_t t = tb; t < tb + G; ++t) {
        for (uint32_t c = 0; c < V; ++c) {
          const float v = Elem::ToFloat(x[uint64_t{t} * V + c]);
          mn[c] = v < mn[c] ? v : mn[c];
          mx[c] = v > mx[c] ? v : mx[c];
        }
      }
      for (uint32_t c = 0; c < V; ++c) {
        FinishMinMax(&mn[c], &mx[c]);
        gp[c] = MakeKiviGroup(mn[c], mx[c], b);
        StoreU32(meta + (uint64_t{grp} * V + c) * 4, PackMeta(gp[c].scale_bits, gp[c].min_bits));
      }
      for (uint32_t w = 0; w < W; ++w) {
        for (uint32_t c = 0; c < V; ++c) {
          uint32_t word = 0;
          for (uint32_t k = 0; k < cpw; ++k) {
            const uint32_t t = tb + w * cpw + k;
            word |= KiviQuantize(Elem::ToFloat(x[uint64_t{t} * V + c]), gp[c], b) << (b * k);
          }
          StoreU32(codes + ((uint64_t{grp} * W + w) * V + c) * 4, word);
        }
      }
    }
  } else {
    const uint32_t W = g.ValWordsPerToken(), NG = g.ValGroupsPerToken();
    for (uint32_t i = 0; i < q; ++i) {
      const T* row = x + uint64_t{g.t0 + i} * V;
      for (uint32_t grp = 0; grp < NG; ++grp) {
        const T* xs = row + grp * G;
        float mn = kInf, mx = -kInf;
        for (uint32_t c = 0; c < G; ++c) {
          const float v = Elem::ToFloat(xs[c]);
          mn = v < mn ? v : mn;
          mx = v > mx ? v : mx;
        }
        FinishMinMax(&mn, &mx);
        const KiviGroupParams p = MakeKiviGroup(mn, mx, b);
        StoreU32(meta + (uint64_t{i} * NG + grp) * 4, PackMeta(p.scale_bits, p.min_bits));
        for (uint32_t w = 0; w < G / cpw; ++w) {
          uint32_t word = 0;
          for (uint32_t k = 0; k < cpw; ++k) {
            word |= KiviQuantize(Elem::ToFloat(xs[w * cpw + k]), p, b) << (b * k);
          }
          StoreU32(codes + (uint64_t{i} * W + grp * (G / cpw) + w) * 4, word);
        }
      }
    }
  }
  const size_t row_bytes = size_t{V} * sizeof(T);
  for (uint32_t r = 0; r < s.tokens - q; ++r) {
    std::memcpy(raw + r * row_bytes, x + uint64_t{g.RawToken(key, r)} * V, row_bytes);
  }
}

template <typename Elem>
void DecodeStream(const KiviGeometry& g, uint32_t stream, const uint8_t* body,
                  const TargetView& view) {
  using T = typename Elem::Storage;
  const StreamShape& s = g.shape;
  const uint32_t V = s.width, G = g.group, b = g.bits, cpw = g.CodesPerWord();
  const uint32_t mask = (1u << b) - 1u;
  const bool simd = CpuHasAvx2F16c();  // V is a multiple of G >= 32
  const bool key = s.IsKey(stream);
  uint32_t l, kv, h;
  s.Decompose(stream, &l, &kv, &h);
  const uint8_t* codes = body + g.BlockOffset(stream);
  const uint8_t* meta = codes + g.CodesBytes(key);
  const uint8_t* raw = meta + g.MetaBytes(key);
  const uint32_t q = g.QuantizedTokens(key);
  if (key) {
    const uint32_t W = g.KeyWordsPerGroup();
    std::vector<float> scale(V), mn(V);
    for (uint32_t grp = 0; grp < q / G; ++grp) {
      const uint32_t tb = g.t0 + grp * G;
      for (uint32_t c = 0; c < V; ++c) {
        const uint32_t m = LoadU32(meta + (uint64_t{grp} * V + c) * 4);
        scale[c] = HalfToFloat(static_cast<uint16_t>(m));
        mn[c] = HalfToFloat(static_cast<uint16_t>(m >> 16));
      }
      for (uint32_t w = 0; w < W; ++w) {
        for (uint32_t k = 0; k < cpw; ++k) {
          T* out = reinterpret_cast<T*>(view.Row(l, kv, h, tb + w * cpw + k));
          const uint8_t* wp = codes + (uint64_t{grp} * W + w) * V * 4;
          if (kSimdCode<Elem> != 0 && simd) {
            KiviDequantColumnsAvx2(kSimdCode<Elem>, b, b * k, reinterpret_cast<const uint32_t*>(wp),
                                   scale.data(), mn.data(), out, V);
            continue;
          }
          for (uint32_t c = 0; c < V; ++c) {
            const uint32_t code = (LoadU32(wp + c * 4) >> (b * k)) & mask;
            out[c] = Elem::FromFloat(KiviDequantize(code, scale[c], mn[c]));
          }
        }
      }
    }
  } else {
    const uint32_t W = g.ValWordsPerToken(), NG = g.ValGroupsPerToken();
    for (uint32_t i = 0; i < q; ++i) {
      T* out = reinterpret_cast<T*>(view.Row(l, kv, h, g.t0 + i));
      const uint8_t* wp = codes + uint64_t{i} * W * 4;
      for (uint32_t grp = 0; grp < NG; ++grp) {
        const uint32_t m = LoadU32(meta + (uint64_t{i} * NG + grp) * 4);
        const float scale = HalfToFloat(static_cast<uint16_t>(m));
        const float mn = HalfToFloat(static_cast<uint16_t>(m >> 16));
        if (kSimdCode<Elem> != 0 && simd) {
          KiviDequantPackedAvx2(kSimdCode<Elem>, b,
                                reinterpret_cast<const uint32_t*>(wp) + grp * G / cpw, scale, mn,
                                out + grp * G, G);
          continue;
        }
        for (uint32_t c = grp * G; c < (grp + 1) * G; ++c) {
          const uint32_t code = (LoadU32(wp + (c / cpw) * 4) >> (b * (c % cpw))) & mask;
          out[c] = Elem::FromFloat(KiviDequantize(code, scale, mn));
        }
      }
    }
  }
  const size_t row_bytes = size_t{V} * sizeof(T);
  for (uint32_t r = 0; r < s.tokens - q; ++r) {
    std::memcpy(view.Row(l, kv, h, g.RawToken(key, r)), raw + r * row_bytes, row_bytes);
  }
}

class KiviCodecImpl final : public CodecImpl {
 public:
  absl::Status CheckCompatible(const CodecParams& p, const ChunkShape& shape) const override {
    const uint32_t V = shape.layout.VectorDim();
    if (V % p.group_size != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "kivi: vector width ", V, " (", shape.layout.kind == LayoutKind::kMha ? "head_dim"
                                                                                 : "latent+rope",
          ") is not a multiple of group_size ", p.group_size));
    }
    return absl::OkStatus();
  }

  size_t BodySize(const CodecParams& p, const ChunkShape& shape) const override {
    return MakeGeometry(p, shape).body_bytes;
  }

  absl::Status EncodeHost(const CodecParams& p, const ChunkShape& shape, const void* input,
                          absl::Span<uint8_t> body) const override {
    const KiviGeometry g = MakeGeometry(p, shape);
    const bool ok = DispatchElem(DTypeCode(shape.layout.dtype), [&](auto e) {
      using Elem = decltype(e);
      using T = typename Elem::Storage;
      const T* in = static_cast<const T*>(input);
      for (uint32_t st = 0; st < g.shape.num_streams; ++st) {
        EncodeStream<Elem>(g, st, in + uint64_t{st} * g.shape.tokens * g.shape.width,
                           body.data());
      }
    });
    return ok ? absl::OkStatus() : Unsupported(shape);
  }

  absl::Status DecodeHost(const CodecParams& p, const ChunkShape& shape,
                          absl::Span<const uint8_t> body,
                          const DecodeTarget& target) const override {
    const KiviGeometry g = MakeGeometry(p, shape);
    const TargetView view = HostTargetView(target);
    const bool ok = DispatchElem(DTypeCode(shape.layout.dtype), [&](auto e) {
      for (uint32_t st = 0; st < g.shape.num_streams; ++st) {
        DecodeStream<decltype(e)>(g, st, body.data(), view);
      }
    });
    return ok ? absl::OkStatus() : Unsupported(shape);
  }

  absl::Status EncodeDevice(const CodecParams& p, const ChunkShape& shape,
                            const void* device_input, void* device_body) const override {
#ifdef KVTIER_CODECS_CUDA
    return FinishLaunch(cuda::LaunchKiviEncode(DTypeCode(shape.layout.dtype), MakeGeometry(p, shape),
                                               device_input, 0, device_body, 0, 1, nullptr),
                        "kivi encode");
#else
    (void)p, (void)shape, (void)device_input, (void)device_body;
    return absl::UnimplementedError("kvtier was built without CUDA");
#endif
  }

  absl::Status DecodeDevice(const CodecParams& p, const ChunkShape& shape, const void* device_body,
                            const DecodeTarget& target) const override {
#ifdef KVTIER_CODECS_CUDA
    auto dt = UploadTarget(target, shape.num_tokens);
    if (!dt.ok()) return dt.status();
    return FinishLaunch(cuda::LaunchKiviDecode(DTypeCode(shape.layout.dtype), MakeGeometry(p, shape),
                                               device_body, 0, dt->view, 1, nullptr),
                        "kivi decode");
#else
    (void)p, (void)shape, (void)device_body, (void)target;
    return absl::UnimplementedError("kvtier was built without CUDA");
#endif
  }

 private:
  static absl::Status Unsupported(const ChunkShape& shape) {
    return absl::InvalidArgumentError(
        absl::StrCat("kivi: unsupported dtype ", DTypeName(shape.layout.dtype)));
  }
};

}  // namespace

const CodecImpl& KiviCodec() {
  static const KiviCodecImpl* impl = new KiviCodecImpl();
  return *impl;
}

}  // namespace kvtier::kernels::internal
