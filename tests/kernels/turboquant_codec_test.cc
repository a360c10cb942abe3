// CPU tests of the TurboQuant chunk codec (CodecImpl level): body sizes, round trips of MHA and
// MLA chunks in every dtype, the outlier splits, strided/paged decode, and rejected inputs.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "codecs/numeric.h"
#include "kvtier/common/crc32c.h"
#include "turboquant/tq_codec.h"

namespace kvtier::kernels::internal {
namespace {

// GQA with 4 query heads per KV head (KvLayout::Mha with the group size fixed).
KvLayout Mha(uint32_t layers, uint32_t heads, uint32_t dim, DType dt = DType::kFloat16) {
  return KvLayout::Mha(layers, heads, heads * 4, dim, dt);
}

KvLayout Mla(uint32_t layers, uint32_t latent, uint32_t rope) {
  return KvLayout::Mla(layers, latent, rope, DType::kFloat16);
}

CodecParams Tq(uint8_t bits, TurboQuantVariant v = TurboQuantVariant::kMse,
               TurboQuantRotation r = TurboQuantRotation::kHadamard,
               TurboQuantSplit s = TurboQuantSplit::kNone,
               TurboQuantQjl qjl = TurboQuantQjl::kGaussian) {
  CodecParams p;
  p.id = CodecId::kTurboQuant;
  p.bits = bits;
  p.tq_variant = v;
  p.tq_rotation = r;
  p.tq_split = s;
  p.tq_qjl = qjl;
  p.seed = 42;
  return p;
}

size_t Elems(const KvLayout& l, uint32_t T) {
  const size_t per = l.kind == LayoutKind::kMha ? 2ull * l.num_layers * l.num_kv_heads * l.head_dim
                                                : size_t{l.num_layers} * (l.latent_dim + l.rope_dim);
  return per * T;
}

// Random data with 4 loud channels per vector (as real keys have), stored in `dt`.
std::vector<uint8_t> MakeInput(const KvLayout& l, uint32_t T, std::vector<float>* ref,
                               uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0, 1);
  const size_t count = Elems(l, T);
  const uint32_t W = l.VectorDim();
  const size_t es = l.dtype == DType::kFloat32 ? 4 : 2;
  std::vector<uint8_t> bytes(count * es);
  ref->resize(count);
  for (size_t i = 0; i < count; ++i) {
    float x = n(rng);
    if (i % W == 5 || i % W == 17 || i % W == 64 || i % W == 100) x = 10.0f * x + 3.0f;
    uint16_t h;
    switch (l.dtype) {
      case DType::kFloat16:
        h = FloatToHalf(x);
        std::memcpy(&bytes[2 * i], &h, 2);
        x = HalfToFloat(h);
        break;
      case DType::kBFloat16:
        h = FloatToBf16(x);
        std::memcpy(&bytes[2 * i], &h, 2);
        x = Bf16ToFloat(h);
        break;
      default:
        std::memcpy(&bytes[4 * i], &x, 4);
    }
    (*ref)[i] = x;
  }
  return bytes;
}

float Get(const uint8_t* p, DType dt) {
  uint16_t h;
  switch (dt) {
    case DType::kFloat16:
      std::memcpy(&h, p, 2);
      return HalfToFloat(h);
    case DType::kBFloat16:
      std::memcpy(&h, p, 2);
      return Bf16ToFloat(h);
    default: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
  }
}

DecodeTarget Contiguous(uint8_t* base, const KvLayout& l, uint32_t T) {
  DecodeTarget t;
  const size_t es = l.dtype == DType::kFloat32 ? 4 : 2;
  const size_t W = l.VectorDim();
  t.dtype = l.dtype;
  t.stride_token = W * es;
  if (l.kind == LayoutKind::kMha) {
    t.stride_head = T * W * es;
    t.stride_kv = t.stride_head * l.num_kv_heads;
  }
  const size_t layer_bytes = Elems(l, T) / l.num_layers * es;
  for (uint32_t i = 0; i < l.num_layers; ++i) t.layer_base.push_back(base + i * layer_bytes);
  return t;
}

// A 1-layer, 2-KV-head, head_dim-128, 8-token fp16 chunk (seed 9) for the qjl header tests.
struct SmallChunk {
  KvLayout l = KvLayout::Mha(1, 2, 2, 128);
  uint32_t T = 8;
  std::vector<float> ref;
  std::vector<uint8_t> in = MakeInput(l, T, &ref, 9);
};

// The whole of `in` as a host chunk for the public Encode().
ChunkInput HostChunk(const std::vector<uint8_t>& in, const KvLayout& l, uint32_t T) {
  ChunkInput input;
  input.data = in.data();
  input.layout = l;
  input.num_tokens = T;
  return input;
}

// Relative error ||x - y|| / ||x|| over the whole chunk.
double RoundTrip(const CodecParams& p, const KvLayout& l, uint32_t T,
                 std::vector<uint8_t>* body_out = nullptr) {
  std::vector<float> ref;
  auto in = MakeInput(l, T, &ref);
  ChunkShape shape{l, T, 0, false};
  const CodecImpl& c = TurboQuantCodec();
  EXPECT_TRUE(c.CheckCompatible(p, shape).ok());
  std::vector<uint8_t> body(c.BodySize(p, shape));
  EXPECT_TRUE(c.EncodeHost(p, shape, in.data(), absl::MakeSpan(body)).ok());
  std::vector<uint8_t> out(in.size(), 0xAB);
  EXPECT_TRUE(c.DecodeHost(p, shape, body, Contiguous(out.data(), l, T)).ok());
  const size_t es = l.dtype == DType::kFloat32 ? 4 : 2;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = Get(&out[i * es], l.dtype) - ref[i];
    num += d * d;
    den += double(ref[i]) * ref[i];
  }
  if (body_out) *body_out = body;
  return std::sqrt(num / den);
}

