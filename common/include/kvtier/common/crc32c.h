// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every kvtier payload.
//
// Uses the SSE4.2 crc32 instruction when the CPU has it, a table otherwise; both give the same
// value. Thread-safe (pure functions).
#ifndef KVTIER_COMMON_CRC32C_H_
#define KVTIER_COMMON_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace kvtier {

// Extends `crc` (the value returned for the bytes before `data`; 0 to start) over `size` bytes.
// Crc32c(Crc32c(0, a, n), b, m) == Crc32c(0, a||b, n+m).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size);

inline uint32_t Crc32c(const void* data, size_t size) { return Crc32cExtend(0, data, size); }

// The CRC-32C of a||b from the CRCs of a and of b (`size_b` bytes), without the bytes:
// Crc32cCombine(Crc32c(a), Crc32c(b), |b|) == Crc32c(a||b). O(log size_b).
uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, size_t size_b);

// The CRC-32C of b from the CRCs of a||b and of its prefix a (b is `size_b` bytes long):
// the inverse of Crc32cCombine, so one pass over a||b checks both the whole and its tail.
inline uint32_t Crc32cOfSuffix(uint32_t crc_ab, uint32_t crc_a, size_t size_b) {
  return Crc32cCombine(crc_a, 0, size_b) ^ crc_ab;
}

}  // namespace kvtier

#endif  // KVTIER_COMMON_CRC32C_H_
