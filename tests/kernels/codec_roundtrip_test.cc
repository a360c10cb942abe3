// Round trips through Encode/Decode on the CPU: raw is exact; fp8 and kivi stay within their
// stated error bounds; sink and tail tokens come back exactly; encoding is deterministic.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "codec_test_util.h"
#include "kvtier/kernels/codec.h"

namespace kvtier::kernels {
namespace {

using testing::CanonicalOffset;
using testing::RandomChunk;
using testing::StoredToFloat;

struct Case {
  std::string codec;
  KvLayout layout;
  uint32_t tokens;
  uint64_t first_position = 0;
  bool ends_sequence = false;
};

std::string Name(const Case& c) {
  return c.codec + " " + c.layout.DebugString() + " T=" + std::to_string(c.tokens) +
         " pos=" + std::to_string(c.first_position) + (c.ends_sequence ? " ends" : "");
}

std::vector<uint8_t> EncodeOrDie(const CodecParams& p, const Case& c, const void* data) {
  ChunkInput in;
  in.data = data;
  in.layout = c.layout;
  in.num_tokens = c.tokens;
  in.first_position = c.first_position;
  in.ends_sequence = c.ends_sequence;
  std::vector<uint8_t> payload;
  const absl::Status s = Encode(p, in, &payload);
  EXPECT_TRUE(s.ok()) << Name(c) << ": " << s;
  return payload;
}

std::vector<uint8_t> DecodeOrDie(const std::vector<uint8_t>& payload, const Case& c) {
  std::vector<uint8_t> out(c.layout.ChunkBytes(c.tokens));
  testing::Poison(&out);
  const absl::Status s =
      Decode(payload, DecodeTarget::Contiguous(out.data(), c.layout, c.tokens));
  EXPECT_TRUE(s.ok()) << Name(c) << ": " << s;
  return out;
}

// Half a unit in the last place of the output dtype at magnitude |x| (the decoder's final
// rounding), generously.
float OutputUlp(DType t, float x) {
  const int mant = t == DType::kFloat16 ? 10 : t == DType::kBFloat16 ? 7 : 23;
  const float ax = std::max(std::fabs(x), t == DType::kFloat16 ? 6.1e-5f : 1e-30f);
  return std::ldexp(1.0f, std::ilogb(ax) - mant);
}

std::vector<KvLayout> Layouts() {
  return {KvLayout::Mha(2, 2, 4, 128, DType::kFloat16),
          KvLayout::Mha(2, 2, 2, 64, DType::kBFloat16),
          KvLayout::Mha(1, 3, 3, 128, DType::kFloat32),
          KvLayout::Mla(2, 512, 64, DType::kFloat16),
          KvLayout::Mla(1, 96, 32, DType::kBFloat16)};
}

TEST(CodecRoundTripTest, RawIsExact) {
  for (const KvLayout& l : Layouts()) {
    const Case c{"raw", l, 37};
    const auto in = RandomChunk(l, c.tokens, 11);
    const auto payload = EncodeOrDie(CodecParams{}, c, in.data());
    ASSERT_EQ(payload.size(), 96 + in.size());
    EXPECT_EQ(DecodeOrDie(payload, c), in) << Name(c);
    auto info = InspectPayload(payload);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->layout, l);
    EXPECT_EQ(info->num_tokens, 37u);
    EXPECT_EQ(info->DecodedBytes(), in.size());
  }
}

TEST(CodecRoundTripTest, Fp8WithinRelativeError) {
  const CodecParams p = *CodecParams::Parse("fp8");
  for (const KvLayout& l : Layouts()) {
    const Case c{"fp8", l, 33};
    const auto in = RandomChunk(l, c.tokens, 12);
    const auto out = DecodeOrDie(EncodeOrDie(p, c, in.data()), c);
    const size_t es = DTypeSize(l.dtype), V = l.VectorDim(), rows = in.size() / es / V;
    double max_rel = 0;
    for (size_t r = 0; r < rows; ++r) {
      float amax = 0;
      for (size_t d = 0; d < V; ++d) {
        amax = std::max(amax, std::fabs(StoredToFloat(l.dtype, &in[(r * V + d) * es])));
      }
      const float scale = amax / 448.0f;
      for (size_t d = 0; d < V; ++d) {
        const float x = StoredToFloat(l.dtype, &in[(r * V + d) * es]);
        const float y = StoredToFloat(l.dtype, &out[(r * V + d) * es]);
        // E4M3 keeps 3 mantissa bits: relative error <= 2^-4 for normals; below 2^-6 * scale the
        // absolute error is <= 2^-10 * scale (subnormal spacing / 2).
        const float bound = std::max(std::fabs(x) * 0.0625f, scale * 0.0009765625f) * 1.0001f +
                            OutputUlp(l.dtype, y);
        ASSERT_LE(std::fabs(x - y), bound) << Name(c) << " row " << r << " dim " << d;
        if (std::fabs(x) > 64 * scale) max_rel = std::max<double>(max_rel, std::fabs(x - y) / std::fabs(x));
      }
    }
    EXPECT_GT(max_rel, 0.0) << "fp8 is lossy; an exact round trip means it stored raw data";
  }
}

TEST(CodecRoundTripTest, Fp8ZeroRowHasScaleZero) {
  const KvLayout l = KvLayout::Mha(1, 1, 1, 32);
  std::vector<uint8_t> in(l.ChunkBytes(2), 0);
  const Case c{"fp8", l, 2};
  const auto payload = EncodeOrDie(*CodecParams::Parse("fp8"), c, in.data());
  // Body: 4 scales (padded to 16 bytes), then codes: everything zero.
  for (size_t i = 96; i < payload.size(); ++i) ASSERT_EQ(payload[i], 0) << i;
  EXPECT_EQ(DecodeOrDie(payload, c), in);
}

// kivi: each quantized element is within scale/2 of its input (plus the fp16 rounding of the
// stored min and the output rounding); unquantized (sink, tail, remainder) tokens are exact.
void CheckKivi(const std::string& codec, const Case& c, uint32_t seed) {
  const CodecParams p = *CodecParams::Parse(codec);
  const KvLayout& l = c.layout;
  const auto in = RandomChunk(l, c.tokens, seed);
  const auto payload = EncodeOrDie(p, c, in.data());
  const auto out = DecodeOrDie(payload, c);
  const uint32_t T = c.tokens, V = l.VectorDim(), G = p.group_size;
  const bool mha = l.kind == LayoutKind::kMha;
  const uint32_t heads = mha ? l.num_kv_heads : 1, kvs = mha ? 2 : 1;
  // Which tokens are quantized (docs/FORMAT.md, "kivi").
  uint32_t t0 = c.first_position < p.sink_tokens
                    ? static_cast<uint32_t>(std::min<uint64_t>(T, p.sink_tokens - c.first_position))
                    : 0;
  uint32_t tend = c.ends_sequence ? (p.tail_tokens < T ? T - p.tail_tokens : 0) : T;
  tend = std::max(tend, t0);
  const uint32_t val_q = tend - t0, key_q = mha ? val_q / G * G : 0;
  const float levels = static_cast<float>((1 << p.bits) - 1);
  size_t quantized = 0, exact = 0;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    for (uint32_t kv = 0; kv < kvs; ++kv) {
      const bool key = mha && kv == 0;
      const uint32_t q = key ? key_q : val_q;
      for (uint32_t h = 0; h < heads; ++h) {
        auto at = [&](const std::vector<uint8_t>& b, uint32_t t, uint32_t d) {
          return StoredToFloat(l.dtype, &b[CanonicalOffset(l, T, layer, kv, h, t, d)]);
        };
        for (uint32_t t = 0; t < T; ++t) {
          const bool is_q = t >= t0 && t < t0 + q;
          for (uint32_t d = 0; d < V; ++d) {
            const float x = at(in, t, d), y = at(out, t, d);
            if (!is_q) {
              ASSERT_EQ(x, y) << Name(c) << " raw token " << t;
              ++exact;
              continue;
            }
            // The group of (t, d).
            float mn = INFINITY, mx = -INFINITY;
            if (key) {
              const uint32_t tb = t0 + (t - t0) / G * G;
              for (uint32_t u = tb; u < tb + G; ++u) mn = std::min(mn, at(in, u, d)), mx = std::max(mx, at(in, u, d));
            } else {
              const uint32_t db = d / G * G;
              for (uint32_t e = db; e < db + G; ++e) mn = std::min(mn, at(in, t, e)), mx = std::max(mx, at(in, t, e));
            }
            const float scale = (mx - mn) / levels;
            const float mn_err = std::fabs(mn - internal::HalfToFloat(internal::FloatToHalf(mn)));
            const float bound = scale * 0.5f * (1 + 2e-3f) + mn_err + (mx - mn) * 2e-3f +
                                OutputUlp(l.dtype, y) + 1e-6f;
            ASSERT_LE(std::fabs(x - y), bound)
                << Name(c) << " " << (key ? "key" : "value") << " t=" << t << " d=" << d
                << " x=" << x << " y=" << y << " scale=" << scale;
            ++quantized;
          }
        }
      }
    }
  }
  if (val_q > 0) {
    EXPECT_GT(quantized, 0u) << Name(c);
  }
  // Compression actually happened where most tokens are quantized.
  if (exact == 0) {
    EXPECT_LT(payload.size(), in.size() * (p.bits + 2) / (8 * DTypeSize(l.dtype)) + 200)
        << Name(c);
  }
}

