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

// Appends `size` bytes from `src` to `out` (std::string or std::vector<uint8_t>; nothing is
// zero-filled first) and returns `crc` extended over the appended copy. Copies in cache-sized
// pieces, each checksummed while still in cache. The checksum covers the bytes appended even if
// `src` changes meanwhile (shared memory).
inline constexpr size_t kCrc32cCopyPiece = 64 << 10;  // fits L2 with room to spare
template <typename Container>
uint32_t Crc32cAppend(uint32_t crc, Container* out, const void* src, size_t size) {
  using T = typename Container::value_type;  // char or uint8_t: pointer ranges copy in bulk
  const T* s = static_cast<const T*>(src);
  const size_t start = out->size();
  for (size_t off = 0; off < size; off += kCrc32cCopyPiece) {
    const size_t n = size - off < kCrc32cCopyPiece ? size - off : kCrc32cCopyPiece;
    out->insert(out->end(), s + off, s + off + n);
    crc = Crc32cExtend(crc, out->data() + start + off, n);
  }
  return crc;
}

// Copies `size` bytes from `src` to `dst` (not overlapping) and returns `crc` extended over
// them, computed on `src` piece by piece right after each piece is copied (still in cache). For
// a `src` nobody changes meanwhile (stored bytes written out to a client's shared memory).
uint32_t Crc32cCopy(uint32_t crc, void* dst, const void* src, size_t size);

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
