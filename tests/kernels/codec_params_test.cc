// KvLayout and CodecParams: validation, text forms, equality; DecodeTarget::Contiguous;
// MaxPayloadSize; and the bit-exact scalar conversions the codecs rely on.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "codecs/cpu_simd.h"
#include "codecs/numeric.h"
#include "kvtier/kernels/codec.h"

namespace kvtier::kernels {
namespace {

TEST(KvLayoutTest, ValidatesShapes) {
  EXPECT_TRUE(KvLayout::Mha(32, 8, 32, 128).Validate().ok());
  EXPECT_TRUE(KvLayout::Mla(61, 512, 64, DType::kBFloat16).Validate().ok());
  EXPECT_FALSE(KvLayout::Mha(0, 8, 32, 128).Validate().ok());
  EXPECT_FALSE(KvLayout::Mha(32, 0, 32, 128).Validate().ok());
  EXPECT_FALSE(KvLayout::Mha(32, 8, 12, 128).Validate().ok());  // not a multiple
  EXPECT_FALSE(KvLayout::Mha(32, 8, 0, 128).Validate().ok());
  EXPECT_FALSE(KvLayout::Mha(32, 8, 32, 0).Validate().ok());
  EXPECT_FALSE(KvLayout::Mla(4, 0, 64).Validate().ok());
  KvLayout mixed = KvLayout::Mha(32, 8, 32, 128);
  mixed.latent_dim = 512;
  EXPECT_FALSE(mixed.Validate().ok());
  KvLayout mixed2 = KvLayout::Mla(4, 512, 64);
  mixed2.head_dim = 128;
  EXPECT_FALSE(mixed2.Validate().ok());
  KvLayout bad_dtype = KvLayout::Mha(1, 1, 1, 8);
  bad_dtype.dtype = static_cast<DType>(9);
  EXPECT_FALSE(bad_dtype.Validate().ok());
  KvLayout bad_kind = KvLayout::Mha(1, 1, 1, 8);
  bad_kind.kind = static_cast<LayoutKind>(7);
  EXPECT_FALSE(bad_kind.Validate().ok());
  EXPECT_FALSE(KvLayout::Mha(4096, 1024, 1024, 128).Validate().ok());  // too many elements
}

TEST(KvLayoutTest, SizesAndText) {
  const KvLayout l = KvLayout::Mha(32, 8, 32, 128);
  EXPECT_EQ(l.ElementsPerToken(), 65536u);
  EXPECT_EQ(l.BytesPerToken(), 131072u);  // 128 KiB per token for Llama-3.1-8B
  EXPECT_EQ(l.ChunkBytes(256), 32u << 20);
  const KvLayout m = KvLayout::Mla(61, 512, 64);
  EXPECT_EQ(m.ElementsPerToken(), 61u * 576);
  EXPECT_EQ(m.VectorDim(), 576u);
  EXPECT_EQ(l.DebugString(), "mha{layers=32, kv_heads=8, query_heads=32, head_dim=128, dtype=fp16}");
  EXPECT_EQ(m.DebugString(), "mla{layers=61, latent_dim=512, rope_dim=64, dtype=fp16}");
  EXPECT_EQ(l, KvLayout::Mha(32, 8, 32, 128));
  EXPECT_NE(l, KvLayout::Mha(32, 8, 32, 128, DType::kBFloat16));
  EXPECT_NE(l, KvLayout::Mha(32, 8, 16, 128));
}

TEST(CodecParamsTest, ValidateRejectsImpossibleParams) {
  CodecParams p;
  EXPECT_TRUE(p.Validate().ok());
  p.bits = 2;
  EXPECT_FALSE(p.Validate().ok());  // raw takes no parameters
  CodecParams k;
  k.id = CodecId::kKivi;
  k.bits = 2;
  k.group_size = 32;
  EXPECT_TRUE(k.Validate().ok());
  for (int b : {0, 1, 3, 5, 8}) {
    CodecParams x = k;
    x.bits = static_cast<uint8_t>(b);
    EXPECT_FALSE(x.Validate().ok()) << b;
  }
  for (int g : {0, 16, 48, 256}) {
    CodecParams x = k;
    x.group_size = static_cast<uint16_t>(g);
    EXPECT_FALSE(x.Validate().ok()) << g;
  }
  CodecParams ks = k;
  ks.seed = 3;
  EXPECT_FALSE(ks.Validate().ok());
  CodecParams t;
  t.id = CodecId::kTurboQuant;
  t.bits = 2;
  t.tq_split = TurboQuantSplit::k2p5;
  EXPECT_TRUE(t.Validate().ok());
  t.bits = 3;
  EXPECT_FALSE(t.Validate().ok());
  t.tq_split = TurboQuantSplit::k3p5;
  EXPECT_TRUE(t.Validate().ok());
  t.group_size = 32;
  EXPECT_FALSE(t.Validate().ok());
  CodecParams unknown;
  unknown.id = static_cast<CodecId>(42);
  EXPECT_FALSE(unknown.Validate().ok());
}

// The QJL projection: prod only, one of two values, a zero byte elsewhere.
TEST(CodecParamsTest, QjlProjectionIsValidatedParsedAndPrinted) {
  CodecParams t;
  t.id = CodecId::kTurboQuant;
  t.bits = 3;
  t.tq_qjl = TurboQuantQjl::kHadamard;
  EXPECT_FALSE(t.Validate().ok());  // mse
  t.tq_variant = TurboQuantVariant::kProd;
  EXPECT_TRUE(t.Validate().ok());
  t.tq_rotation = TurboQuantRotation::kDense;
  EXPECT_TRUE(t.Validate().ok());
  t.tq_qjl = static_cast<TurboQuantQjl>(2);
  EXPECT_FALSE(t.Validate().ok());
  CodecParams k;
  k.id = CodecId::kKivi;
  k.bits = 2;
  k.group_size = 32;
  k.tq_qjl = TurboQuantQjl::kHadamard;
  EXPECT_FALSE(k.Validate().ok());
  CodecParams raw;
  raw.tq_qjl = TurboQuantQjl::kHadamard;
  EXPECT_FALSE(raw.Validate().ok());

  // Text defaults: structured with the Hadamard rotation, Gaussian with the dense one.
  EXPECT_EQ(TurboQuantDefaultQjl(TurboQuantRotation::kHadamard), TurboQuantQjl::kHadamard);
  EXPECT_EQ(TurboQuantDefaultQjl(TurboQuantRotation::kDense), TurboQuantQjl::kGaussian);
  const struct {
    const char* text;
    TurboQuantQjl want;
    const char* printed;
  } cases[] = {
      {"turboquant:b=3,variant=prod", TurboQuantQjl::kHadamard, "turboquant:b=3,variant=prod"},
      {"turboquant:b=3,variant=prod,qjl=hadamard", TurboQuantQjl::kHadamard,
       "turboquant:b=3,variant=prod"},
      {"turboquant:b=3,variant=prod,qjl=gaussian", TurboQuantQjl::kGaussian,
       "turboquant:b=3,variant=prod,qjl=gaussian"},
      {"turboquant:b=2,variant=prod,rotation=dense", TurboQuantQjl::kGaussian,
       "turboquant:b=2,variant=prod,rotation=dense"},
      {"turboquant:b=2,variant=prod,rotation=dense,qjl=hadamard", TurboQuantQjl::kHadamard,
       "turboquant:b=2,variant=prod,rotation=dense,qjl=hadamard"},
      {"turboquant:b=2", TurboQuantQjl::kGaussian, "turboquant:b=2"},
  };
  for (const auto& c : cases) {
    auto p = CodecParams::Parse(c.text);
    ASSERT_TRUE(p.ok()) << c.text << ": " << p.status();
    EXPECT_EQ(p->tq_qjl, c.want) << c.text;
    EXPECT_EQ(p->ToString(), c.printed) << c.text;
    auto again = CodecParams::Parse(p->ToString());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *p) << c.text;
  }
  for (const char* bad : {"turboquant:b=3,qjl=hadamard", "turboquant:b=3,qjl=gaussian",
                          "turboquant:b=3,variant=prod,qjl=x", "kivi:b=2,qjl=hadamard",
                          "turboquant:b=3,variant=prod,qjl=hadamard,qjl=gaussian"}) {
    EXPECT_FALSE(CodecParams::Parse(bad).ok()) << bad;
  }
  CodecParams a = *CodecParams::Parse("turboquant:b=3,variant=prod,qjl=gaussian");
  CodecParams b = *CodecParams::Parse("turboquant:b=3,variant=prod,qjl=hadamard");
  EXPECT_NE(a, b);
}

TEST(CodecParamsTest, MatrixArithmeticIsValidatedParsedAndPrinted) {
  EXPECT_TRUE(TurboQuantUsesMatrix(TurboQuantVariant::kMse, TurboQuantRotation::kDense,
                                   TurboQuantQjl::kGaussian));
  EXPECT_TRUE(TurboQuantUsesMatrix(TurboQuantVariant::kProd, TurboQuantRotation::kHadamard,
                                   TurboQuantQjl::kGaussian));
  EXPECT_TRUE(TurboQuantUsesMatrix(TurboQuantVariant::kProd, TurboQuantRotation::kDense,
                                   TurboQuantQjl::kHadamard));
  EXPECT_FALSE(TurboQuantUsesMatrix(TurboQuantVariant::kMse, TurboQuantRotation::kHadamard,
                                    TurboQuantQjl::kGaussian));
  EXPECT_FALSE(TurboQuantUsesMatrix(TurboQuantVariant::kProd, TurboQuantRotation::kHadamard,
                                    TurboQuantQjl::kHadamard));
  // Struct: default kFloat everywhere; kFixed only where a matrix is used; values > 1 rejected.
  CodecParams t;
  t.id = CodecId::kTurboQuant;
  t.bits = 2;
  EXPECT_EQ(t.tq_matrix, TurboQuantMatrix::kFloat);
  t.tq_matrix = TurboQuantMatrix::kFixed;
  auto st = t.Validate();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("matrix=fixed"), absl::string_view::npos) << st;
  t.tq_rotation = TurboQuantRotation::kDense;
  EXPECT_TRUE(t.Validate().ok());
  t.tq_matrix = static_cast<TurboQuantMatrix>(2);
  st = t.Validate();
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("unknown matrix arithmetic 2"), absl::string_view::npos) << st;
  CodecParams raw;
  raw.tq_matrix = TurboQuantMatrix::kFixed;
  EXPECT_FALSE(raw.Validate().ok());
  CodecParams kivi = *CodecParams::Parse("kivi");
  kivi.tq_matrix = TurboQuantMatrix::kFixed;
  EXPECT_FALSE(kivi.Validate().ok());

  // Text: fixed by default where a matrix is used, `matrix=float` printed only then.
  const struct {
    const char* text;
    TurboQuantMatrix want;
    const char* printed;
  } cases[] = {
      {"turboquant:b=3,rotation=dense", TurboQuantMatrix::kFixed, "turboquant:b=3,rotation=dense"},
      {"turboquant:b=3,rotation=dense,matrix=fixed", TurboQuantMatrix::kFixed,
       "turboquant:b=3,rotation=dense"},
      {"turboquant:b=3,rotation=dense,matrix=float", TurboQuantMatrix::kFloat,
       "turboquant:b=3,rotation=dense,matrix=float"},
      {"turboquant:b=2,variant=prod,qjl=gaussian", TurboQuantMatrix::kFixed,
       "turboquant:b=2,variant=prod,qjl=gaussian"},
      {"turboquant:b=2,variant=prod,qjl=gaussian,matrix=float,seed=3", TurboQuantMatrix::kFloat,
       "turboquant:b=2,variant=prod,qjl=gaussian,matrix=float,seed=3"},
      {"turboquant:b=2,variant=prod,rotation=dense,qjl=hadamard", TurboQuantMatrix::kFixed,
       "turboquant:b=2,variant=prod,rotation=dense,qjl=hadamard"},
      {"turboquant:b=2,split=2.5,variant=prod,qjl=gaussian,matrix=float", TurboQuantMatrix::kFloat,
       "turboquant:b=2,variant=prod,split=2.5,qjl=gaussian,matrix=float"},
      // No matrix used: float, and `matrix=float` is accepted but never printed.
      {"turboquant:b=3", TurboQuantMatrix::kFloat, "turboquant:b=3"},
      {"turboquant:b=3,matrix=float", TurboQuantMatrix::kFloat, "turboquant:b=3"},
      {"turboquant:b=3,variant=prod", TurboQuantMatrix::kFloat, "turboquant:b=3,variant=prod"},
  };
  for (const auto& c : cases) {
    auto p = CodecParams::Parse(c.text);
    ASSERT_TRUE(p.ok()) << c.text << ": " << p.status();
    EXPECT_EQ(p->tq_matrix, c.want) << c.text;
    EXPECT_EQ(p->ToString(), c.printed) << c.text;
    auto again = CodecParams::Parse(p->ToString());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *p) << c.text;
  }
  for (const char* bad : {"turboquant:b=3,matrix=fixed", "turboquant:b=3,variant=prod,matrix=fixed",
                          "turboquant:b=3,rotation=dense,matrix=int8", "kivi:b=2,matrix=float",
                          "raw:matrix=fixed", "turboquant:b=3,rotation=dense,matrix=fixed,matrix=float"}) {
    EXPECT_FALSE(CodecParams::Parse(bad).ok()) << bad;
  }
  EXPECT_NE(*CodecParams::Parse("turboquant:b=3,rotation=dense"),
            *CodecParams::Parse("turboquant:b=3,rotation=dense,matrix=float"));
}