TEST(CodecRoundTripTest, KiviWithinHalfScale) {
  for (const char* codec : {"kivi:b=2,g=32", "kivi:b=4,g=32", "kivi:b=2,g=64", "kivi:b=4,g=128"}) {
    for (const KvLayout& l : Layouts()) {
      const CodecParams p = *CodecParams::Parse(codec);
      if (l.VectorDim() % p.group_size != 0) continue;
      CheckKivi(codec, Case{codec, l, 128}, 21);
    }
  }
}

TEST(CodecRoundTripTest, KiviSinkTailAndRemainder) {
  const KvLayout l = KvLayout::Mha(1, 2, 2, 64, DType::kFloat16);
  // 100 tokens, G = 32: keys quantize 96 tokens, the last 4 stay fp16.
  CheckKivi("kivi:b=2,g=32", Case{"", l, 100}, 31);
  // The chunk holds the sequence's first 4 tokens (sinks) and ends it (last 20 kept).
  CheckKivi("kivi:b=2,g=32,sink=4,tail=20", Case{"", l, 100, 0, true}, 32);
  // Sinks partly in the previous chunk.
  CheckKivi("kivi:b=4,g=32,sink=8", Case{"", l, 64, 5, false}, 33);
  // Past the sinks: no effect.
  CheckKivi("kivi:b=4,g=32,sink=8", Case{"", l, 64, 64, false}, 34);
  // Everything kept: tail covers the chunk.
  CheckKivi("kivi:b=2,g=32,tail=500", Case{"", l, 64, 256, true}, 35);
  // MLA with sinks.
  CheckKivi("kivi:b=2,g=64,sink=3", Case{"", KvLayout::Mla(2, 256, 64), 50, 0, false}, 36);
}

