// The TurboQuant chunk codec (CodecId::kTurboQuant): geometry, the CPU reference encode/decode
// of whole chunks, and the hand-off to the CUDA kernels. Body format: docs/FORMAT.md,
// "turboquant". Built with -ffp-contract=off (see sources.cmake).
#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "codecs/numeric.h"
#include "kvtier/common/status.h"
#include "turboquant/tq_codec.h"

namespace kvtier::kernels::internal {

constexpr uint32_t kTqMaxDenseDim = 512;

absl::StatusOr<TqPlan> MakeTqPlan(const CodecParams& params, const ChunkShape& shape) {
  const KvLayout& l = shape.layout;
  TqPlan plan;
  TqGeometry& g = plan.g;
  uint32_t elem = 0;
  switch (l.dtype) {
    case DType::kFloat16:
    case DType::kBFloat16:
      elem = 2;
      break;
    case DType::kFloat32:
      elem = 4;
      break;
    default:
      return absl::InvalidArgumentError("turboquant: unsupported dtype");
  }
  plan.dtype_code = static_cast<uint8_t>(l.dtype);
  StreamShape& s = g.shape;
  s.mha = l.kind == LayoutKind::kMha;
  s.num_layers = l.num_layers;
  s.heads = s.mha ? l.num_kv_heads : 1;
  s.num_streams = s.mha ? l.num_layers * 2 * l.num_kv_heads : l.num_layers;
  s.tokens = shape.num_tokens;
  s.width = l.VectorDim();
  s.elem_size = elem;
  g.prod = params.tq_variant == TurboQuantVariant::kProd;
  g.split = params.tq_split != TurboQuantSplit::kNone;
  uint32_t dims[2] = {0, 0}, bits[2] = {params.bits, params.bits}, first[2] = {0, 0};
  if (g.split) {
    if (!s.mha || l.head_dim != 128) {
      return absl::InvalidArgumentError(
          "turboquant: the 2.5 / 3.5 splits need an MHA/GQA layout with head_dim 128");
    }
    const bool p25 = params.tq_split == TurboQuantSplit::k2p5;
    g.num_parts = 2;
    dims[0] = p25 ? 32 : 64;
    dims[1] = 128 - dims[0];
    bits[0] = p25 ? 3 : 4;
    bits[1] = p25 ? 2 : 3;
  } else if (s.mha) {
    g.num_parts = 1;
    dims[0] = l.head_dim;
  } else {
    g.num_parts = l.rope_dim > 0 ? 2 : 1;
    dims[0] = l.latent_dim;
    dims[1] = l.rope_dim;
    first[1] = l.latent_dim;
  }
  uint32_t offset = 0;
  for (uint32_t p = 0; p < g.num_parts; ++p) {
    if (dims[p] < 8 || dims[p] > 4096) {
      return absl::InvalidArgumentError(absl::StrCat(
          "turboquant: vector part of ", dims[p], " channels (each of head_dim, latent_dim and a "
          "non-zero rope_dim must be in [8, 4096])"));
    }
    // A dense rotation costs an O(d^3) QR to build; capping d keeps a crafted payload (a fresh
    // seed per request defeats the table cache) from stalling a reader for seconds.
    if (params.tq_rotation == TurboQuantRotation::kDense && dims[p] > kTqMaxDenseDim) {
      return absl::InvalidArgumentError(absl::StrCat(
          "turboquant: rotation=dense supports vector parts of at most ", kTqMaxDenseDim,
          " channels, got ", dims[p], " (use rotation=hadamard)"));
    }
    TurboQuantVectorParams vp;
    vp.dim = dims[p];
    vp.bits = static_cast<uint8_t>(bits[p]);
    vp.variant = params.tq_variant;
    vp.rotation = params.tq_rotation;
    vp.seed = params.seed;
    vp.part = static_cast<uint8_t>(p);
    vp.qjl = params.tq_qjl;
    vp.matrix = params.tq_matrix;
    KVTIER_ASSIGN_OR_RETURN(plan.tables[p], GetTqTables(vp));
    TqPartShape& ps = g.parts[p];
    ps.dim = dims[p];
    ps.bits = bits[p];
    ps.mse_bits = plan.tables[p]->mse_bits;
    ps.mse_bytes = static_cast<uint32_t>(plan.tables[p]->MseBytes());
    ps.sign_bytes = static_cast<uint32_t>(plan.tables[p]->SignBytes());
    ps.code_offset = offset;
    ps.first_channel = first[p];
    offset += ps.mse_bytes + ps.sign_bytes;
  }
  g.vector_code_bytes = offset;
  g.scalars_per_vector = g.num_parts * (g.prod ? 2 : 1);
  g.mask_bytes = g.split ? uint64_t{s.num_streams} * 16u : 0;
  g.scalars_offset = g.mask_bytes;
  g.codes_offset = g.scalars_offset + Pad16(g.Vectors() * g.scalars_per_vector * 2u);
  g.body_bytes = g.codes_offset + g.Vectors() * g.vector_code_bytes;
  return plan;
}

void TqOutlierMask(const float* sumsq, uint32_t width, uint32_t outliers, uint8_t mask[16]) {
  std::memset(mask, 0, 16);
  for (uint32_t c = 0; c < width; ++c) {
    uint32_t rank = 0;
    for (uint32_t o = 0; o < width; ++o) {
      rank += (sumsq[o] > sumsq[c] || (sumsq[o] == sumsq[c] && o < c)) ? 1 : 0;
    }
    if (rank < outliers) mask[c / 8] |= static_cast<uint8_t>(1u << (c % 8));
  }
}

namespace {

// Channels of each part, from the mask (split) or the fixed ranges.
void PartChannels(const TqGeometry& g, const uint8_t* mask, std::vector<uint32_t> ch[2]) {
  ch[0].clear();
  ch[1].clear();
  if (g.split) {
    for (uint32_t c = 0; c < g.shape.width; ++c) {
      ch[((mask[c / 8] >> (c % 8)) & 1) ? 0 : 1].push_back(c);
    }
    return;
  }
  for (uint32_t p = 0; p < g.num_parts; ++p) {
    for (uint32_t j = 0; j < g.parts[p].dim; ++j) ch[p].push_back(g.parts[p].first_channel + j);
  }
}

template <typename E>
void EncodeChunk(const TqPlan& plan, const void* input, uint8_t* body) {
  using S = typename E::Storage;
  const TqGeometry& g = plan.g;
  const uint32_t T = g.shape.tokens, W = g.shape.width;
  const S* in = static_cast<const S*>(input);
  std::vector<float> row(W), part(W), scratch(3 * W), sumsq(W);
  std::vector<uint32_t> ch[2];
  uint16_t* scalars = reinterpret_cast<uint16_t*>(body + g.scalars_offset);
  std::memset(body, 0, g.codes_offset);  // masks, scalars and padding
  for (uint32_t s = 0; s < g.shape.num_streams; ++s) {
    const S* base = in + uint64_t{s} * T * W;
    uint8_t* mask = g.split ? body + uint64_t{s} * 16u : nullptr;
    if (g.split) {
      std::fill(sumsq.begin(), sumsq.end(), 0.0f);
      for (uint32_t t = 0; t < T; ++t) {
        for (uint32_t c = 0; c < W; ++c) {
          const float x = E::ToFloat(base[uint64_t{t} * W + c]);
          sumsq[c] = sumsq[c] + x * x;
        }
      }
      TqOutlierMask(sumsq.data(), W, g.parts[0].dim, mask);
    }
    PartChannels(g, mask, ch);
    for (uint32_t t = 0; t < T; ++t) {
      const uint64_t v = uint64_t{s} * T + t;
      for (uint32_t c = 0; c < W; ++c) row[c] = E::ToFloat(base[uint64_t{t} * W + c]);
      uint8_t* codes = body + g.codes_offset + v * g.vector_code_bytes;
      for (uint32_t p = 0; p < g.num_parts; ++p) {
        for (uint32_t j = 0; j < g.parts[p].dim; ++j) part[j] = row[ch[p][j]];
        float norm = 0, gamma = 0;
        TqEncodeVector(*plan.tables[p], part.data(), codes + g.parts[p].code_offset, &norm, &gamma,
                       scratch.data());
        uint16_t* sc = scalars + (v * g.num_parts + p) * (g.prod ? 2 : 1);
        sc[0] = FloatToHalfSaturate(norm);
        if (g.prod) sc[1] = FloatToHalfSaturate(gamma);
      }
    }
  }
}

template <typename E>
void DecodeChunk(const TqPlan& plan, const uint8_t* body, const DecodeTarget& target) {
  using S = typename E::Storage;
  const TqGeometry& g = plan.g;
  const uint32_t T = g.shape.tokens, W = g.shape.width;
  std::vector<float> part(W), scratch(2 * W);
  std::vector<uint32_t> ch[2];
  const uint16_t* scalars = reinterpret_cast<const uint16_t*>(body + g.scalars_offset);
  TargetView view;
  std::vector<char*> bases(target.layer_base.size());
  for (size_t i = 0; i < bases.size(); ++i) bases[i] = static_cast<char*>(target.layer_base[i]);
  view.layer_base = bases.data();
  view.stride_kv = target.stride_kv;
  view.stride_head = target.stride_head;
  view.stride_token = target.stride_token;
  view.block_table = target.block_table;
  view.block_size = target.block_size;
  view.stride_block = target.stride_block;
  for (uint32_t s = 0; s < g.shape.num_streams; ++s) {
    PartChannels(g, g.split ? body + uint64_t{s} * 16u : nullptr, ch);
    uint32_t layer, kv, head;
    g.shape.Decompose(s, &layer, &kv, &head);
    for (uint32_t t = 0; t < T; ++t) {
      const uint64_t v = uint64_t{s} * T + t;
      const uint8_t* codes = body + g.codes_offset + v * g.vector_code_bytes;
      S* out = reinterpret_cast<S*>(view.Row(layer, kv, head, t));
      for (uint32_t p = 0; p < g.num_parts; ++p) {
        const uint16_t* sc = scalars + (v * g.num_parts + p) * (g.prod ? 2 : 1);
        const float norm = HalfToFloat(sc[0]);
        const float gamma = g.prod ? HalfToFloat(sc[1]) : 0.0f;
        TqDecodeVector(*plan.tables[p], codes + g.parts[p].code_offset, norm, gamma, part.data(),
                       scratch.data());
        for (uint32_t j = 0; j < g.parts[p].dim; ++j) out[ch[p][j]] = E::FromFloat(part[j]);
      }
    }
  }
}

}  // namespace

absl::Status TqCheckTarget(const ChunkShape& shape, const DecodeTarget& target) {
  if (target.dtype != shape.layout.dtype) {
    return absl::InvalidArgumentError("turboquant: target dtype differs from the payload's");
  }
  if (target.layer_base.size() != shape.layout.num_layers) {
    return absl::InvalidArgumentError("turboquant: target needs one base pointer per layer");
  }
  if (target.block_table != nullptr && target.block_size == 0) {
    return absl::InvalidArgumentError("turboquant: block_table without block_size");
  }
  return absl::OkStatus();
}

namespace {

class TurboQuantCodecImpl final : public CodecImpl {
 public:
  absl::Status CheckCompatible(const CodecParams& params, const ChunkShape& shape) const override {
    return MakeTqPlan(params, shape).status();
  }