TEST(CodecParamsTest, TextRoundTrip) {
  for (const char* text : {"raw", "fp8", "kivi:b=2,g=32", "kivi:b=4,g=128,sink=4,tail=128",
                           "turboquant:b=3", "turboquant:b=3,variant=prod,rotation=dense,seed=7",
                           "turboquant:b=2,split=2.5", "turboquant:b=3,split=3.5"}) {
    auto p = CodecParams::Parse(text);
    ASSERT_TRUE(p.ok()) << text << ": " << p.status();
    EXPECT_EQ(p->ToString(), text);
    auto again = CodecParams::Parse(p->ToString());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *p);
  }
  auto kivi = CodecParams::Parse("kivi");
  ASSERT_TRUE(kivi.ok());
  EXPECT_EQ(kivi->bits, 2);
  EXPECT_EQ(kivi->group_size, 32);
  auto k4 = CodecParams::Parse("kivi:sink=4,b=4");
  ASSERT_TRUE(k4.ok());
  EXPECT_EQ(k4->ToString(), "kivi:b=4,g=32,sink=4");
  for (const char* bad : {"", "zstd", "raw:b=2", "kivi:", "kivi:b=3", "kivi:g=48", "kivi:b",
                          "kivi:b=2,b=4", "kivi:b=-2", "kivi:b=+2", "kivi:sink=70000",
                          "kivi:seed=1", "turboquant:b=5", "turboquant:variant=x",
                          "turboquant:b=3,split=2.5", "fp8:x=1", "kivi:b=2,,g=32"}) {
    EXPECT_FALSE(CodecParams::Parse(bad).ok()) << bad;
  }
}

