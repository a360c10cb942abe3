// Payload format v1: the fixed 96-byte little-endian header (docs/FORMAT.md, "Payload header").
// The dispatcher writes and checks headers here; codecs never see them. Not a public header.
// Thread-safe (pure functions).
#ifndef KVTIER_KERNELS_SRC_CODECS_FORMAT_H_
#define KVTIER_KERNELS_SRC_CODECS_FORMAT_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvtier/kernels/codec.h"

namespace kvtier::kernels::internal {

inline constexpr uint32_t kPayloadMagic = 0x5054564Bu;  // "KVTP" as bytes 4B 56 54 50
inline constexpr uint16_t kFormatVersion = 1;
inline constexpr size_t kHeaderSize = 96;
inline constexpr uint32_t kFlagEndsSequence = 1u << 0;

struct HeaderFields {
  CodecParams codec;
  KvLayout layout;
  uint32_t num_tokens = 0;
  uint64_t first_position = 0;
  bool ends_sequence = false;
  uint64_t body_bytes = 0;
  uint32_t body_crc = 0;
};

// Writes the header (with its own CRC) into out[0, kHeaderSize).
void WriteHeader(const HeaderFields& h, uint8_t* out);

// Writes the header of an encoded chunk into payload[0, kHeaderSize): the chunk's parameters and
// shape from `params` / `input`, and the size and CRC-32C of the body that follows it in
// `payload` (already written).
void WriteChunkHeader(const CodecParams& params, const ChunkInput& input, uint64_t body_bytes,
                      uint8_t* payload);

// Parses and checks the header in `payload`: size, magic, version, header size, header CRC,
// reserved bytes, flags, and that codec params and layout validate. Does not look at the body
// (the caller checks body size and CRC). Errors: InvalidArgument, DataLoss (header CRC),
// Unimplemented (newer version).
absl::StatusOr<HeaderFields> ParseHeader(absl::Span<const uint8_t> payload);

}  // namespace kvtier::kernels::internal

#endif  // KVTIER_KERNELS_SRC_CODECS_FORMAT_H_
