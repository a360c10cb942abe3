// CRC-32C. No Debian package ships a C/C++ CRC-32C library (RocksDB's is internal), so it lives
// here: the SSE4.2 instruction when present, with a byte-table fallback for other CPUs.
#include "kvtier/common/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#include <nmmintrin.h>
#endif

namespace kvtier {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;

constexpr std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kTable = MakeTable();

uint32_t ExtendPortable(uint32_t crc, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) crc = kTable[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
bool HaveSse42() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  return (c & bit_SSE4_2) != 0;
}

// Long inputs run three independent crc32 streams over adjacent stripes, because one stream is
// bound by the instruction's 3-cycle latency (about 3 GB/s) while the CPU can issue one per cycle.
// The stripes are then joined with the identity crc(A || B) = Shift_|B|(crc(A)) ^ crc_0(B), where
// Shift_k is the GF(2)-linear map "feed k zero bytes", tabulated once for k = kStripe.
constexpr size_t kStripe = 8192;

struct ShiftTable {
  uint32_t t[4][256];
};

const ShiftTable& StripeShift() {
  static const ShiftTable table = [] {
    ShiftTable s{};
    uint32_t column[32];
    for (int i = 0; i < 32; ++i) {
      uint64_t c = uint64_t{1} << i;
      for (size_t k = 0; k < kStripe / 8; ++k) c = _mm_crc32_u64(c, 0);
      column[i] = static_cast<uint32_t>(c);
    }
    for (int k = 0; k < 4; ++k) {
      for (uint32_t n = 0; n < 256; ++n) {
        uint32_t v = 0;
        for (int j = 0; j < 8; ++j) {
          if ((n >> j) & 1) v ^= column[8 * k + j];
        }
        s.t[k][n] = v;
      }
    }
    return s;
  }();
  return table;
}

inline uint32_t Shift(const ShiftTable& s, uint32_t c) {
  return s.t[0][c & 0xff] ^ s.t[1][(c >> 8) & 0xff] ^ s.t[2][(c >> 16) & 0xff] ^ s.t[3][c >> 24];
}

uint32_t ExtendSse42(uint32_t crc, const uint8_t* p, size_t n) {
  uint64_t c = crc;
  if (n >= 3 * kStripe) {
    const ShiftTable& shift = StripeShift();
    while (n >= 3 * kStripe) {
      uint64_t c0 = c, c1 = 0, c2 = 0;
      for (size_t i = 0; i < kStripe; i += 8) {
        uint64_t v0, v1, v2;
        std::memcpy(&v0, p + i, 8);
        std::memcpy(&v1, p + kStripe + i, 8);
        std::memcpy(&v2, p + 2 * kStripe + i, 8);
        c0 = _mm_crc32_u64(c0, v0);
        c1 = _mm_crc32_u64(c1, v1);
        c2 = _mm_crc32_u64(c2, v2);
      }
      uint32_t joined = Shift(shift, static_cast<uint32_t>(c0)) ^ static_cast<uint32_t>(c1);
      c = Shift(shift, joined) ^ static_cast<uint32_t>(c2);
      p += 3 * kStripe;
      n -= 3 * kStripe;
    }
  }
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n--) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}
#endif

}  // namespace

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
#if defined(__x86_64__)
  static const bool have_sse42 = HaveSse42();
  crc = have_sse42 ? ExtendSse42(crc, p, size) : ExtendPortable(crc, p, size);
#else
  crc = ExtendPortable(crc, p, size);
#endif
  return ~crc;
}

// ---- Combining CRCs: arithmetic on polynomials over GF(2) modulo the Castagnoli polynomial P. ----
// In the reflected representation the CRC register uses, bit 31 holds the coefficient of x^0 and
// bit 0 that of x^31; multiplying by x is a right shift, folding x^32 back in as P - x^32 (kPoly).
// A conditioned CRC (initial register and final xor all ones) satisfies
//   crc(a||b) = crc(a) * x^(8|b|) + crc(b)   (mod P),
// because the all-ones terms of a and of b cancel; so combining needs x^(8n) mod P and a product.
namespace {

uint32_t MulModP(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (int i = 0; i < 32; ++i) {  // b = (original b) * x^i throughout
    if (a & (0x80000000u >> i)) product ^= b;
    b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;
  }
  return product;
}

// x^(8 * bytes) mod P, by squaring.
uint32_t XPowBytesModP(uint64_t bytes) {
  uint32_t result = 0x80000000u;  // x^0
  uint32_t power = 0x00800000u;   // x^8
  while (bytes != 0) {
    if (bytes & 1) result = MulModP(result, power);
    power = MulModP(power, power);
    bytes >>= 1;
  }
  return result;
}

}  // namespace

uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, size_t size_b) {
  return MulModP(crc_a, XPowBytesModP(size_b)) ^ crc_b;
}

}  // namespace kvtier