TEST(DecodeTargetTest, ContiguousMatchesCanonicalLayout) {
  const KvLayout l = KvLayout::Mha(3, 2, 4, 16);
  char base[1];
  const DecodeTarget t = DecodeTarget::Contiguous(base, l, 10);
  ASSERT_EQ(t.layer_base.size(), 3u);
  EXPECT_EQ(static_cast<char*>(t.layer_base[1]) - base, 2 * 2 * 10 * 16 * 2);
  EXPECT_EQ(t.stride_kv, 2 * 10 * 16 * 2);
  EXPECT_EQ(t.stride_head, 10 * 16 * 2);
  EXPECT_EQ(t.stride_token, 16 * 2);
  EXPECT_EQ(t.block_table, nullptr);
  const KvLayout m = KvLayout::Mla(2, 32, 8, DType::kFloat32);
  const DecodeTarget tm = DecodeTarget::Contiguous(base, m, 5);
  EXPECT_EQ(static_cast<char*>(tm.layer_base[1]) - base, 5 * 40 * 4);
  EXPECT_EQ(tm.stride_token, 40 * 4);
  EXPECT_EQ(tm.dtype, DType::kFloat32);
}

TEST(MaxPayloadSizeTest, BoundsAndErrors) {
  const KvLayout l = KvLayout::Mha(32, 8, 32, 128);
  auto raw = MaxPayloadSize(CodecParams{}, l, 256);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(*raw, 96u + (32u << 20));
  auto fp8 = MaxPayloadSize(*CodecParams::Parse("fp8"), l, 256);
  ASSERT_TRUE(fp8.ok());
  EXPECT_EQ(*fp8, 96u + (16u << 20) + 32 * 2 * 8 * 256 * 4);
  auto kivi = MaxPayloadSize(*CodecParams::Parse("kivi:b=2,g=32"), l, 256);
  ASSERT_TRUE(kivi.ok());
  // 2 bits + one 32-bit (scale, min) pair per 32 elements = 3 bits per element.
  EXPECT_EQ(*kivi, 96u + (32u << 20) * 3 / 16);
  EXPECT_FALSE(MaxPayloadSize(CodecParams{}, l, 0).ok());
  EXPECT_FALSE(MaxPayloadSize(CodecParams{}, KvLayout{}, 16).ok());
  // head_dim 96 is not a multiple of 64.
  EXPECT_FALSE(MaxPayloadSize(*CodecParams::Parse("kivi:b=2,g=64"), KvLayout::Mha(1, 1, 1, 96), 64)
                   .ok());
  CodecParams tq;
  tq.id = CodecId::kLatent;
  EXPECT_EQ(MaxPayloadSize(tq, l, 256).status().code(), absl::StatusCode::kFailedPrecondition);
}

