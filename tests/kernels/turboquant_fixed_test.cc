// CPU tests of TurboQuant's fixed-point matrix arithmetic (TurboQuantMatrix::kFixed,
// docs/FORMAT.md "turboquant"): the quantizer q(), the int16 tables, one encode and decode
// checked against an independent int64 evaluation of the spec, and the modulo-2^32 sums.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kvtier/kernels/turboquant.h"
#include "turboquant/tq_tables.h"

namespace kvtier::kernels {
namespace {

using internal::GetTqTables;
using internal::TqQuantize;
using internal::TqTables;

TurboQuantVectorParams Fixed(uint32_t dim, uint8_t bits, TurboQuantVariant v,
                             TurboQuantRotation r, TurboQuantQjl qjl = TurboQuantQjl::kGaussian) {
  TurboQuantVectorParams p;
  p.dim = dim;
  p.bits = bits;
  p.variant = v;
  p.rotation = r;
  p.qjl = qjl;
  p.seed = 77;
  p.matrix = TurboQuantMatrix::kFixed;
  return p;
}

TEST(TurboQuantFixedTest, QuantizerEdgeCases) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(TqQuantize(std::numeric_limits<float>::quiet_NaN()), 0);
  EXPECT_EQ(TqQuantize(-std::numeric_limits<float>::quiet_NaN()), 0);
  EXPECT_EQ(TqQuantize(inf), 32639);
  EXPECT_EQ(TqQuantize(-inf), -32639);
  EXPECT_EQ(TqQuantize(3.0e38f), 32639);
  EXPECT_EQ(TqQuantize(-3.0e38f), -32639);
  EXPECT_EQ(TqQuantize(32639.0f), 32639);
  EXPECT_EQ(TqQuantize(32639.5f), 32639);  // clamped before rounding (rint would give 32640)
  EXPECT_EQ(TqQuantize(32640.0f), 32639);
  EXPECT_EQ(TqQuantize(-32640.0f), -32639);
  EXPECT_EQ(TqQuantize(32638.5f), 32638);  // tie to even
  EXPECT_EQ(TqQuantize(32637.5f), 32638);
  // Ties round half to even.
  EXPECT_EQ(TqQuantize(0.5f), 0);
  EXPECT_EQ(TqQuantize(1.5f), 2);
  EXPECT_EQ(TqQuantize(2.5f), 2);
  EXPECT_EQ(TqQuantize(-0.5f), 0);
  EXPECT_EQ(TqQuantize(-1.5f), -2);
  EXPECT_EQ(TqQuantize(-2.5f), -2);
  EXPECT_EQ(TqQuantize(0.49999997f), 0);
  EXPECT_EQ(TqQuantize(0.50000006f), 1);
  EXPECT_EQ(TqQuantize(-0.0f), 0);
  EXPECT_EQ(TqQuantize(1e-40f), 0);  // subnormal
  EXPECT_EQ(TqQuantize(-7.25f), -7);
  // Every output splits into two int8 (hi = (v + 128) >> 8 in [-127, 127]).
  for (float v : {32639.0f, -32639.0f, 127.0f, 128.0f, -128.0f, -129.0f}) {
    const int32_t q = TqQuantize(v);
    const int32_t hi = (q + 128) >> 8, lo = q - 256 * hi;
    EXPECT_GE(hi, -127);
    EXPECT_LE(hi, 127);
    EXPECT_GE(lo, -128);
    EXPECT_LE(lo, 127);
  }
}

TEST(TurboQuantFixedTest, TablesAreTheRoundedBinary32Tables) {
  // dense rotation + Gaussian QJL: both matrices; float twins of the same instance.
  for (uint32_t d : {128u, 40u}) {
    auto p = Fixed(d, 3, TurboQuantVariant::kProd, TurboQuantRotation::kDense);
    auto t = GetTqTables(p);
    ASSERT_TRUE(t.ok()) << t.status();
    p.matrix = TurboQuantMatrix::kFloat;
    auto f = GetTqTables(p);
    ASSERT_TRUE(f.ok());
    EXPECT_NE(t->get(), f->get());  // keyed by the field
    EXPECT_TRUE((*t)->fixed);
    EXPECT_FALSE((*f)->fixed);
    EXPECT_TRUE((*f)->rot_q.empty());
    EXPECT_TRUE((*f)->qjl_q.empty());
    EXPECT_EQ((*t)->rot, (*f)->rot);
    EXPECT_EQ((*t)->qjl, (*f)->qjl);
    ASSERT_EQ((*t)->rot_q.size(), size_t{d} * d);
    ASSERT_EQ((*t)->qjl_q.size(), size_t{d} * d);
    int max_rot = 0, max_qjl = 0;
    for (size_t k = 0; k < (*t)->rot_q.size(); ++k) {
      EXPECT_EQ((*t)->rot_q[k], static_cast<int>(std::nearbyint(double((*t)->rot[k]) * 16384)));
      EXPECT_EQ((*t)->qjl_q[k], static_cast<int>(std::nearbyint(double((*t)->qjl[k]) * 2048)));
      max_rot = std::max(max_rot, std::abs(int{(*t)->rot_q[k]}));
      max_qjl = std::max(max_qjl, std::abs(int{(*t)->qjl_q[k]}));
    }
    EXPECT_LE(max_rot, 16384);
    EXPECT_LE(max_qjl, 17573);
    EXPECT_GT(max_qjl, 2048 * 2);  // the entries are N(0,1) * 2^11, not a unit-scaled matrix
  }
  // Only the matrices the instance uses.
  auto had_gauss = GetTqTables(
      Fixed(128, 2, TurboQuantVariant::kProd, TurboQuantRotation::kHadamard));
  ASSERT_TRUE(had_gauss.ok());
  EXPECT_TRUE((*had_gauss)->rot_q.empty());
  EXPECT_EQ((*had_gauss)->qjl_q.size(), 128u * 128u);
  auto dense_had = GetTqTables(Fixed(128, 2, TurboQuantVariant::kProd, TurboQuantRotation::kDense,
                                     TurboQuantQjl::kHadamard));
  ASSERT_TRUE(dense_had.ok());
  EXPECT_EQ((*dense_had)->rot_q.size(), 128u * 128u);
  EXPECT_TRUE((*dense_had)->qjl_q.empty());
  // A codec that uses no matrix cannot be fixed.
  auto bad = Fixed(128, 2, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard);
  EXPECT_EQ(bad.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(GetTqTables(bad).ok());
  bad = Fixed(128, 2, TurboQuantVariant::kProd, TurboQuantRotation::kHadamard,
              TurboQuantQjl::kHadamard);
  EXPECT_FALSE(bad.Validate().ok());
  bad = Fixed(128, 2, TurboQuantVariant::kMse, TurboQuantRotation::kDense);
  bad.matrix = static_cast<TurboQuantMatrix>(2);
  EXPECT_FALSE(bad.Validate().ok());
}

TEST(TurboQuantFixedTest, SumsWrapModulo2To32) {
  // Products and sums whose true value leaves int32: the result is that value mod 2^32.
  const uint32_t n = 4;
  const int16_t m[16] = {32767, -32768, 32767, 32767,  //
                         -32768, -32768, -32768, -32768,  //
                         1, 2, 3, 4,  //
                         -1, 0, 0, 1};
  const int32_t v[4] = {2147483647, -2147483647 - 1, 123456789, -98765};
  int32_t out[4], outt[4];
  internal::TqFixedMatVec(m, v, n, out);
  internal::TqFixedMatTVec(m, v, n, outt);
  for (uint32_t i = 0; i < n; ++i) {
    int64_t a = 0, b = 0;
    for (uint32_t j = 0; j < n; ++j) {
      a += int64_t{m[i * n + j]} * v[j];
      b += int64_t{m[j * n + i]} * v[j];
    }
    EXPECT_EQ(out[i], static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(a))));
    EXPECT_EQ(outt[i], static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(b))));
  }
}