TEST(TurboQuantCodecTest, BodySizeMatchesTheFormula) {
  const KvLayout l = Mha(2, 2, 128);
  const ChunkShape shape{l, 16, 0, false};
  const uint64_t vectors = 2 * 2 * 2 * 16;
  const CodecImpl& c = TurboQuantCodec();
  for (uint8_t b = 1; b <= 4; ++b) {
    // mse: fp16 norm + 16*b bytes per vector; prod: + gamma, (b-1)*16 + 16 bytes of codes.
    EXPECT_EQ(c.BodySize(Tq(b), shape), vectors * 2 + vectors * 16 * b);
    EXPECT_EQ(c.BodySize(Tq(b, TurboQuantVariant::kProd), shape), vectors * 4 + vectors * 16 * b);
  }
  // 2.5: masks + 2 norms + 12 + 24 bytes; 3.5: masks + 2 norms + 32 + 24 bytes.
  EXPECT_EQ(c.BodySize(Tq(2, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard,
                          TurboQuantSplit::k2p5), shape),
            8 * 16 + vectors * 4 + vectors * 36);
  EXPECT_EQ(c.BodySize(Tq(3, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard,
                          TurboQuantSplit::k3p5), shape),
            8 * 16 + vectors * 4 + vectors * 56);
}

TEST(TurboQuantCodecTest, RoundTripErrorShrinksWithBits) {
  for (auto rot : {TurboQuantRotation::kHadamard, TurboQuantRotation::kDense}) {
    double prev = 10;
    for (uint8_t b = 1; b <= 4; ++b) {
      const double e = RoundTrip(Tq(b, TurboQuantVariant::kMse, rot), Mha(2, 2, 128), 32);
      // sqrt(D_mse): 0.60, 0.34, 0.18, 0.10; fp16 norms and fp16 output add little.
      const double want[4] = {0.60, 0.34, 0.185, 0.097};
      EXPECT_NEAR(e, want[b - 1], 0.1 * want[b - 1]) << int(b);
      EXPECT_LT(e, prev);
      prev = e;
    }
  }
}

TEST(TurboQuantCodecTest, EveryDtypeAndVariantRoundTrips) {
  for (DType dt : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    for (auto v : {TurboQuantVariant::kMse, TurboQuantVariant::kProd}) {
      const double e = RoundTrip(Tq(4, v), Mha(1, 2, 64, dt), 8);
      EXPECT_LT(e, v == TurboQuantVariant::kMse ? 0.12 : 0.3) << int(dt);
    }
  }
}

