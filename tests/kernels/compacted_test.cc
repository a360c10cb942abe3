// Compacted-context payload: round trips through every inner codec, header/body checks and
// malformed payloads.
#include "kvtier/kernels/compacted.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kvtier/common/crc32c.h"
#include "kvtier/common/status.h"
#include "selection_test_data.h"

namespace kvtier::kernels {
namespace {

using ::testing::HasSubstr;

struct Prompt {
  KvLayout layout;
  uint32_t T;
  std::vector<float> values;  // canonical [L][K|V][H][T][D]
  std::vector<uint8_t> bytes;
};

Prompt MakePrompt(DType dtype, uint32_t L, uint32_t H, uint32_t Hq, uint32_t D, uint32_t T) {
  Prompt p{KvLayout::Mha(L, H, Hq, D, dtype), T, {}, {}};
  std::mt19937 rng(42);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  p.values.resize(size_t(L) * 2 * H * T * D);
  for (float& v : p.values) v = n01(rng);
  p.bytes = testing::Encode(p.values, dtype);
  return p;
}

Selection MakeSelection(const Prompt& p) {
  StreamingOptions so;
  so.sink_tokens = 4;
  so.recent_tokens = 40;
  auto s = SelectStreaming(so, p.layout.num_layers, p.layout.num_kv_heads, p.T);
  KVTIER_CHECK_OK(s.status());
  // Give each (layer, head) its own positions: drop a head-dependent token of the recent window.
  Selection sel = *s;
  sel.kept_per_layer.assign(p.layout.num_layers, 43);
  sel.positions.clear();
  for (uint32_t l = 0; l < p.layout.num_layers; ++l) {
    for (uint32_t h = 0; h < p.layout.num_kv_heads; ++h) {
      auto kept = s->Kept(l, h);
      for (size_t i = 0; i < kept.size(); ++i) {
        if (i != 5 + l + h) sel.positions.push_back(kept[i]);
      }
    }
  }
  KVTIER_CHECK_OK(sel.Validate());
  return sel;
}

CompactedSource Source(const Prompt& p) {
  CompactedSource src;
  src.kv = p.bytes.data();
  src.layout = p.layout;
  src.num_tokens = p.T;
  return src;
}

float ToFloat(DType dtype, const uint8_t* p) {
  if (dtype == DType::kFloat32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  uint16_t b;
  std::memcpy(&b, p, 2);
  if (dtype == DType::kBFloat16) {
    uint32_t x = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
  }
  // fp16 normal/zero only (test data)
  const uint32_t sign = uint32_t(b & 0x8000u) << 16, e = (b >> 10) & 0x1F, m = b & 0x3FF;
  uint32_t x = e == 0 ? sign : sign | ((e + 112) << 23) | (m << 13);
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

// Relative L2 error of the decoded kept vectors against the source.
double RelativeError(const Prompt& p, const Selection& sel, const CompactedContext& c) {
  const uint32_t D = p.layout.head_dim, H = p.layout.num_kv_heads;
  const size_t es = DTypeSize(p.layout.dtype);
  double err = 0, ref = 0;
  for (uint32_t l = 0; l < p.layout.num_layers; ++l) {
    for (uint32_t kv = 0; kv < 2; ++kv) {
      for (uint32_t h = 0; h < H; ++h) {
        auto kept = sel.Kept(l, h);
        for (uint32_t i = 0; i < kept.size(); ++i) {
          const uint8_t* got = c.Vector(l, kv, h, i);
          const size_t src = (((size_t(l) * 2 + kv) * H + h) * p.T + kept[i]) * D;
          for (uint32_t d = 0; d < D; ++d) {
            const float want = ToFloat(p.layout.dtype, p.bytes.data() + (src + d) * es);
            const float g = ToFloat(p.layout.dtype, got + d * es);
            err += double(g - want) * (g - want);
            ref += double(want) * want;
          }
        }
      }
    }
  }
  return std::sqrt(err / ref);
}

TEST(CompactedTest, RawRoundTripIsExact) {
  for (DType dtype : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    Prompt p = MakePrompt(dtype, 3, 2, 8, 64, 100);
    Selection sel = MakeSelection(p);
    std::vector<uint8_t> payload;
    ASSERT_TRUE(EncodeCompacted(CodecParams{}, Source(p), sel, &payload).ok());
    ASSERT_TRUE(IsCompactedPayload(payload));
    auto info = InspectCompacted(payload);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->format_version, 1);
    EXPECT_EQ(info->layout, p.layout);
    EXPECT_EQ(info->source_tokens, 100u);
    EXPECT_TRUE(info->ends_sequence);
    EXPECT_EQ(info->kept_per_layer, sel.kept_per_layer);
    EXPECT_EQ(info->header_bytes + info->body_bytes, payload.size());
    auto c = DecodeCompacted(payload);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->selection.positions, sel.positions);
    EXPECT_EQ(RelativeError(p, sel, *c), 0.0);
  }
}

TEST(CompactedTest, QuantizedInnerCodecsRoundTrip) {
  Prompt p = MakePrompt(DType::kFloat16, 2, 2, 8, 128, 96);
  Selection sel = MakeSelection(p);
  std::vector<uint8_t> raw;
  ASSERT_TRUE(EncodeCompacted(CodecParams{}, Source(p), sel, &raw).ok());
  struct Case {
    const char* text;
    double max_error;
  };
  for (const Case& cs : {Case{"fp8", 0.08}, Case{"kivi:b=4,g=32", 0.25},
                         Case{"kivi:b=2,g=32", 0.8}, Case{"turboquant:b=4", 0.2}}) {
    auto params = CodecParams::Parse(cs.text);
    ASSERT_TRUE(params.ok()) << cs.text << ": " << params.status();
    std::vector<uint8_t> payload;
    auto st = EncodeCompacted(*params, Source(p), sel, &payload);
    ASSERT_TRUE(st.ok()) << cs.text << ": " << st;
    EXPECT_LT(payload.size(), raw.size()) << cs.text;
    auto info = InspectCompacted(payload);
    ASSERT_TRUE(info.ok());
    EXPECT_TRUE(info->inner_codec == *params) << cs.text;
    auto c = DecodeCompacted(payload);
    ASSERT_TRUE(c.ok()) << cs.text << ": " << c.status();
    EXPECT_EQ(c->selection.positions, sel.positions);
    const double e = RelativeError(p, sel, *c);
    EXPECT_GT(e, 0.0) << cs.text;
    EXPECT_LT(e, cs.max_error) << cs.text;
  }
}

TEST(CompactedTest, SnapKvSelectionEndToEnd) {
  // Select with PyramidKV from keys and window queries, compact the prompt's K/V with fp8, decode.
  const uint32_t L = 3, H = 2, Hq = 8, D = 64, T = 300, W = 16;
  Prompt p = MakePrompt(DType::kFloat16, L, H, Hq, D, T);
  std::vector<float> keys(size_t(L) * H * T * D);
  for (uint32_t l = 0; l < L; ++l) {  // K of the canonical layout, as [L][H][T][D]
    std::copy_n(p.values.begin() + size_t(l) * 2 * H * T * D, size_t(H) * T * D,
                keys.begin() + size_t(l) * H * T * D);
  }
  std::mt19937 rng(8);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::vector<float> queries(size_t(L) * Hq * W * D);
  for (float& x : queries) x = n01(rng);
  auto kb = testing::Encode(keys, DType::kFloat16), qb = testing::Encode(queries, DType::kFloat16);
  SelectionInput in;
  in.keys = kb.data();
  in.queries = qb.data();
  in.num_layers = L;
  in.num_kv_heads = H;
  in.num_query_heads = Hq;
  in.head_dim = D;
  in.num_tokens = T;
  in.num_queries = W;
  SnapKvOptions o = SnapKvOptions::PyramidKv();
  o.window = W;
  o.budget = 80;
  auto sel = SelectSnapKv(o, in);
  ASSERT_TRUE(sel.ok()) << sel.status();
  auto fp8 = CodecParams::Parse("fp8");
  ASSERT_TRUE(fp8.ok());
  std::vector<uint8_t> payload;
  ASSERT_TRUE(EncodeCompacted(*fp8, Source(p), *sel, &payload).ok());
  auto c = DecodeCompacted(payload);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->selection.kept_per_layer, sel->kept_per_layer);
  EXPECT_EQ(c->selection.positions, sel->positions);
  EXPECT_LT(RelativeError(p, *sel, *c), 0.08);
  EXPECT_EQ(c->kv.size(), c->LayerOffset(L));
}

TEST(CompactedTest, RejectsMismatchedInputs) {
  Prompt p = MakePrompt(DType::kFloat16, 2, 2, 4, 32, 60);
  Selection sel = MakeSelection(p);
  std::vector<uint8_t> payload;
  CompactedSource src = Source(p);
  src.num_tokens = 61;
  auto st = EncodeCompacted(CodecParams{}, src, sel, &payload);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("does not match the source"));
  Selection broken = sel;
  std::swap(broken.positions[0], broken.positions[1]);
  EXPECT_EQ(EncodeCompacted(CodecParams{}, Source(p), broken, &payload).code(),
            absl::StatusCode::kInvalidArgument);
  CodecParams latent;
  latent.id = CodecId::kLatent;
  EXPECT_FALSE(EncodeCompacted(latent, Source(p), sel, &payload).ok());
}