// ---- Independent evaluation of the spec (int64 sums, then mod 2^32) -------------------------

int32_t RefQ(float v) {
  if (v != v) return 0;
  if (v > 32639.0f) v = 32639.0f;
  if (v < -32639.0f) v = -32639.0f;
  const float fl = std::floor(v), frac = v - fl;  // exact for |v| < 2^23
  int64_t r = static_cast<int64_t>(fl);
  if (frac > 0.5f || (frac == 0.5f && (r % 2 != 0))) ++r;
  return static_cast<int32_t>(r);
}

int32_t Wrap(int64_t v) { return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(v))); }

struct RefEncoded {
  std::vector<uint8_t> codes;  // unpacked mse codes
  std::vector<uint8_t> signs;  // 0/1
  float norm = 0, gamma = 0;
};

RefEncoded RefEncode(const TqTables& t, const std::vector<float>& x) {
  const uint32_t d = t.dim;
  RefEncoded e;
  e.norm = std::sqrt(internal::TqSumSquares(x.data(), d));
  const float inv = e.norm > 0.0f ? 1.0f / e.norm : 0.0f;
  std::vector<int64_t> uq(d);
  for (uint32_t j = 0; j < d; ++j) uq[j] = RefQ((x[j] * inv) * 16384.0f);
  std::vector<float> z(d), r(d);
  for (uint32_t i = 0; i < d; ++i) {
    int64_t acc = 0;
    for (uint32_t j = 0; j < d; ++j) acc += int64_t{t.rot_q[i * d + j]} * uq[j];
    z[i] = static_cast<float>(Wrap(acc)) / 268435456.0f;
  }
  e.codes.resize(d);
  for (uint32_t j = 0; j < d; ++j) {
    uint8_t c = 0;
    for (float b : t.boundaries) c += z[j] >= b ? 1 : 0;
    e.codes[j] = c;
    r[j] = t.mse_bits > 0 ? z[j] - t.centroids[c] : z[j];
  }
  if (!t.prod) return e;
  e.gamma = std::sqrt(internal::TqSumSquares(r.data(), d));
  const float sg = e.gamma > 0.0f ? 16384.0f / e.gamma : 0.0f;
  std::vector<int64_t> rq(d);
  for (uint32_t j = 0; j < d; ++j) rq[j] = RefQ(r[j] * sg);
  e.signs.resize(d);
  for (uint32_t i = 0; i < d; ++i) {
    int64_t acc = 0;
    for (uint32_t j = 0; j < d; ++j) acc += int64_t{t.qjl_q[i * d + j]} * rq[j];
    e.signs[i] = Wrap(acc) >= 0 ? 1 : 0;
  }
  return e;
}

