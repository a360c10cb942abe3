// The steps the payload fuzz target runs on one input, shared with the unit test that replays the
// seed corpus (tests/kernels/codec_corpus_test.cc).
//
// Input: [mode byte][payload bytes]. Mode bit 0 set: recompute the header and body CRC-32C of the
// payload before decoding, so that mutations reach the codec decoders instead of stopping at the
// checksum. Returns the first error; aborts (a finding) when an invariant breaks: a payload that
// InspectPayload accepts must decode into its own contiguous layout and into a paged target with
// identical bytes, and a raw payload must re-encode to itself.
#ifndef KVTIER_FUZZ_PAYLOAD_FUZZ_INPUT_H_
#define KVTIER_FUZZ_PAYLOAD_FUZZ_INPUT_H_

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kvtier/common/crc32c.h"
#include "kvtier/kernels/codec.h"

namespace kvtier::fuzz {

inline void FuzzCheck(bool ok, const char* what) {
  if (!ok) {
    __builtin_printf("payload fuzz invariant broken: %s\n", what);
    std::abort();
  }
}

inline absl::Status RunPayloadInput(const uint8_t* data, size_t size) {
  using namespace kvtier::kernels;
  if (size == 0) return absl::InvalidArgumentError("empty input");
  const bool fix_crc = data[0] & 1;
  std::vector<uint8_t> payload(data + 1, data + size);
  if (fix_crc && payload.size() >= 96) {
    const uint32_t body_crc = Crc32c(payload.data() + 96, payload.size() - 96);
    std::memcpy(payload.data() + 80, &body_crc, 4);
    const uint32_t header_crc = Crc32c(payload.data(), 92);
    std::memcpy(payload.data() + 92, &header_crc, 4);
  }
  auto info = InspectPayload(payload);
  if (!info.ok()) return info.status();
  // Every accepted payload is at least 1/16 of its decoded size, so this bound only skips
  // inputs larger than a fuzzer produces.
  if (info->DecodedBytes() > (64u << 20)) return absl::ResourceExhaustedError("too large to decode");
  const KvLayout& l = info->layout;
  const uint32_t T = info->num_tokens;
  std::vector<uint8_t> out(info->DecodedBytes(), 0xA5);
  absl::Status s = Decode(payload, DecodeTarget::Contiguous(out.data(), l, T));
  FuzzCheck(s.ok(), "Decode failed on a payload InspectPayload accepted");

  // The same payload through a paged target with reversed blocks of 3 tokens.
  const uint32_t bs = 3, blocks = (T + bs - 1) / bs;
  std::vector<int32_t> table(blocks);
  for (uint32_t i = 0; i < blocks; ++i) table[i] = static_cast<int32_t>(blocks - 1 - i);
  const int64_t row = static_cast<int64_t>(l.VectorDim() * DTypeSize(l.dtype));
  const bool mha = l.kind == LayoutKind::kMha;
  const int64_t streams_per_layer = mha ? 2 * int64_t{l.num_kv_heads} : 1;
  const int64_t block_bytes = int64_t{bs} * row;
  std::vector<uint8_t> pbuf(size_t(l.num_layers) * streams_per_layer * blocks * block_bytes);
  DecodeTarget paged = DecodeTarget::Contiguous(pbuf.data(), l, T);
  for (uint32_t i = 0; i < l.num_layers; ++i) {
    paged.layer_base[i] = pbuf.data() + size_t(i) * streams_per_layer * blocks * block_bytes;
  }
  paged.stride_head = blocks * block_bytes;
  paged.stride_kv = mha ? l.num_kv_heads * paged.stride_head : 0;
  paged.stride_token = row;
  paged.block_table = table.data();
  paged.block_size = bs;
  paged.stride_block = block_bytes;
  s = Decode(payload, paged);
  FuzzCheck(s.ok(), "paged Decode failed on a payload InspectPayload accepted");
  for (uint32_t i = 0; i < l.num_layers; ++i) {
    for (int64_t st = 0; st < streams_per_layer; ++st) {
      for (uint32_t t = 0; t < T; ++t) {
        const uint8_t* a = out.data() + ((size_t(i) * streams_per_layer + st) * T + t) * row;
        const uint8_t* b = static_cast<uint8_t*>(paged.layer_base[i]) + st * paged.stride_head +
                           table[t / bs] * block_bytes + (t % bs) * row;
        FuzzCheck(std::memcmp(a, b, row) == 0, "paged and contiguous decodes differ");
      }
    }
  }

  if (info->codec.id == CodecId::kRaw) {
    ChunkInput in;
    in.data = out.data();
    in.layout = l;
    in.num_tokens = T;
    in.first_position = info->first_position;
    in.ends_sequence = info->ends_sequence;
    std::vector<uint8_t> again;
    FuzzCheck(Encode(info->codec, in, &again).ok(), "raw re-encode failed");
    FuzzCheck(again == payload, "raw payload does not re-encode to itself");
  }
  return absl::OkStatus();
}

}  // namespace kvtier::fuzz

#endif  // KVTIER_FUZZ_PAYLOAD_FUZZ_INPUT_H_