// The scalar conversions against independent oracles: the compiler's _Float16 (IEEE binary16,
// round-to-nearest-even) and exhaustive decode/encode round trips.
TEST(NumericTest, HalfConversionsMatchCompiler) {
  for (uint32_t h = 0; h < 65536; ++h) {
    _Float16 f;
    const uint16_t bits = static_cast<uint16_t>(h);
    std::memcpy(&f, &bits, 2);
    const float want = static_cast<float>(f);
    const float got = internal::HalfToFloat(bits);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got));
    } else {
      ASSERT_EQ(internal::FloatBits(got), internal::FloatBits(want)) << h;
      ASSERT_EQ(internal::FloatToHalf(got), bits) << h;
    }
  }
  std::mt19937 rng(1);
  for (int i = 0; i < 2000000; ++i) {
    uint32_t u = rng();
    if (i % 2) u = (u & 0x87FFFFFFu) | 0x30000000u;  // half of them near fp16's range
    const float f = internal::BitsFloat(u);
    if (std::isnan(f)) continue;
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &h, 2);
    ASSERT_EQ(internal::FloatToHalf(f), want) << std::hexfloat << f;
  }
}

TEST(NumericTest, Bf16AndE4M3) {
  EXPECT_EQ(internal::FloatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(internal::FloatToBf16(internal::BitsFloat(0x3F808000u)), 0x3F80);  // tie to even
  EXPECT_EQ(internal::FloatToBf16(internal::BitsFloat(0x3F818000u)), 0x3F82);  // tie to even
  EXPECT_EQ(internal::FloatToBf16(internal::BitsFloat(0x3F808001u)), 0x3F81);
  EXPECT_EQ(internal::E4M3ToFloat(0x7E), 448.0f);
  EXPECT_EQ(internal::E4M3ToFloat(0x01), 0.001953125f);
  EXPECT_EQ(internal::E4M3ToFloat(0x08), 0.015625f);
  EXPECT_TRUE(std::isnan(internal::E4M3ToFloat(0x7F)));
  EXPECT_EQ(internal::FloatToE4M3(448.0f), 0x7E);
  EXPECT_EQ(internal::FloatToE4M3(1000.0f), 0x7E);
  EXPECT_EQ(internal::FloatToE4M3(-1000.0f), 0xFE);
  EXPECT_EQ(internal::FloatToE4M3(1.0625f), 0x38);   // tie between 1.0 and 1.125 -> even
  EXPECT_EQ(internal::FloatToE4M3(1.1875f), 0x3A);   // tie between 1.125 and 1.25 -> even
  EXPECT_EQ(internal::FloatToE4M3(0.0009765625f), 0x00);  // half the smallest subnormal -> 0
  // Every finite code decodes and re-encodes to itself; midpoints round to the even neighbour.
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7F) == 0x7F) continue;
    const float v = internal::E4M3ToFloat(static_cast<uint8_t>(c));
    if (c == 0x80) {
      EXPECT_EQ(internal::FloatToE4M3(v), 0x80);
      continue;
    }
    EXPECT_EQ(internal::FloatToE4M3(v), c) << c;
    if ((c & 0x7F) < 0x7E) {
      const float next = internal::E4M3ToFloat(static_cast<uint8_t>(c + 1));
      const float mid = 0.5f * (v + next);
      const int even = (c & 1) ? c + 1 : c;
      EXPECT_EQ(internal::FloatToE4M3(mid), even) << c;
    }
  }
}

}  // namespace
}  // namespace kvtier::kernels

