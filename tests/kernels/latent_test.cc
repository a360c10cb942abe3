// Latent codec tests: error falls with rank, full rank is exact up to float error, the basis
// serializes to the same id, payloads only decode with their own basis, bad input is rejected.
#include "kvtier/kernels/latent.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "codecs/numeric.h"

namespace kvtier::kernels {
namespace {

// Low-rank-ish data: 12 strong directions + small isotropic noise, per stream; fp16.
std::vector<uint16_t> MakeChunk(const KvLayout& l, uint32_t T, uint64_t seed) {
  const uint32_t D = l.VectorDim();
  const uint32_t S = l.kind == LayoutKind::kMha ? l.num_layers * 2 * l.num_kv_heads : l.num_layers;
  std::mt19937_64 dir_rng(99);  // same directions for every chunk
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0, 1);
  std::vector<uint16_t> out(size_t{S} * T * D);
  for (uint32_t s = 0; s < S; ++s) {
    std::vector<float> dirs(12 * D);
    for (auto& x : dirs) x = n(dir_rng);
    for (uint32_t t = 0; t < T; ++t) {
      std::vector<float> row(D);
      for (uint32_t d = 0; d < D; ++d) row[d] = 0.05f * n(rng) + (d == 3 ? 4.0f : 0.0f);
      for (int k = 0; k < 12; ++k) {
        const float c = n(rng) * (3.0f / (1 + k));
        for (uint32_t d = 0; d < D; ++d) row[d] += c * dirs[k * D + d];
      }
      for (uint32_t d = 0; d < D; ++d) {
        out[(size_t{s} * T + t) * D + d] = internal::FloatToHalf(row[d]);
      }
    }
  }
  return out;
}

ChunkInput Input(const std::vector<uint16_t>& data, const KvLayout& l, uint32_t T) {
  ChunkInput c;
  c.data = data.data();
  c.layout = l;
  c.num_tokens = T;
  return c;
}

double RoundTripError(const LatentBasis& basis, const std::vector<uint16_t>& chunk,
                      const KvLayout& l, uint32_t T, LatentCoefficients coef) {
  auto payload = EncodeLatent(basis, Input(chunk, l, T), coef);
  EXPECT_TRUE(payload.ok()) << payload.status();
  if (!payload.ok()) return 1e9;
  std::vector<uint16_t> out(chunk.size(), 0x7E00);
  const auto st = DecodeLatent(basis, *payload, DecodeTarget::Contiguous(out.data(), l, T));
  EXPECT_TRUE(st.ok()) << st;
  double num = 0, den = 0;
  for (size_t i = 0; i < chunk.size(); ++i) {
    const double a = internal::HalfToFloat(chunk[i]), b = internal::HalfToFloat(out[i]);
    num += (a - b) * (a - b);
    den += a * a;
  }
  return std::sqrt(num / den);
}

TEST(LatentTest, ErrorDecreasesWithRankAndFullRankIsExact) {
  const KvLayout l = KvLayout::Mha(1, 2, 8, 64);
  const uint32_t T = 96;
  const auto calib = MakeChunk(l, 256, 1);
  const auto chunk = MakeChunk(l, T, 2);
  double prev = 1e9;
  for (uint32_t r : {2u, 4u, 8u, 12u, 32u, 64u}) {
    auto basis = FitLatentBasis({Input(calib, l, 256)}, l, r);
    ASSERT_TRUE(basis.ok()) << basis.status();
    const double e = RoundTripError(*basis, chunk, l, T, LatentCoefficients::kFp32);
    EXPECT_LT(e, prev) << r;
    prev = e;
    if (r == 12) {
      EXPECT_LT(e, 0.05);  // 12 planted directions + 1% noise
    }
    if (r == 64) {
      EXPECT_LT(e, 1e-3) << "full rank must be exact up to fp16 output rounding";
    }
  }
}

TEST(LatentTest, QuantizedCoefficientsCostLittle) {
  const KvLayout l = KvLayout::Mha(1, 1, 4, 128);
  const auto calib = MakeChunk(l, 256, 3);
  const auto chunk = MakeChunk(l, 64, 4);
  auto basis = FitLatentBasis({Input(calib, l, 256)}, l, 32);
  ASSERT_TRUE(basis.ok());
  const double e32 = RoundTripError(*basis, chunk, l, 64, LatentCoefficients::kFp32);
  EXPECT_LT(RoundTripError(*basis, chunk, l, 64, LatentCoefficients::kFp16), e32 + 1e-3);
  EXPECT_LT(RoundTripError(*basis, chunk, l, 64, LatentCoefficients::kFp8), e32 + 0.05);
  // kivi groups 32 coefficients of one token, whose scales fall with the index: 4 bits then
  // cost about 0.1 of relative error here.
  EXPECT_LT(RoundTripError(*basis, chunk, l, 64, LatentCoefficients::kKivi4), e32 + 0.15);
  // Smaller than fp16 storage: 32 fp16 coefficients per 128-dim vector.
  auto p = EncodeLatent(*basis, Input(chunk, l, 64), LatentCoefficients::kFp16);
  ASSERT_TRUE(p.ok());
  EXPECT_LT(p->size(), chunk.size() * 2 / 3);
  // kivi needs rank % 32 == 0.
  auto b20 = FitLatentBasis({Input(calib, l, 256)}, l, 20);
  ASSERT_TRUE(b20.ok());
  EXPECT_FALSE(EncodeLatent(*b20, Input(chunk, l, 64), LatentCoefficients::kKivi2).ok());
}

TEST(LatentTest, MlaLayout) {
  const KvLayout l = KvLayout::Mla(2, 48, 16);
  const auto calib = MakeChunk(l, 200, 5);
  const auto chunk = MakeChunk(l, 16, 6);
  auto basis = FitLatentBasis({Input(calib, l, 200)}, l, 16);
  ASSERT_TRUE(basis.ok()) << basis.status();
  EXPECT_LT(RoundTripError(*basis, chunk, l, 16, LatentCoefficients::kFp16), 0.05);
}

TEST(LatentTest, SerializationKeepsIdAndDetectsCorruption) {
  const KvLayout l = KvLayout::Mha(1, 1, 4, 32);
  const auto calib = MakeChunk(l, 64, 7);
  auto basis = FitLatentBasis({Input(calib, l, 64)}, l, 8);
  ASSERT_TRUE(basis.ok());
  auto bytes = basis->Serialize();
  auto back = LatentBasis::Deserialize(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->id(), basis->id());
  EXPECT_EQ(back->rank(), 8u);
  bytes[100] ^= 1;
  EXPECT_EQ(LatentBasis::Deserialize(bytes).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(LatentBasis::Deserialize(absl::MakeSpan(bytes.data(), 20)).ok());
}

TEST(LatentTest, WrongBasisAndBadPayloadsAreRejected) {
  const KvLayout l = KvLayout::Mha(1, 1, 4, 32);
  const auto calib = MakeChunk(l, 64, 8);
  const auto chunk = MakeChunk(l, 16, 9);
  auto a = FitLatentBasis({Input(calib, l, 64)}, l, 8);
  auto b = FitLatentBasis({Input(calib, l, 64)}, l, 9);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->id(), b->id());
  auto payload = EncodeLatent(*a, Input(chunk, l, 16));
  ASSERT_TRUE(payload.ok());
  std::vector<uint16_t> out(chunk.size());
  const auto target = DecodeTarget::Contiguous(out.data(), l, 16);
  EXPECT_EQ(DecodeLatent(*b, *payload, target).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(DecodeLatent(*a, *payload, target).ok());
  // The generic decoder cannot decode a latent payload (it has no basis).
  EXPECT_EQ(Decode(*payload, target).code(), absl::StatusCode::kFailedPrecondition);
  // Corrupt body, truncated payload.
  auto bad = *payload;
  bad.back() ^= 0x40;
  EXPECT_FALSE(DecodeLatent(*a, bad, target).ok());
  EXPECT_FALSE(DecodeLatent(*a, absl::MakeSpan(payload->data(), payload->size() - 3), target).ok());
  // Bad fit arguments.
  EXPECT_FALSE(FitLatentBasis({Input(calib, l, 64)}, l, 0).ok());
  EXPECT_FALSE(FitLatentBasis({Input(calib, l, 64)}, l, 33).ok());
  EXPECT_FALSE(FitLatentBasis({}, l, 4).ok());
  const KvLayout other = KvLayout::Mha(1, 1, 4, 16);
  EXPECT_FALSE(FitLatentBasis({Input(calib, l, 64)}, other, 4).ok());
  EXPECT_FALSE(EncodeLatent(*a, Input(chunk, other, 16)).ok());
}

}  // namespace
}  // namespace kvtier::kernels