TEST(TurboQuantCodecTest, SplitsStoreTheLoudestChannelsAndBeatTheirBaseBits) {
  const KvLayout l = Mha(1, 2, 128);
  std::vector<uint8_t> body;
  const double e25 = RoundTrip(Tq(2, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard,
                                  TurboQuantSplit::k2p5), l, 64, &body);
  // Channels 5, 17, 64 and 100 are loud in every stream: all four are in each mask.
  for (int s = 0; s < 4; ++s) {
    const uint8_t* m = &body[s * 16];
    int bits = 0;
    for (int i = 0; i < 16; ++i) bits += __builtin_popcount(m[i]);
    EXPECT_EQ(bits, 32);
    for (int c : {5, 17, 64, 100}) EXPECT_TRUE((m[c / 8] >> (c % 8)) & 1) << c;
  }
  const double e2 = RoundTrip(Tq(2), l, 64);
  const double e3 = RoundTrip(Tq(3), l, 64);
  EXPECT_LT(e25, e2);
  EXPECT_GT(e25, e3 * 0.8);
  const double e35 = RoundTrip(Tq(3, TurboQuantVariant::kMse, TurboQuantRotation::kDense,
                                  TurboQuantSplit::k3p5), l, 64);
  EXPECT_LT(e35, e3);
  // prod variant of a split also works.
  EXPECT_LT(RoundTrip(Tq(3, TurboQuantVariant::kProd, TurboQuantRotation::kHadamard,
                         TurboQuantSplit::k3p5), l, 64),
            0.35);
}

TEST(TurboQuantCodecTest, MlaLatentAndRopeParts) {
  const double e = RoundTrip(Tq(4), Mla(2, 512, 64), 8);
  EXPECT_LT(e, 0.12);
  EXPECT_LT(RoundTrip(Tq(3, TurboQuantVariant::kMse, TurboQuantRotation::kDense), Mla(1, 96, 0),
                      4),
            0.22);
}