  size_t BodySize(const CodecParams& params, const ChunkShape& shape) const override {
    auto plan = MakeTqPlan(params, shape);
    return plan.ok() ? plan->g.body_bytes : 0;
  }

  absl::Status EncodeHost(const CodecParams& params, const ChunkShape& shape, const void* input,
                          absl::Span<uint8_t> body) const override {
    KVTIER_ASSIGN_OR_RETURN(TqPlan plan, MakeTqPlan(params, shape));
    if (body.size() != plan.g.body_bytes) {
      return absl::InvalidArgumentError("turboquant: body buffer has the wrong size");
    }
    DispatchElem(plan.dtype_code, [&](auto e) {
      EncodeChunk<decltype(e)>(plan, input, body.data());
    });
    return absl::OkStatus();
  }

  absl::Status DecodeHost(const CodecParams& params, const ChunkShape& shape,
                          absl::Span<const uint8_t> body,
                          const DecodeTarget& target) const override {
    KVTIER_ASSIGN_OR_RETURN(TqPlan plan, MakeTqPlan(params, shape));
    if (body.size() != plan.g.body_bytes) {
      return absl::InvalidArgumentError("turboquant: body has the wrong size");
    }
    KVTIER_RETURN_IF_ERROR(TqCheckTarget(shape, target));
    if (plan.g.split) {
      // A mask must select exactly the outlier count: anything else is a malformed body.
      for (uint32_t s = 0; s < plan.g.shape.num_streams; ++s) {
        uint32_t n = 0;
        for (int i = 0; i < 16; ++i) n += __builtin_popcount(body[uint64_t{s} * 16u + i]);
        if (n != plan.g.parts[0].dim) {
          return absl::InvalidArgumentError(
              absl::StrCat("turboquant: outlier mask of stream ", s, " selects ", n,
                           " channels, expected ", plan.g.parts[0].dim));
        }
      }
    }
    DispatchElem(plan.dtype_code, [&](auto e) {
      DecodeChunk<decltype(e)>(plan, body.data(), target);
    });
    return absl::OkStatus();
  }

  absl::Status EncodeDevice(const CodecParams& params, const ChunkShape& shape,
                            const void* device_input, void* device_body) const override {
    // Plan, kernel parameters and split constants come from a per-device cache (tq_codec.h).
    return TqEncodeDevice(params, shape, device_input, device_body);
  }

  absl::Status DecodeDevice(const CodecParams& params, const ChunkShape& shape,
                            const void* device_body, const DecodeTarget& target) const override {
    return TqDecodeDevice(params, shape, device_body, target);
  }

  absl::Status EncodeDeviceOn(const CodecParams& params, const ChunkShape& shape,
                              const void* device_input, void* device_body,
                              void* stream) const override {
    return TqEncodeDevice(params, shape, device_input, device_body, /*sync=*/false, stream);
  }

  absl::Status DecodeDeviceOn(const CodecParams& params, const ChunkShape& shape,
                              const void* device_body, const DecodeTarget& target,
                              void* stream) const override {
    return TqDecodeDevice(params, shape, device_body, target, /*sync=*/false, stream);
  }
};

}  // namespace

const CodecImpl& TurboQuantCodec() {
  static const TurboQuantCodecImpl* impl = new TurboQuantCodecImpl();
  return *impl;
}

}  // namespace kvtier::kernels::internal
