#include "kvtier/common/crc32c.h"

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace kvtier {
namespace {

// Reference: bitwise CRC-32C, straight from the definition.
uint32_t BitwiseCrc32c(const uint8_t* p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return ~c;
}

TEST(Crc32cTest, StandardCheckValues) {
  // "123456789" -> 0xE3069283 (the CRC catalogue's check value for CRC-32C); RFC 3720 B.4 vectors.
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xff), inc(32);
  for (int i = 0; i < 32; ++i) inc[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(Crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(Crc32c(inc.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(Crc32c(nullptr, 0), 0u);
}

TEST(Crc32cTest, MatchesBitwiseReferenceAndExtends) {
  std::mt19937 rng(42);
  for (size_t n : {1u, 7u, 8u, 9u, 63u, 4096u, 100003u}) {
    std::vector<uint8_t> buf(n);
    for (auto& b : buf) b = static_cast<uint8_t>(rng());
    const uint32_t want = BitwiseCrc32c(buf.data(), n);
    EXPECT_EQ(Crc32c(buf.data(), n), want) << n;
    const size_t cut = n / 3;
    EXPECT_EQ(Crc32cExtend(Crc32c(buf.data(), cut), buf.data() + cut, n - cut), want) << n;
  }
}

TEST(Crc32cTest, LongAndMisalignedInputs) {
  // Inputs long enough for the three-stripe path, at odd offsets, split at odd points.
  std::mt19937 rng(7);
  std::vector<uint8_t> buf((1 << 20) + 64);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  for (size_t off : {0u, 1u, 13u}) {
    for (size_t n : {24575u, 24576u, 24577u, 49153u, 1048576u}) {
      const uint32_t want = BitwiseCrc32c(buf.data() + off, n);
      EXPECT_EQ(Crc32c(buf.data() + off, n), want) << off << " " << n;
      const size_t cut = n / 2 + 5;
      EXPECT_EQ(Crc32cExtend(Crc32c(buf.data() + off, cut), buf.data() + off + cut, n - cut), want)
          << off << " " << n;
    }
  }
}

}  // namespace
}  // namespace kvtier

namespace kvtier {
namespace {

// Combining CRCs without the bytes: every split of random buffers (sizes around the 8-byte
// stride and the 3-stream block sizes, and up to 1 MiB), including empty halves, and the suffix
// CRC recovered from the whole and the prefix.
TEST(Crc32cCombineTest, CombineAndSuffixMatchDirectComputation) {
  std::mt19937_64 rng(17);
  const size_t sizes[] = {0, 1, 7, 8, 9, 63, 64, 255, 4096, 4099, 65536, (1u << 20) + 3};
  for (size_t n : sizes) {
    std::vector<uint8_t> buf(n);
    for (auto& b : buf) b = static_cast<uint8_t>(rng());
    const uint32_t whole = Crc32c(buf.data(), n);
    for (size_t split : {size_t{0}, n / 3, n / 2, n > 0 ? n - 1 : 0, n}) {
      const uint32_t a = Crc32c(buf.data(), split);
      const uint32_t b = Crc32c(buf.data() + split, n - split);
      EXPECT_EQ(Crc32cCombine(a, b, n - split), whole) << n << " split " << split;
      EXPECT_EQ(Crc32cOfSuffix(whole, a, n - split), b) << n << " split " << split;
    }
  }
  // Known value: "123456789" (0xE3069283) from "12345" and "6789".
  EXPECT_EQ(Crc32cCombine(Crc32c("12345", 5), Crc32c("6789", 4), 4), 0xE3069283u);
  // A wrong prefix CRC gives a wrong suffix CRC (the check can fail).
  const uint32_t whole = Crc32c("123456789", 9);
  EXPECT_NE(Crc32cOfSuffix(whole, Crc32c("12344", 5), 4), Crc32c("6789", 4));
}

// Copying with a checksum (Crc32cAppend, Crc32cCopy): the bytes land after what the container held
// (or in the destination, nothing past it), unchanged, in both container types, across piece
// boundaries; the CRC equals a separate pass and extends `crc`.
TEST(Crc32cAppendTest, CopyAndAppendChecksumWhatTheyCopy) {
  std::mt19937_64 rng(5);
  for (size_t n : {size_t{0}, size_t{1}, kCrc32cCopyPiece - 1, kCrc32cCopyPiece,
                   3 * kCrc32cCopyPiece + 17}) {
    std::vector<uint8_t> src(n);
    for (auto& b : src) b = static_cast<uint8_t>(rng());
    std::string s = "ab";
    const uint32_t crc = Crc32cAppend(Crc32c("ab", 2), &s, src.data(), n);
    EXPECT_EQ(crc, Crc32c(s.data(), s.size())) << n;
    ASSERT_EQ(s.size(), n + 2);
    EXPECT_TRUE(std::equal(src.begin(), src.end(), s.begin() + 2,
                           [](uint8_t a, char b) { return a == static_cast<uint8_t>(b); }))
        << n;
    std::vector<uint8_t> v;
    EXPECT_EQ(Crc32cAppend(0, &v, src.data(), n), Crc32c(src.data(), n)) << n;
    EXPECT_EQ(v, src) << n;
    std::vector<uint8_t> dst(n + 1, 0xEE);
    EXPECT_EQ(Crc32cCopy(7, dst.data(), src.data(), n), Crc32cExtend(7, src.data(), n)) << n;
    EXPECT_TRUE(std::equal(src.begin(), src.end(), dst.begin())) << n;
    EXPECT_EQ(dst[n], 0xEE) << "wrote past the end, n = " << n;
  }
}

}  // namespace
}  // namespace kvtier
