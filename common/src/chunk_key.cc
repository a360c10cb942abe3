#include "kvtier/common/chunk_key.h"

// OpenSSL 3 marks SHA256_* deprecated in favour of EVP; the low-level calls avoid an EVP context
// allocation per chunk and compute exactly the same function.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#include <cstring>

#include <openssl/sha.h>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace kvtier {
namespace {

void PutU32(SHA256_CTX* ctx, uint32_t v) {
  const uint8_t le[4] = {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8),
                         static_cast<uint8_t>(v >> 16), static_cast<uint8_t>(v >> 24)};
  SHA256_Update(ctx, le, sizeof(le));
}

bool IsHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

}  // namespace

absl::StatusOr<ChunkKey> ChunkKey::FromBytes(std::string_view bytes) {
  if (bytes.size() != kSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk key must be ", kSize, " bytes, got ", bytes.size()));
  }
  std::array<uint8_t, kSize> a;
  std::memcpy(a.data(), bytes.data(), kSize);
  return ChunkKey(a);
}

absl::StatusOr<ChunkKey> ChunkKey::FromHex(std::string_view hex) {
  if (hex.size() != 2 * kSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("hex chunk key must be ", 2 * kSize, " digits, got ", hex.size()));
  }
  for (char c : hex) {
    if (!IsHex(c)) return absl::InvalidArgumentError("hex chunk key has a non-hex digit");
  }
  return FromBytes(absl::HexStringToBytes(absl::string_view(hex.data(), hex.size())));
}

std::string ChunkKey::ToHex() const { return absl::BytesToHexString(absl::string_view(view().data(), view().size())); }

ChunkKey NextChunkKey(const ChunkKey& previous, std::string_view salt,
                      absl::Span<const uint32_t> chunk_tokens) {
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  SHA256_Update(&ctx, previous.bytes().data(), ChunkKey::kSize);
  PutU32(&ctx, static_cast<uint32_t>(salt.size()));
  SHA256_Update(&ctx, salt.data(), salt.size());
  PutU32(&ctx, static_cast<uint32_t>(chunk_tokens.size()));
  // Tokens are hashed as little-endian u32; on a little-endian host that is their memory image.
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "big-endian hosts need a byte swap");
  SHA256_Update(&ctx, chunk_tokens.data(), chunk_tokens.size() * sizeof(uint32_t));
  std::array<uint8_t, ChunkKey::kSize> out;
  SHA256_Final(out.data(), &ctx);
  return ChunkKey(out);
}

std::vector<ChunkKey> ComputeChunkKeys(absl::Span<const uint32_t> tokens, std::string_view salt,
                                       uint32_t tokens_per_chunk, bool include_partial_tail) {
  std::vector<ChunkKey> keys;
  if (tokens_per_chunk == 0) return keys;
  keys.reserve(tokens.size() / tokens_per_chunk + 1);
  ChunkKey prev;
  for (size_t pos = 0; pos < tokens.size(); pos += tokens_per_chunk) {
    const size_t n = std::min<size_t>(tokens_per_chunk, tokens.size() - pos);
    if (n < tokens_per_chunk && !include_partial_tail) break;
    prev = NextChunkKey(prev, salt, tokens.subspan(pos, n));
    keys.push_back(prev);
  }
  return keys;
}

}  // namespace kvtier