std::vector<float> RefDecode(const TqTables& t, const RefEncoded& e, float norm, float gamma) {
  const uint32_t d = t.dim;
  std::vector<float> y(d);
  for (uint32_t j = 0; j < d; ++j) y[j] = t.mse_bits > 0 ? t.centroids[e.codes[j]] : 0.0f;
  if (t.prod) {
    const float coef = t.qjl_scale * gamma;
    for (uint32_t j = 0; j < d; ++j) {
      int64_t acc = 0;
      for (uint32_t i = 0; i < d; ++i) acc += e.signs[i] ? t.qjl_q[i * d + j] : -t.qjl_q[i * d + j];
      const float tj = static_cast<float>(Wrap(acc)) / 2048.0f;
      const float add = coef * tj;
      y[j] = y[j] + add;
    }
  }
  std::vector<int64_t> yq(d);
  for (uint32_t i = 0; i < d; ++i) yq[i] = RefQ(y[i] * 16384.0f);
  std::vector<float> out(d);
  for (uint32_t j = 0; j < d; ++j) {
    int64_t acc = 0;
    for (uint32_t i = 0; i < d; ++i) acc += int64_t{t.rot_q[i * d + j]} * yq[i];
    const float xj = static_cast<float>(Wrap(acc)) / 268435456.0f;
    out[j] = xj * norm;
  }
  return out;
}

