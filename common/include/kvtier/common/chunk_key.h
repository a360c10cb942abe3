// Chunk keys: the chained prefix hash that names every cached chunk.
//
//   key_0 = SHA-256(zeros(32)  || u32le(len(salt)) || salt || u32le(n) || u32le(token) * n)
//   key_i = SHA-256(key_{i-1}  || u32le(len(salt)) || salt || u32le(n) || u32le(token) * n)
//
// where n is the number of tokens in chunk i (tokens_per_chunk, or fewer for the last partial
// chunk) and salt is the namespace's tenant salt. Every integer is little-endian, so a key is the
// same on every machine and in every process (docs/FORMAT.md, "Chunk keys"). Because key_i folds
// in key_{i-1}, equal keys mean equal whole prefixes.
//
// Thread-safe: pure functions and a value type.
#ifndef KVTIER_COMMON_CHUNK_KEY_H_
#define KVTIER_COMMON_CHUNK_KEY_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvtier {

class ChunkKey {
 public:
  static constexpr size_t kSize = 32;

  ChunkKey() { bytes_.fill(0); }  // The all-zero key: the chain's "previous" for chunk 0.
  explicit ChunkKey(const std::array<uint8_t, kSize>& bytes) : bytes_(bytes) {}

  // Parses exactly 32 raw bytes.
  static absl::StatusOr<ChunkKey> FromBytes(std::string_view bytes);
  // Parses 64 lowercase or uppercase hex digits.
  static absl::StatusOr<ChunkKey> FromHex(std::string_view hex);

  const std::array<uint8_t, kSize>& bytes() const { return bytes_; }
  std::string_view view() const {
    return {reinterpret_cast<const char*>(bytes_.data()), kSize};
  }
  std::string ToHex() const;

  friend bool operator==(const ChunkKey& a, const ChunkKey& b) { return a.bytes_ == b.bytes_; }
  friend bool operator!=(const ChunkKey& a, const ChunkKey& b) { return !(a == b); }
  friend bool operator<(const ChunkKey& a, const ChunkKey& b) { return a.bytes_ < b.bytes_; }
  template <typename H>
  friend H AbslHashValue(H h, const ChunkKey& k) {
    return H::combine(std::move(h), k.view());
  }

 private:
  std::array<uint8_t, kSize> bytes_;
};

// key_i from key_{i-1} (`previous`; ChunkKey() for the first chunk), the salt and chunk i's tokens.
ChunkKey NextChunkKey(const ChunkKey& previous, std::string_view salt,
                      absl::Span<const uint32_t> chunk_tokens);

// Keys of every chunk of `tokens` split into chunks of `tokens_per_chunk`. When
// `include_partial_tail` is false (the default, what a prefix cache stores), a trailing partial
// chunk gets no key. tokens_per_chunk must be > 0.
std::vector<ChunkKey> ComputeChunkKeys(absl::Span<const uint32_t> tokens, std::string_view salt,
                                       uint32_t tokens_per_chunk,
                                       bool include_partial_tail = false);

}  // namespace kvtier

#endif  // KVTIER_COMMON_CHUNK_KEY_H_