namespace kvtier::kernels {
namespace {

// The AVX2 row decoders give exactly the scalar reference's bytes.
TEST(NumericTest, SimdRowsMatchScalar) {
  if (!internal::CpuHasAvx2F16c()) GTEST_SKIP() << "no AVX2/F16C on this CPU";
  std::mt19937 rng(3);
  for (uint8_t dtype : {uint8_t{1}, uint8_t{2}}) {
    auto narrow = [&](float f) {
      return dtype == 1 ? internal::FloatToHalf(f) : internal::FloatToBf16(f);
    };
    std::vector<uint8_t> codes(256);
    for (int i = 0; i < 256; ++i) codes[i] = static_cast<uint8_t>(i == 0x7F || i == 0xFF ? 0 : i);
    for (float scale : {1.0f, 3.7e-3f, 1e-9f, 65000.0f / 448}) {
      std::vector<uint16_t> got(256), want(256);
      internal::Fp8DecodeRowAvx2(dtype, codes.data(), scale, got.data(), 256);
      for (int i = 0; i < 256; ++i) want[i] = narrow(internal::E4M3ToFloat(codes[i]) * scale);
      ASSERT_EQ(got, want) << int(dtype) << " " << scale;
    }
    for (uint32_t bits : {2u, 4u}) {
      std::vector<uint32_t> words(16);
      for (auto& w : words) w = rng();
      const float scale = 0.0371f, mn = -1.234f;
      std::vector<uint16_t> got(128), want(128);
      const uint32_t n = 16 * (32 / bits) >= 128 ? 128 : 16 * (32 / bits);
      internal::KiviDequantPackedAvx2(dtype, bits, words.data(), scale, mn, got.data(), n);
      const uint32_t cpw = 32 / bits;
      for (uint32_t i = 0; i < n; ++i) {
        const uint32_t q = (words[i / cpw] >> (bits * (i % cpw))) & ((1u << bits) - 1);
        want[i] = narrow(static_cast<float>(q) * scale + mn);
      }
      ASSERT_EQ(got, want) << "packed " << bits;
      std::vector<float> scales(16), mins(16);
      for (int c = 0; c < 16; ++c) scales[c] = 0.01f * (c + 1), mins[c] = -0.3f * c;
      for (uint32_t shift = 0; shift < 32; shift += bits) {
        std::vector<uint16_t> g2(16), w2(16);
        internal::KiviDequantColumnsAvx2(dtype, bits, shift, words.data(), scales.data(),
                                         mins.data(), g2.data(), 16);
        for (int c = 0; c < 16; ++c) {
          const uint32_t q = (words[c] >> shift) & ((1u << bits) - 1);
          w2[c] = narrow(static_cast<float>(q) * scales[c] + mins[c]);
        }
        ASSERT_EQ(g2, w2) << "columns " << bits << " " << shift;
      }
    }
  }
}

}  // namespace
}  // namespace kvtier::kernels
