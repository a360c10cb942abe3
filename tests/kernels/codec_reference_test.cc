// The fp8 and kivi bodies against a second, deliberately plain implementation of docs/FORMAT.md
// written here with fminf / fmaxf / rintf (the operations the CUDA kernels use), on inputs with
// NaN, infinities, signed zeros, constant groups and an all-NaN group. This pins the CPU encoder's
// optimized loops to the specification and to the GPU's semantics.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "codec_test_util.h"
#include "codecs/geometry.h"
#include "kvtier/kernels/codec.h"

namespace kvtier::kernels {
namespace {

using internal::FloatToHalf;
using internal::HalfToFloat;

constexpr uint32_t kL = 1, kH = 2, kD = 64, kT = 70;

std::vector<float> SpecialInput(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01(0, 1);
  std::vector<float> x(size_t{kL} * 2 * kH * kT * kD);
  for (auto& v : x) v = n01(rng);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = INFINITY;
  x[3] = nan;
  x[100] = -0.0f;
  x[101] = 0.0f;
  x[500] = inf;
  for (uint32_t t = 0; t < kT; ++t) x[(size_t{1} * kT + t) * kD + 7] = 2.5f;   // constant key channel
  for (uint32_t t = 32; t < 64; ++t) x[(size_t{0} * kT + t) * kD + 9] = nan;  // all-NaN key group
  for (uint32_t d = 0; d < 32; ++d) x[(size_t{2} * kT + 5) * kD + d] = -0.0f;  // -0 value group
  for (uint32_t d = 32; d < 64; ++d) x[(size_t{3} * kT + 6) * kD + d] = nan;   // all-NaN value group
  x[(size_t{3} * kT + 9) * kD + 40] = -inf;
  return x;
}

std::vector<uint8_t> ToFp16(const std::vector<float>& x) {
  std::vector<uint8_t> out(x.size() * 2);
  for (size_t i = 0; i < x.size(); ++i) {
    const uint16_t h = FloatToHalf(x[i]);
    std::memcpy(&out[i * 2], &h, 2);
  }
  return out;
}

std::vector<uint8_t> EncodeApi(const char* codec, const std::vector<uint8_t>& in) {
  ChunkInput ci;
  ci.data = in.data();
  ci.layout = KvLayout::Mha(kL, kH, kH, kD);
  ci.num_tokens = kT;
  std::vector<uint8_t> payload;
  EXPECT_TRUE(Encode(*CodecParams::Parse(codec), ci, &payload).ok());
  return std::vector<uint8_t>(payload.begin() + 96, payload.end());
}

void Put32(std::vector<uint8_t>* b, size_t off, uint32_t v) { std::memcpy(b->data() + off, &v, 4); }

internal::StreamShape Shape() {
  internal::StreamShape s;
  s.mha = true;
  s.num_layers = kL;
  s.heads = kH;
  s.num_streams = 2 * kL * kH;
  s.tokens = kT;
  s.width = kD;
  s.elem_size = 2;
  return s;
}

// x rounded through fp16, as the encoder sees it.
float At(const std::vector<uint8_t>& in, size_t i) {
  uint16_t h;
  std::memcpy(&h, &in[i * 2], 2);
  return HalfToFloat(h);
}

TEST(CodecReferenceTest, Fp8MatchesSpecification) {
  const auto in = ToFp16(SpecialInput(1));
  const internal::Fp8Geometry g = internal::Fp8Geometry::Make(Shape());
  std::vector<uint8_t> want(g.body_bytes, 0);
  for (size_t r = 0; r < size_t{2} * kH * kT; ++r) {
    float amax = 0.0f;
    for (uint32_t d = 0; d < kD; ++d) amax = fmaxf(amax, fabsf(At(in, r * kD + d)));
    const float scale = amax / 448.0f, inv = 448.0f / amax;
    std::memcpy(&want[g.scales_offset + r * 4], &scale, 4);
    const bool zero = !(scale > 0.0f) || std::isinf(scale);
    for (uint32_t d = 0; d < kD; ++d) {
      const float x = At(in, r * kD + d);
      const float y = std::isinf(inv) ? x / scale : x * inv;
      want[g.codes_offset + r * kD + d] = zero ? 0 : internal::FloatToE4M3(y);
    }
  }
  EXPECT_EQ(EncodeApi("fp8", in), want);
}

TEST(CodecReferenceTest, KiviMatchesSpecification) {
  for (const char* codec : {"kivi:b=2,g=32", "kivi:b=4,g=32"}) {
    SCOPED_TRACE(codec);
    const CodecParams p = *CodecParams::Parse(codec);
    const uint32_t b = p.bits, G = p.group_size, cpw = 32 / b;
    const auto in = ToFp16(SpecialInput(2));
    const internal::KiviGeometry g = internal::KiviGeometry::Make(Shape(), b, G, 0, false, 0, 0);
    std::vector<uint8_t> want(g.body_bytes, 0);
    auto group = [&](float mn, float mx, uint16_t* sb, uint16_t* mb, float* s, float* m) {
      mn += 0.0f;
      mx += 0.0f;
      const float scale = (mx - mn) / float((1 << b) - 1);
      auto sat = [](float f) { return FloatToHalf(fmaxf(fminf(f, 65504.0f), -65504.0f)); };
      *sb = std::isnan(scale) ? FloatToHalf(scale) : sat(scale);
      *mb = std::isnan(mn) ? FloatToHalf(mn) : sat(mn);
      *s = HalfToFloat(*sb);
      *m = HalfToFloat(*mb);
    };
    auto quant = [&](float x, float s, float m) -> uint32_t {
      if (!(s > 0.0f)) return 0;
      const float v = (x - m) * (1.0f / s);
      return static_cast<uint32_t>(fminf(fmaxf(rintf(v), 0.0f), float((1 << b) - 1)));
    };
    for (uint32_t st = 0; st < 2 * kH; ++st) {
      const bool key = (st / kH) % 2 == 0;
      const size_t base = g.BlockOffset(st);
      const size_t meta = base + g.CodesBytes(key), raw = meta + g.MetaBytes(key);
      const uint32_t q = g.QuantizedTokens(key);
      auto x = [&](uint32_t t, uint32_t d) { return At(in, (size_t{st} * kT + t) * kD + d); };
      if (key) {
        for (uint32_t grp = 0; grp < q / G; ++grp) {
          for (uint32_t c = 0; c < kD; ++c) {
            float mn = NAN, mx = NAN;
            for (uint32_t t = grp * G; t < grp * G + G; ++t) mn = fminf(mn, x(t, c)), mx = fmaxf(mx, x(t, c));
            uint16_t sb, mb;
            float s, m;
            group(mn, mx, &sb, &mb, &s, &m);
            Put32(&want, meta + (size_t{grp} * kD + c) * 4, sb | uint32_t{mb} << 16);
            for (uint32_t w = 0; w < G / cpw; ++w) {
              uint32_t word = 0;
              for (uint32_t k = 0; k < cpw; ++k) word |= quant(x(grp * G + w * cpw + k, c), s, m) << (b * k);
              Put32(&want, base + ((size_t{grp} * (G / cpw) + w) * kD + c) * 4, word);
            }
          }
        }
      } else {
        for (uint32_t t = 0; t < q; ++t) {
          for (uint32_t grp = 0; grp < kD / G; ++grp) {
            float mn = NAN, mx = NAN;
            for (uint32_t c = grp * G; c < grp * G + G; ++c) mn = fminf(mn, x(t, c)), mx = fmaxf(mx, x(t, c));
            uint16_t sb, mb;
            float s, m;
            group(mn, mx, &sb, &mb, &s, &m);
            Put32(&want, meta + (size_t{t} * (kD / G) + grp) * 4, sb | uint32_t{mb} << 16);
            for (uint32_t w = 0; w < G / cpw; ++w) {
              uint32_t word = 0;
              for (uint32_t k = 0; k < cpw; ++k) word |= quant(x(t, grp * G + w * cpw + k), s, m) << (b * k);
              Put32(&want, base + (size_t{t} * (kD * b / 32) + grp * (G / cpw) + w) * 4, word);
            }
          }
        }
      }
      for (uint32_t r = 0; r < kT - q; ++r) {
        std::memcpy(&want[raw + size_t{r} * kD * 2], &in[(size_t{st} * kT + g.RawToken(key, r)) * kD * 2],
                    kD * 2);
      }
    }
    const auto got = EncodeApi(codec, in);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << "byte " << i;
  }
}

}  // namespace
}  // namespace kvtier::kernels
