// CRC-32C through Intel ISA-L (Debian libisal-dev): crc32_iscsi is CRC-32C, dispatched at run time
// to the fastest code the CPU has (PCLMULQDQ / VPCLMULQDQ folding, about 50 GB/s on an AVX-512
// server core; the SSE4.2 crc32 instruction or a table on older CPUs). Combining CRCs without the
// bytes (below) is kvtier's own: ISA-L has no such function.
#include "kvtier/common/crc32c.h"

#include <isa-l/crc.h>

#include <climits>
#include <cstring>

namespace kvtier {

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size) {
  // crc32_iscsi keeps the register un-inverted at both ends and takes an int length.
  auto* p = static_cast<unsigned char*>(const_cast<void*>(data));
  uint32_t reg = ~crc;
  constexpr size_t kMaxPiece = size_t{1} << 30;
  while (size > 0) {
    const size_t n = size < kMaxPiece ? size : kMaxPiece;
    reg = crc32_iscsi(p, static_cast<int>(n), reg);
    p += n;
    size -= n;
  }
  return ~reg;
}

// ---- Combining CRCs: arithmetic on polynomials over GF(2) modulo the Castagnoli polynomial P. ----
// In the reflected representation the CRC register uses, bit 31 holds the coefficient of x^0 and
// bit 0 that of x^31; multiplying by x is a right shift, folding x^32 back in as P - x^32 (kPoly).
// A conditioned CRC (initial register and final xor all ones) satisfies
//   crc(a||b) = crc(a) * x^(8|b|) + crc(b)   (mod P),
// because the all-ones terms of a and of b cancel; so combining needs x^(8n) mod P and a product.
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // the Castagnoli polynomial, reflected

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

uint32_t Crc32cCopy(uint32_t crc, void* dst, const void* src, size_t size) {
  auto* d = static_cast<uint8_t*>(dst);
  const auto* s = static_cast<const uint8_t*>(src);
  for (size_t off = 0; off < size; off += kCrc32cCopyPiece) {
    const size_t n = size - off < kCrc32cCopyPiece ? size - off : kCrc32cCopyPiece;
    std::memcpy(d + off, s + off, n);
    crc = Crc32cExtend(crc, s + off, n);
  }
  return crc;
}

}  // namespace kvtier
