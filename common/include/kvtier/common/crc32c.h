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

}  // namespace kvtier

#endif  // KVTIER_COMMON_CRC32C_H_