// Rewrites the header CRC after a deliberate header edit.
void ResealHeader(std::vector<uint8_t>* p) {
  uint32_t hb;
  std::memcpy(&hb, p->data() + 8, 4);
  const uint32_t crc = Crc32c(p->data(), hb - 4);
  std::memcpy(p->data() + hb - 4, &crc, 4);
}

TEST(CompactedTest, RejectsMalformedPayloads) {
  Prompt p = MakePrompt(DType::kFloat16, 2, 2, 4, 32, 60);
  Selection sel = MakeSelection(p);
  std::vector<uint8_t> good;
  ASSERT_TRUE(EncodeCompacted(CodecParams{}, Source(p), sel, &good).ok());
  auto info = InspectCompacted(good);
  ASSERT_TRUE(info.ok());

  EXPECT_EQ(InspectCompacted({}).status().code(), absl::StatusCode::kInvalidArgument);
  auto bad_magic = good;
  bad_magic[0] ^= 1;
  EXPECT_FALSE(IsCompactedPayload(bad_magic));
  EXPECT_THAT(InspectCompacted(bad_magic).status().message(), HasSubstr("bad magic"));
  for (size_t cut : {size_t(10), info->header_bytes - 1, info->header_bytes + 5, good.size() - 1}) {
    auto t = good;
    t.resize(cut);
    EXPECT_EQ(DecodeCompacted(t).status().code(), absl::StatusCode::kInvalidArgument) << cut;
  }
  auto header_flip = good;
  header_flip[37] ^= 0x10;  // source_tokens
  EXPECT_EQ(InspectCompacted(header_flip).status().code(), absl::StatusCode::kDataLoss);
  auto body_flip = good;
  body_flip[info->header_bytes + 3] ^= 0x01;
  EXPECT_EQ(DecodeCompacted(body_flip).status().code(), absl::StatusCode::kDataLoss);
  auto newer = good;
  newer[4] = 2;
  ResealHeader(&newer);
  EXPECT_EQ(InspectCompacted(newer).status().code(), absl::StatusCode::kUnimplemented);
  auto too_many = good;
  const uint32_t k = 61;  // kept > source tokens
  std::memcpy(too_many.data() + 64, &k, 4);
  ResealHeader(&too_many);
  EXPECT_THAT(InspectCompacted(too_many).status().message(), HasSubstr("keeps 61 of 60"));

  // Body edits with a valid CRC: positions out of order, then an inner payload cut short.
  auto reseal_body = [&](std::vector<uint8_t>* q) {
    const uint32_t crc = Crc32c(q->data() + info->header_bytes, q->size() - info->header_bytes);
    std::memcpy(q->data() + 56, &crc, 4);
    ResealHeader(q);
  };
  auto order = good;
  std::swap_ranges(order.begin() + info->header_bytes, order.begin() + info->header_bytes + 4,
                   order.begin() + info->header_bytes + 4);
  reseal_body(&order);
  EXPECT_EQ(DecodeCompacted(order).status().code(), absl::StatusCode::kInvalidArgument);
  auto inner_len = good;
  const size_t len_at = info->header_bytes + 4 * 2 * 43;
  uint64_t len;
  std::memcpy(&len, inner_len.data() + len_at, 8);
  len += 1000000;
  std::memcpy(inner_len.data() + len_at, &len, 8);
  reseal_body(&inner_len);
  EXPECT_THAT(DecodeCompacted(inner_len).status().message(), HasSubstr("overruns the body"));

  // Random single-byte corruption anywhere: always an error, never a crash.
  std::mt19937 rng(3);
  for (int i = 0; i < 300; ++i) {
    auto q = good;
    const size_t at = rng() % q.size();
    q[at] ^= uint8_t(1 + rng() % 255);
    EXPECT_FALSE(DecodeCompacted(q).ok()) << "byte " << at;
  }
}

}  // namespace
}  // namespace kvtier::kernels