TEST(TurboQuantCodecTest, DeterministicAndSeeded) {
  std::vector<uint8_t> a, b, c;
  RoundTrip(Tq(3, TurboQuantVariant::kProd), Mha(1, 1, 128), 8, &a);
  RoundTrip(Tq(3, TurboQuantVariant::kProd), Mha(1, 1, 128), 8, &b);
  CodecParams p = Tq(3, TurboQuantVariant::kProd);
  p.seed = 43;
  RoundTrip(p, Mha(1, 1, 128), 8, &c);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(TurboQuantCodecTest, StridedAndPagedDecodeMatchContiguous) {
  const KvLayout l = Mha(2, 2, 128);
  const uint32_t T = 12;
  std::vector<float> ref;
  auto in = MakeInput(l, T, &ref, 5);
  const ChunkShape shape{l, T, 0, false};
  const CodecParams p = Tq(3, TurboQuantVariant::kProd, TurboQuantRotation::kDense);
  const CodecImpl& c = TurboQuantCodec();
  std::vector<uint8_t> body(c.BodySize(p, shape));
  ASSERT_TRUE(c.EncodeHost(p, shape, in.data(), absl::MakeSpan(body)).ok());
  std::vector<uint8_t> flat(in.size());
  ASSERT_TRUE(c.DecodeHost(p, shape, body, Contiguous(flat.data(), l, T)).ok());
  // Paged: blocks of 4 tokens, [block][token][head][K|V-interleaved dim] engine-style strides,
  // blocks scattered in reverse order with a gap.
  const uint32_t bs = 4;
  const int32_t table[3] = {5, 2, 0};
  const int64_t st_tok = 2 * 2 * 128 * 2 + 32;  // padded token row
  const int64_t st_block = bs * st_tok;
  std::vector<uint8_t> pool(2 * 6 * st_block, 0xCD);
  DecodeTarget t;
  t.dtype = l.dtype;
  t.stride_token = st_tok;
  t.stride_head = 2 * 128 * 2;
  t.stride_kv = 128 * 2;
  t.block_table = table;
  t.block_size = bs;
  t.stride_block = st_block;
  t.layer_base = {pool.data(), pool.data() + 6 * st_block};
  ASSERT_TRUE(c.DecodeHost(p, shape, body, t).ok());
  for (uint32_t layer = 0; layer < 2; ++layer) {
    for (uint32_t kv = 0; kv < 2; ++kv) {
      for (uint32_t h = 0; h < 2; ++h) {
        for (uint32_t tok = 0; tok < T; ++tok) {
          const uint8_t* got = pool.data() + layer * 6 * st_block + table[tok / bs] * st_block +
                               (tok % bs) * st_tok + h * t.stride_head + kv * t.stride_kv;
          const uint8_t* want = flat.data() + ((((layer * 2 + kv) * 2 + h) * T + tok) * 128) * 2;
          ASSERT_EQ(std::memcmp(got, want, 256), 0) << layer << kv << h << tok;
        }
      }
    }
  }
}

TEST(TurboQuantCodecTest, RejectsIncompatibleShapesAndBadBodies) {
  const CodecImpl& c = TurboQuantCodec();
  // Splits need MHA head_dim 128.
  EXPECT_FALSE(c.CheckCompatible(Tq(2, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard,
                                    TurboQuantSplit::k2p5),
                                 ChunkShape{Mha(1, 1, 64), 4, 0, false})
                   .ok());
  EXPECT_FALSE(c.CheckCompatible(Tq(3, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard,
                                    TurboQuantSplit::k3p5),
                                 ChunkShape{Mla(1, 512, 64), 4, 0, false})
                   .ok());
  EXPECT_FALSE(c.CheckCompatible(Tq(2), ChunkShape{Mha(1, 1, 4), 4, 0, false}).ok());
  EXPECT_FALSE(c.CheckCompatible(Tq(2), ChunkShape{Mla(1, 512, 4), 4, 0, false}).ok());
  // Wrong body size, wrong target dtype, a mask with the wrong number of channels.
  const KvLayout l = Mha(1, 1, 128);
  const ChunkShape shape{l, 4, 0, false};
  const CodecParams p = Tq(2, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard,
                           TurboQuantSplit::k2p5);
  std::vector<float> ref;
  auto in = MakeInput(l, 4, &ref);
  std::vector<uint8_t> body(c.BodySize(p, shape)), out(in.size());
  ASSERT_TRUE(c.EncodeHost(p, shape, in.data(), absl::MakeSpan(body)).ok());
  EXPECT_FALSE(c.EncodeHost(p, shape, in.data(), absl::MakeSpan(body.data(), body.size() - 1)).ok());
  EXPECT_FALSE(c.DecodeHost(p, shape, absl::MakeSpan(body.data(), body.size() - 1),
                            Contiguous(out.data(), l, 4))
                   .ok());
  DecodeTarget bad = Contiguous(out.data(), l, 4);
  bad.dtype = DType::kBFloat16;
  EXPECT_FALSE(c.DecodeHost(p, shape, body, bad).ok());
  body[0] ^= 0x01;  // 31 or 33 outlier channels
  EXPECT_EQ(c.DecodeHost(p, shape, body, Contiguous(out.data(), l, 4)).code(),
            absl::StatusCode::kInvalidArgument);
}

// qjl=hadamard through the chunk codec: every dtype, MHA and MLA (parts of 96 and 32 channels:
// non-power-of-two chains), with the lower distortion its orthogonal rows give.
TEST(TurboQuantCodecTest, StructuredQjlRoundTripsWithLessErrorThanGaussian) {
  const auto prod = TurboQuantVariant::kProd;
  for (DType dt : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    for (uint8_t b : {1, 2, 3}) {
      for (auto rot : {TurboQuantRotation::kHadamard, TurboQuantRotation::kDense}) {
        const KvLayout l = Mha(1, 2, 128, dt);
        const double eh =
            RoundTrip(Tq(b, prod, rot, TurboQuantSplit::kNone, TurboQuantQjl::kHadamard), l, 32);
        const double eg =
            RoundTrip(Tq(b, prod, rot, TurboQuantSplit::kNone, TurboQuantQjl::kGaussian), l, 32);
        EXPECT_LT(eh, eg) << int(dt) << " b=" << int(b) << " rot=" << int(rot);
      }
    }
  }
  const double mla = RoundTrip(Tq(3, prod, TurboQuantRotation::kHadamard, TurboQuantSplit::kNone,
                                  TurboQuantQjl::kHadamard),
                               Mla(2, 96, 32), 16);
  EXPECT_LT(mla, 0.35);
}

// Header byte 19 carries the projection; 0 (every payload written before it existed) decodes
// with the Gaussian matrix exactly as before, 1 with the structured chain.
TEST(TurboQuantCodecTest, QjlHeaderByteSelectsTheProjection) {
  const SmallChunk c;
  const KvLayout& l = c.l;
  const ChunkInput input = HostChunk(c.in, l, c.T);
  std::vector<uint8_t> gauss, had;
  ASSERT_TRUE(Encode(
      *CodecParams::Parse("turboquant:b=3,variant=prod,qjl=gaussian,matrix=float,seed=4"), input,
      &gauss).ok());
  ASSERT_TRUE(Encode(*CodecParams::Parse("turboquant:b=3,variant=prod,seed=4"), input, &had).ok());
  EXPECT_EQ(gauss[19], 0);
  EXPECT_EQ(had[19], 1);
  ASSERT_EQ(gauss.size(), had.size());
  EXPECT_NE(gauss, had);
  const ChunkShape shape{l, c.T, 0, false};
  CodecParams gp = Tq(3, TurboQuantVariant::kProd);
  gp.seed = 4;
  CodecParams hp = gp;
  hp.tq_qjl = TurboQuantQjl::kHadamard;
  auto decode = [&](const std::vector<uint8_t>& payload) {
    std::vector<uint8_t> out(c.in.size());
    EXPECT_TRUE(Decode(payload, DecodeTarget::Contiguous(out.data(), l, c.T)).ok());
    return out;
  };
  auto direct = [&](const CodecParams& p, const std::vector<uint8_t>& payload) {
    std::vector<uint8_t> out(c.in.size());
    EXPECT_TRUE(TurboQuantCodec()
                    .DecodeHost(p, shape, absl::MakeConstSpan(payload).subspan(96),
                                Contiguous(out.data(), l, c.T))
                    .ok());
    return out;
  };
  EXPECT_EQ(decode(gauss), direct(gp, gauss));
  EXPECT_EQ(decode(had), direct(hp, had));
  // The Gaussian body with the byte set to 1 (header CRC fixed): read with the structured chain.
  auto flipped = gauss;
  flipped[19] = 1;
  const uint32_t crc = Crc32c(flipped.data(), 92);
  std::memcpy(&flipped[92], &crc, 4);
  EXPECT_EQ(decode(flipped), direct(hp, gauss));
  EXPECT_NE(decode(flipped), decode(gauss));
  flipped[19] = 2;
  const uint32_t crc2 = Crc32c(flipped.data(), 92);
  std::memcpy(&flipped[92], &crc2, 4);
  std::vector<uint8_t> out(c.in.size());
  EXPECT_EQ(Decode(flipped, DecodeTarget::Contiguous(out.data(), l, c.T)).code(),
            absl::StatusCode::kInvalidArgument);
}

// Gaussian-QJL payloads are byte for byte what the codec wrote before the qjl parameter existed:
// body checksums taken from a build of the commit before it (bfe9b9d), same input and seed.
TEST(TurboQuantCodecTest, GaussianQjlBodiesAreUnchanged) {
  const SmallChunk c;
  const KvLayout& l = c.l;
  const ChunkInput input = HostChunk(c.in, l, c.T);
  const struct {
    const char* text;
    size_t size;
    uint32_t body_crc;
  } golden[] = {
      {"turboquant:b=3,variant=prod,qjl=gaussian,matrix=float,seed=4", 1760, 0x47048C08u},
      {"turboquant:b=1,variant=prod,rotation=dense,matrix=float,seed=4", 736, 0xE2A0548Au},
      {"turboquant:b=2,variant=prod,split=2.5,qjl=gaussian,matrix=float,seed=4", 1568,
       0xD1E751E5u}};
  for (const auto& g : golden) {
    SCOPED_TRACE(g.text);
    std::vector<uint8_t> p;
    ASSERT_TRUE(Encode(*CodecParams::Parse(g.text), input, &p).ok());
    ASSERT_EQ(p.size(), g.size);
    EXPECT_EQ(p[19], 0);
    EXPECT_EQ(p[30], 0);  // binary32 matrices
    EXPECT_EQ(Crc32c(p.data() + 96, p.size() - 96), g.body_crc);
  }
}

// Fixed-point matrix bodies (header byte 30 = 1): checksums of this implementation's output,
// which TurboQuantFixedTest checks vector by vector against an independent int64 evaluation of
// docs/FORMAT.md; they pin the chunk-level layout and arithmetic against later changes. The
// fp32 chunk (inputs never on a binary16 grid) is there because small fp16 chunks can happen to
// give the same bytes under both arithmetics.
TEST(TurboQuantCodecTest, FixedMatrixGoldenBodies) {
  const SmallChunk c;
  const KvLayout l32 = KvLayout::Mha(1, 2, 2, 128, DType::kFloat32);
  std::vector<float> ref32;
  const auto in32 = MakeInput(l32, 8, &ref32, 9);
  const struct {
    const char* text;
    bool fp32;
    size_t size;
    uint32_t body_crc;
  } golden[] = {
      {"turboquant:b=1,rotation=dense,seed=4", false, 672, 0xF60B4939u},
      {"turboquant:b=2,rotation=dense,seed=4", false, 1184, 0x9FEEB440u},
      {"turboquant:b=3,rotation=dense,seed=4", false, 1696, 0xD945F6FBu},
      {"turboquant:b=4,rotation=dense,seed=4", false, 2208, 0xAC90FD0Au},
      {"turboquant:b=2,variant=prod,rotation=dense,seed=4", false, 1248, 0x3DB28FA8u},
      {"turboquant:b=3,variant=prod,rotation=dense,seed=4", false, 1760, 0x9F48BA78u},
      {"turboquant:b=4,variant=prod,rotation=dense,seed=4", false, 2272, 0x85E5DB82u},
      // Hadamard rotation, fixed QJL: every sign of this chunk agrees with the binary32
      // sketch's (GaussianQjlBodiesAreUnchanged has the same checksum): no sketch coordinate is
      // near enough to 0 for the two arithmetics to differ.
      {"turboquant:b=3,variant=prod,qjl=gaussian,seed=4", false, 1760, 0x47048C08u},
      {"turboquant:b=3,variant=prod,rotation=dense,seed=4", true, 1760, 0xFAC60A47u},
      {"turboquant:b=4,rotation=dense,seed=4", true, 2208, 0x047A9205u},
  };
  for (const auto& g : golden) {
    SCOPED_TRACE(testing::Message() << g.text << (g.fp32 ? " fp32" : " fp16"));
    const ChunkInput input = g.fp32 ? HostChunk(in32, l32, 8) : HostChunk(c.in, c.l, c.T);
    auto params = CodecParams::Parse(g.text);
    ASSERT_TRUE(params.ok());
    ASSERT_EQ(params->tq_matrix, TurboQuantMatrix::kFixed);
    std::vector<uint8_t> p;
    ASSERT_TRUE(Encode(*params, input, &p).ok());
    EXPECT_EQ(p[30], 1);
    EXPECT_EQ(p[31], 0);
    ASSERT_EQ(p.size(), g.size);
    EXPECT_EQ(Crc32c(p.data() + 96, p.size() - 96), g.body_crc);
    // The same codec with binary32 matrices: decodes differ (fp32 chunk) or at least both decode.
    CodecParams fl = *params;
    fl.tq_matrix = TurboQuantMatrix::kFloat;
    std::vector<uint8_t> pf;
    ASSERT_TRUE(Encode(fl, input, &pf).ok());
    EXPECT_EQ(pf[30], 0);
    if (g.fp32) {
      std::vector<uint8_t> a(in32.size()), b(in32.size());
      ASSERT_TRUE(Decode(p, DecodeTarget::Contiguous(a.data(), l32, 8)).ok());
      ASSERT_TRUE(Decode(pf, DecodeTarget::Contiguous(b.data(), l32, 8)).ok());
      EXPECT_NE(a, b);
    }
  }
}

// Header byte 30 (matrix arithmetic): read back into CodecParams, selects the decode
// arithmetic, and is rejected where it cannot apply.
TEST(TurboQuantCodecTest, MatrixHeaderByteSelectsTheArithmetic) {
  const KvLayout l = KvLayout::Mha(1, 2, 2, 128, DType::kFloat32);
  const uint32_t T = 8;
  std::vector<float> ref;
  const auto in = MakeInput(l, T, &ref, 9);
  const ChunkInput input = HostChunk(in, l, T);
  const ChunkShape shape{l, T, 0, false};
  std::vector<uint8_t> fixed, hadamard;
  const CodecParams fp = *CodecParams::Parse("turboquant:b=3,variant=prod,rotation=dense,seed=4");
  ASSERT_TRUE(Encode(fp, input, &fixed).ok());
  ASSERT_TRUE(Encode(*CodecParams::Parse("turboquant:b=3,seed=4"), input, &hadamard).ok());
  EXPECT_EQ(fixed[30], 1);
  EXPECT_EQ(hadamard[30], 0);
  auto info = InspectPayload(fixed);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->codec.tq_matrix, TurboQuantMatrix::kFixed);
  EXPECT_EQ(info->codec, fp);
  auto direct = [&](const CodecParams& p, const std::vector<uint8_t>& payload) {
    std::vector<uint8_t> out(in.size());
    EXPECT_TRUE(TurboQuantCodec()
                    .DecodeHost(p, shape, absl::MakeConstSpan(payload).subspan(96),
                                Contiguous(out.data(), l, T))
                    .ok());
    return out;
  };
  auto decode = [&](const std::vector<uint8_t>& payload, absl::Status* st = nullptr) {
    std::vector<uint8_t> out(in.size(), 0xAB);
    const absl::Status s = Decode(payload, DecodeTarget::Contiguous(out.data(), l, T));
    if (st) *st = s;
    EXPECT_TRUE(st != nullptr || s.ok()) << s;
    return out;
  };
  auto with = [](std::vector<uint8_t> p, size_t at, uint8_t v) {
    p[at] = v;
    const uint32_t crc = Crc32c(p.data(), 92);
    std::memcpy(&p[92], &crc, 4);
    return p;
  };
  EXPECT_EQ(decode(fixed), direct(fp, fixed));
  // The same body read as binary32: valid, decoded with the float arithmetic.
  CodecParams flt = fp;
  flt.tq_matrix = TurboQuantMatrix::kFloat;
  const auto as_float = with(fixed, 30, 0);
  EXPECT_EQ(decode(as_float), direct(flt, fixed));
  EXPECT_NE(decode(as_float), decode(fixed));
  // Values > 1, and 1 on a codec without a matrix, are InvalidArgument with a clear message.
  absl::Status st;
  decode(with(fixed, 30, 2), &st);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("unknown matrix arithmetic 2"), absl::string_view::npos) << st;
  decode(with(fixed, 30, 255), &st);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  decode(with(hadamard, 30, 1), &st);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("matrix=fixed"), absl::string_view::npos) << st;
  EXPECT_EQ(InspectPayload(with(fixed, 31, 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Crafted bodies (random codes and scalars, fp16 inf / NaN / 65504 norms and gammas) decode
// without fault and deterministically with fixed matrices: huge or NaN values go through q()'s
// clamp / NaN rule, the integer sums wrap modulo 2^32 (run under UBSan in the sanitizer build).
TEST(TurboQuantCodecTest, FixedMatricesDecodeCraftedBodies) {
  const KvLayout l = KvLayout::Mha(1, 1, 1, 128, DType::kFloat32);
  const uint32_t T = 16;
  const ChunkShape shape{l, T, 0, false};
  const CodecImpl& c = TurboQuantCodec();
  std::mt19937 rng(3);
  for (const char* text : {"turboquant:b=3,variant=prod,rotation=dense",
                           "turboquant:b=1,variant=prod,qjl=gaussian", "turboquant:b=4,rotation=dense"}) {
    SCOPED_TRACE(text);
    const CodecParams p = *CodecParams::Parse(text);
    ASSERT_EQ(p.tq_matrix, TurboQuantMatrix::kFixed);
    std::vector<uint8_t> body(c.BodySize(p, shape));
    for (auto& b : body) b = static_cast<uint8_t>(rng());
    const TqGeometry g = MakeTqPlan(p, shape)->g;
    const uint16_t special[] = {0x7C00, 0xFC00, 0x7E00, 0x7BFF, 0x0001, 0x0000};
    for (uint64_t k = 0; k < g.Vectors() * g.scalars_per_vector; ++k) {
      std::memcpy(body.data() + g.scalars_offset + 2 * k, &special[k % 6], 2);
    }
    std::vector<uint8_t> a(l.ChunkBytes(T)), b(a.size(), 0x11);
    ASSERT_TRUE(c.DecodeHost(p, shape, body, Contiguous(a.data(), l, T)).ok());
    ASSERT_TRUE(c.DecodeHost(p, shape, body, Contiguous(b.data(), l, T)).ok());
    EXPECT_EQ(a, b);
  }
}

// Fixed matrices round-trip chunks as well as the float ones (every dtype, MLA, split): the
// relative error of each case within 3% of the binary32 arithmetic's on the same chunk.
TEST(TurboQuantCodecTest, FixedMatricesRoundTripLikeFloat) {
  struct Case {
    CodecParams p;
    KvLayout l;
    uint32_t T;
  };
  std::vector<Case> cases;
  for (uint8_t b = 1; b <= 4; ++b) {
    cases.push_back({Tq(b, TurboQuantVariant::kMse, TurboQuantRotation::kDense), Mha(2, 2, 128), 32});
  }
  for (uint8_t b = 2; b <= 4; ++b) {
    cases.push_back({Tq(b, TurboQuantVariant::kProd, TurboQuantRotation::kDense), Mha(2, 2, 128), 32});
  }
  for (DType dt : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    cases.push_back({Tq(4, TurboQuantVariant::kProd, TurboQuantRotation::kDense), Mha(1, 2, 64, dt), 8});
    cases.push_back({Tq(3, TurboQuantVariant::kProd), Mha(1, 2, 64, dt), 8});  // fixed QJL only
  }
  cases.push_back({Tq(3, TurboQuantVariant::kProd, TurboQuantRotation::kDense), Mla(2, 96, 32), 8});
  cases.push_back({Tq(3, TurboQuantVariant::kProd, TurboQuantRotation::kDense, TurboQuantSplit::kNone,
                      TurboQuantQjl::kHadamard),
                   Mha(1, 2, 128), 16});  // fixed rotation, structured QJL
  cases.push_back({Tq(2, TurboQuantVariant::kMse, TurboQuantRotation::kDense, TurboQuantSplit::k2p5),
                   Mha(1, 2, 128), 16});
  for (Case& c : cases) {
    SCOPED_TRACE(c.p.ToString());
    const double e_float = RoundTrip(c.p, c.l, c.T);
    c.p.tq_matrix = TurboQuantMatrix::kFixed;
    const double e_fixed = RoundTrip(c.p, c.l, c.T);
    EXPECT_GT(e_float, 0.0);
    EXPECT_NEAR(e_fixed, e_float, 0.03 * e_float);
  }
}

// Through the public dispatcher (kvtier/kernels/codec.h): header, checksums, text form.
TEST(TurboQuantCodecTest, PublicEncodeDecodeRoundTrip) {
  const KvLayout l = KvLayout::Mha(2, 2, 8, 128);
  const uint32_t T = 16;
  std::vector<float> ref;
  const auto in = MakeInput(l, T, &ref, 3);
  for (const char* text : {"turboquant:b=3,variant=prod,rotation=dense,seed=5",
                           "turboquant:b=2,split=2.5", "turboquant:b=4"}) {
    SCOPED_TRACE(text);
    auto params = CodecParams::Parse(text);
    ASSERT_TRUE(params.ok()) << params.status();
    ChunkInput input;
    input.data = in.data();
    input.layout = l;
    input.num_tokens = T;
    std::vector<uint8_t> payload;
    ASSERT_TRUE(Encode(*params, input, &payload).ok());
    auto info = InspectPayload(payload);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_TRUE(info->codec == *params);
    const ChunkShape shape{l, T, 0, false};
    EXPECT_EQ(info->body_bytes, TurboQuantCodec().BodySize(*params, shape));
    std::vector<uint8_t> out(in.size()), direct(in.size());
    ASSERT_TRUE(Decode(payload, DecodeTarget::Contiguous(out.data(), l, T)).ok());
    ASSERT_TRUE(TurboQuantCodec()
                    .DecodeHost(*params, shape,
                                absl::MakeConstSpan(payload).subspan(info->header_bytes),
                                Contiguous(direct.data(), l, T))
                    .ok());
    EXPECT_EQ(out, direct);
    auto max = MaxPayloadSize(*params, l, T);
    ASSERT_TRUE(max.ok());
    EXPECT_GE(*max, payload.size());
    // Corruption is caught by the body checksum; truncation by the size check.
    auto bad = payload;
    bad[bad.size() - 5] ^= 0x10;
    EXPECT_FALSE(Decode(bad, DecodeTarget::Contiguous(out.data(), l, T)).ok());
    EXPECT_FALSE(Decode(absl::MakeConstSpan(payload).first(payload.size() - 1),
                        DecodeTarget::Contiguous(out.data(), l, T))
                     .ok());
  }
  // A split on head_dim 64 is refused at encode time.
  const KvLayout small = KvLayout::Mha(1, 1, 1, 64);
  std::vector<float> r2;
  const auto in2 = MakeInput(small, 4, &r2);
  ChunkInput input;
  input.data = in2.data();
  input.layout = small;
  input.num_tokens = 4;
  std::vector<uint8_t> payload;
  EXPECT_EQ(Encode(*CodecParams::Parse("turboquant:b=2,split=2.5"), input, &payload).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::kernels::internal
