// Payload header v1 writer and parser. Byte offsets are listed in docs/FORMAT.md.
#include "codecs/format.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kvtier/common/crc32c.h"

namespace kvtier::kernels::internal {
namespace {

void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t Get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t Get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Offsets (docs/FORMAT.md).
constexpr size_t kOffMagic = 0, kOffVersion = 4, kOffHeaderSize = 6, kOffCodec = 8,
                 kOffBits = 9, kOffGroup = 10, kOffSink = 12, kOffTail = 14, kOffVariant = 16,
                 kOffRotation = 17, kOffSplit = 18, kOffQjl = 19, kOffSeed = 20,
                 kOffKind = 28, kOffDtype = 29, kOffMatrix = 30, kOffReserved31 = 31, kOffLayers = 32,
                 kOffKvHeads = 36, kOffQueryHeads = 40, kOffHeadDim = 44, kOffLatent = 48,
                 kOffRope = 52, kOffTokens = 56, kOffFlags = 60, kOffFirstPos = 64,
                 kOffBodyBytes = 72, kOffBodyCrc = 80, kOffReserved84 = 84, kOffHeaderCrc = 92;
static_assert(kOffHeaderCrc + 4 == kHeaderSize);

}  // namespace

void WriteChunkHeader(const CodecParams& params, const ChunkInput& input, uint64_t body_bytes,
                      uint8_t* payload) {
  HeaderFields h;
  h.codec = params;
  h.layout = input.layout;
  h.num_tokens = input.num_tokens;
  h.first_position = input.first_position;
  h.ends_sequence = input.ends_sequence;
  h.body_bytes = body_bytes;
  h.body_crc = Crc32c(payload + kHeaderSize, body_bytes);
  WriteHeader(h, payload);
}

void WriteHeader(const HeaderFields& h, uint8_t* out) {
  std::memset(out, 0, kHeaderSize);
  Put32(out + kOffMagic, kPayloadMagic);
  Put16(out + kOffVersion, kFormatVersion);
  Put16(out + kOffHeaderSize, static_cast<uint16_t>(kHeaderSize));
  out[kOffCodec] = static_cast<uint8_t>(h.codec.id);
  out[kOffBits] = h.codec.bits;
  Put16(out + kOffGroup, h.codec.group_size);
  Put16(out + kOffSink, h.codec.sink_tokens);
  Put16(out + kOffTail, h.codec.tail_tokens);
  out[kOffVariant] = static_cast<uint8_t>(h.codec.tq_variant);
  out[kOffRotation] = static_cast<uint8_t>(h.codec.tq_rotation);
  out[kOffSplit] = static_cast<uint8_t>(h.codec.tq_split);
  out[kOffQjl] = static_cast<uint8_t>(h.codec.tq_qjl);
  Put64(out + kOffSeed, h.codec.seed);
  out[kOffKind] = static_cast<uint8_t>(h.layout.kind);
  out[kOffDtype] = static_cast<uint8_t>(h.layout.dtype);
  out[kOffMatrix] = static_cast<uint8_t>(h.codec.tq_matrix);
  Put32(out + kOffLayers, h.layout.num_layers);
  Put32(out + kOffKvHeads, h.layout.num_kv_heads);
  Put32(out + kOffQueryHeads, h.layout.num_query_heads);
  Put32(out + kOffHeadDim, h.layout.head_dim);
  Put32(out + kOffLatent, h.layout.latent_dim);
  Put32(out + kOffRope, h.layout.rope_dim);
  Put32(out + kOffTokens, h.num_tokens);
  Put32(out + kOffFlags, h.ends_sequence ? kFlagEndsSequence : 0u);
  Put64(out + kOffFirstPos, h.first_position);
  Put64(out + kOffBodyBytes, h.body_bytes);
  Put32(out + kOffBodyCrc, h.body_crc);
  Put32(out + kOffHeaderCrc, Crc32c(out, kOffHeaderCrc));
}

absl::StatusOr<HeaderFields> ParseHeader(absl::Span<const uint8_t> payload) {
  // The first 8 bytes (magic, version, header size) are read before the header CRC so that a
  // newer format is reported as such rather than as corruption.
  if (payload.size() < 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("payload: ", payload.size(), " bytes is shorter than a header"));
  }
  const uint8_t* p = payload.data();
  if (Get32(p + kOffMagic) != kPayloadMagic) {
    return absl::InvalidArgumentError("payload: bad magic (not a kvtier payload)");
  }
  const uint16_t version = Get16(p + kOffVersion);
  if (version == 0) return absl::InvalidArgumentError("payload: format version 0 is invalid");
  if (version > kFormatVersion) {
    return absl::UnimplementedError(absl::StrCat("payload: format version ", version,
                                                 " is newer than this build reads (",
                                                 kFormatVersion, ")"));
  }
  const uint16_t header_size = Get16(p + kOffHeaderSize);
  if (header_size != kHeaderSize) {
    return absl::InvalidArgumentError(absl::StrCat("payload: header size ", header_size,
                                                   " (format v1 headers are ", kHeaderSize,
                                                   " bytes)"));
  }
  if (payload.size() < kHeaderSize) {
    return absl::InvalidArgumentError(absl::StrCat("payload: truncated header (", payload.size(),
                                                   " of ", kHeaderSize, " bytes)"));
  }
  const uint32_t want_crc = Get32(p + kOffHeaderCrc);
  const uint32_t got_crc = Crc32c(p, kOffHeaderCrc);
  if (want_crc != got_crc) {
    return absl::DataLossError(absl::StrCat("payload: header checksum mismatch (stored ",
                                            absl::Hex(want_crc), ", computed ",
                                            absl::Hex(got_crc), ")"));
  }
  if (p[kOffReserved31] != 0 || Get64(p + kOffReserved84) != 0) {
    return absl::InvalidArgumentError("payload: reserved header bytes are not zero");
  }
  HeaderFields h;
  h.codec.id = static_cast<CodecId>(p[kOffCodec]);
  h.codec.bits = p[kOffBits];
  h.codec.group_size = Get16(p + kOffGroup);
  h.codec.sink_tokens = Get16(p + kOffSink);
  h.codec.tail_tokens = Get16(p + kOffTail);
  h.codec.tq_variant = static_cast<TurboQuantVariant>(p[kOffVariant]);
  h.codec.tq_rotation = static_cast<TurboQuantRotation>(p[kOffRotation]);
  h.codec.tq_split = static_cast<TurboQuantSplit>(p[kOffSplit]);
  h.codec.tq_qjl = static_cast<TurboQuantQjl>(p[kOffQjl]);  // checked by Validate()
  // Checked by Validate(): 0 or 1, and 1 only for a turboquant codec that uses a matrix.
  h.codec.tq_matrix = static_cast<TurboQuantMatrix>(p[kOffMatrix]);
  h.codec.seed = Get64(p + kOffSeed);
  h.layout.kind = static_cast<LayoutKind>(p[kOffKind]);
  h.layout.dtype = static_cast<DType>(p[kOffDtype]);
  h.layout.num_layers = Get32(p + kOffLayers);
  h.layout.num_kv_heads = Get32(p + kOffKvHeads);
  h.layout.num_query_heads = Get32(p + kOffQueryHeads);
  h.layout.head_dim = Get32(p + kOffHeadDim);
  h.layout.latent_dim = Get32(p + kOffLatent);
  h.layout.rope_dim = Get32(p + kOffRope);
  h.num_tokens = Get32(p + kOffTokens);
  const uint32_t flags = Get32(p + kOffFlags);
  if (flags & ~kFlagEndsSequence) {
    return absl::InvalidArgumentError(
        absl::StrCat("payload: unknown header flags ", absl::Hex(flags)));
  }
  h.ends_sequence = (flags & kFlagEndsSequence) != 0;
  h.first_position = Get64(p + kOffFirstPos);
  h.body_bytes = Get64(p + kOffBodyBytes);
  h.body_crc = Get32(p + kOffBodyCrc);
  if (absl::Status s = h.codec.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("payload: ", s.message()));
  }
  if (absl::Status s = h.layout.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("payload: ", s.message()));
  }
  return h;
}

}  // namespace kvtier::kernels::internal