// One encode and decode of small dense instances against the int64 evaluation, bit for bit.
TEST(TurboQuantFixedTest, EncodeAndDecodeMatchAnIndependentInt64Evaluation) {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> n(0, 1);
  for (uint32_t d : {8u, 24u, 128u}) {
    for (auto v : {TurboQuantVariant::kMse, TurboQuantVariant::kProd}) {
      for (uint8_t b = 1; b <= 4; ++b) {
        SCOPED_TRACE(testing::Message() << "d=" << d << " prod=" << int(v) << " b=" << int(b));
        auto t = GetTqTables(Fixed(d, b, v, TurboQuantRotation::kDense));
        ASSERT_TRUE(t.ok()) << t.status();
        const TqTables& tt = **t;
        for (int rep = 0; rep < 4; ++rep) {
          std::vector<float> x(d);
          for (auto& e : x) e = n(rng) * (rep == 3 ? 100.0f : 1.5f);
          const RefEncoded want = RefEncode(tt, x);
          std::vector<uint8_t> codes(tt.CodeBytes()), ref_codes(tt.CodeBytes(), 0);
          std::vector<float> scratch(3 * d);
          float norm = -1, gamma = -1;
          internal::TqEncodeVector(tt, x.data(), codes.data(), &norm, &gamma, scratch.data());
          if (tt.mse_bits > 0) internal::TqPackCodes(want.codes.data(), d, tt.mse_bits, ref_codes.data());
          for (uint32_t i = 0; i < want.signs.size(); ++i) {
            if (want.signs[i]) ref_codes[tt.MseBytes() + i / 8] |= static_cast<uint8_t>(1u << (i % 8));
          }
          EXPECT_EQ(codes, ref_codes);
          EXPECT_EQ(norm, want.norm);
          EXPECT_EQ(gamma, want.gamma);
          std::vector<float> out(d), ref_out = RefDecode(tt, want, norm, gamma);
          internal::TqDecodeVector(tt, codes.data(), norm, gamma, out.data(), scratch.data());
          for (uint32_t j = 0; j < d; ++j) ASSERT_EQ(out[j], ref_out[j]) << j;
        }
      }
    }
  }
  // Hadamard rotation with the fixed Gaussian QJL: the sketch signs against the int64 loop.
  auto t = GetTqTables(Fixed(128, 3, TurboQuantVariant::kProd, TurboQuantRotation::kHadamard));
  ASSERT_TRUE(t.ok());
  const TqTables& tt = **t;
  std::vector<float> x(128), z(128), scratch(3 * 128);
  for (auto& e : x) e = n(rng);
  std::vector<uint8_t> codes(tt.CodeBytes());
  float norm, gamma;
  internal::TqEncodeVector(tt, x.data(), codes.data(), &norm, &gamma, scratch.data());
  for (uint32_t j = 0; j < 128; ++j) z[j] = x[j] * (1.0f / norm);
  internal::TqApplyChain(tt.windows, z.data());
  std::vector<float> r(128);
  for (uint32_t j = 0; j < 128; ++j) {
    uint8_t c = 0;
    for (float bd : tt.boundaries) c += z[j] >= bd ? 1 : 0;
    r[j] = z[j] - tt.centroids[c];
  }
  const float sg = 16384.0f / gamma;
  for (uint32_t i = 0; i < 128; ++i) {
    int64_t acc = 0;
    for (uint32_t j = 0; j < 128; ++j) acc += int64_t{tt.qjl_q[i * 128 + j]} * RefQ(r[j] * sg);
    const bool sign = (codes[tt.MseBytes() + i / 8] >> (i % 8)) & 1;
    EXPECT_EQ(sign, Wrap(acc) >= 0) << i;
  }
}

// The fixed rotation is the float one to about 2^-14 per coordinate, and it inverts.
TEST(TurboQuantFixedTest, FixedRotationIsCloseToTheFloatRotationAndInverts) {
  auto p = Fixed(128, 2, TurboQuantVariant::kMse, TurboQuantRotation::kDense);
  auto t = GetTqTables(p);
  p.matrix = TurboQuantMatrix::kFloat;
  auto f = GetTqTables(p);
  ASSERT_TRUE(t.ok() && f.ok());
  std::mt19937_64 rng(11);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> x(128), a, b, scratch(128);
  double s = 0;
  for (auto& e : x) {
    e = n(rng);
    s += double(e) * e;
  }
  for (auto& e : x) e = static_cast<float>(e / std::sqrt(s));
  a = x;
  b = x;
  internal::TqRotate(**t, a.data(), scratch.data());
  internal::TqRotate(**f, b.data(), scratch.data());
  double diff = 0, same = 0;
  for (int i = 0; i < 128; ++i) {
    diff = std::max(diff, std::fabs(double(a[i]) - b[i]));
    same += a[i] == b[i];
  }
  EXPECT_LT(diff, 2e-4);
  EXPECT_LT(same, 128);  // a different arithmetic, not the float path
  internal::TqRotateInverse(**t, a.data(), scratch.data());
  for (int i = 0; i < 128; ++i) EXPECT_NEAR(a[i], x[i], 3e-4);
}

}  // namespace
}  // namespace kvtier::kernels