TEST(CodecRoundTripTest, KiviConstantGroupDecodesToMin) {
  const KvLayout l = KvLayout::Mha(1, 1, 1, 32, DType::kFloat16);
  std::vector<uint8_t> in(l.ChunkBytes(32));
  for (size_t i = 0; i < in.size(); i += 2) testing::FloatToStored(l.dtype, 1.5f, &in[i]);
  const Case c{"kivi", l, 32};
  const auto out = DecodeOrDie(EncodeOrDie(*CodecParams::Parse("kivi:b=2,g=32"), c, in.data()), c);
  EXPECT_EQ(out, in);
}

TEST(CodecRoundTripTest, EncodingIsDeterministicAndHeaderIsRecorded) {
  const KvLayout l = KvLayout::Mha(2, 2, 4, 64, DType::kBFloat16);
  const auto in = RandomChunk(l, 64, 41);
  for (const char* codec : {"raw", "fp8", "kivi:b=4,g=64,sink=2,tail=3"}) {
    const CodecParams p = *CodecParams::Parse(codec);
    const Case c{codec, l, 64, 7, true};
    const auto a = EncodeOrDie(p, c, in.data());
    const auto b = EncodeOrDie(p, c, in.data());
    EXPECT_EQ(a, b) << codec;
    auto info = InspectPayload(a);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->codec, p);
    EXPECT_EQ(info->layout, l);
    EXPECT_EQ(info->first_position, 7u);
    EXPECT_TRUE(info->ends_sequence);
    EXPECT_EQ(info->format_version, 1);
    EXPECT_EQ(info->header_bytes + info->body_bytes, a.size());
    auto max = MaxPayloadSize(p, l, 64);
    ASSERT_TRUE(max.ok());
    EXPECT_LE(a.size(), *max) << codec;
  }
}

TEST(CodecRoundTripTest, EncodeRejectsBadInput) {
  const KvLayout l = KvLayout::Mha(1, 1, 1, 96);
  std::vector<uint8_t> in(l.ChunkBytes(8));
  ChunkInput ci;
  ci.data = in.data();
  ci.layout = l;
  ci.num_tokens = 8;
  std::vector<uint8_t> out{1, 2, 3};
  EXPECT_EQ(Encode(*CodecParams::Parse("kivi:b=2,g=64"), ci, &out).code(),
            absl::StatusCode::kInvalidArgument);  // 96 % 64 != 0
  EXPECT_TRUE(out.empty());
  CodecParams tq;
  tq.id = CodecId::kTurboQuant;
  tq.bits = 3;
  ci.layout = KvLayout::Mha(1, 1, 1, 128);
  in.resize(ci.layout.ChunkBytes(8));
  ci.data = in.data();
  const absl::Status s = Encode(tq, ci, &out);
  // Either TurboQuant is built (then it encodes) or it is reported as not built.
  EXPECT_TRUE(s.ok() || s.code() == absl::StatusCode::kUnimplemented) << s;
  ci.data = nullptr;
  EXPECT_FALSE(Encode(CodecParams{}, ci, &out).ok());
  ci.data = in.data();
  ci.num_tokens = 0;
  EXPECT_FALSE(Encode(CodecParams{}, ci, &out).ok());
  ci.num_tokens = 8;
  CodecParams bad;
  bad.id = CodecId::kKivi;
  EXPECT_FALSE(Encode(bad, ci, &out).ok());
  EXPECT_FALSE(Encode(CodecParams{}, ci, nullptr).ok());
#ifndef KVTIER_HAVE_CUDA
  ci.space = MemorySpace::kDevice;
  EXPECT_EQ(Encode(CodecParams{}, ci, &out).code(), absl::StatusCode::kInvalidArgument);
#endif
}

}  // namespace
}  // namespace kvtier::kernels
