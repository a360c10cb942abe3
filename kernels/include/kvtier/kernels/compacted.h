// Compacted context: what is left of a prompt's KV cache after token selection (selection.h).
//
// A compacted payload holds, per layer and KV head, the kept positions (ascending, original
// positions) and the K/V of those tokens, the latter encoded by any codec of codec.h (raw, fp8,
// kivi, turboquant) through the public Encode()/Decode(): one inner codec payload per layer,
// whose "tokens" are each head's kept tokens in order. The outer header carries its own magic
// ("KVTC"), version and CRC-32C of header and body (docs/FORMAT.md, "## compacted context").
//
// v1 encodes from and decodes to host memory only; MHA/GQA layouts only (MLA caches have no KV
// heads to select per).
//
// Thread-safety: all functions are thread-safe; concurrent calls on distinct buffers are fine.
#ifndef KVTIER_KERNELS_COMPACTED_H_
#define KVTIER_KERNELS_COMPACTED_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvtier/kernels/codec.h"
#include "kvtier/kernels/layout.h"
#include "kvtier/kernels/selection.h"

namespace kvtier::kernels {

// The full prompt's KV in the canonical chunk layout [layer][K|V][kv_head][token][dim], host.
struct CompactedSource {
  const void* kv = nullptr;
  KvLayout layout;             // kMha; num_layers and num_kv_heads must match the selection
  uint32_t num_tokens = 0;     // T; must match the selection
  uint64_t first_position = 0; // position of token 0 in its sequence (kivi sink tokens)
  bool ends_sequence = true;   // the prompt ends here (kivi keeps the last R kept tokens exact)
};

// Encodes the tokens `selection` keeps from `source`, their K/V through `inner` (any codec but
// kCompacted/kLatent), into `payload` (resized). Errors: InvalidArgument for mismatched shapes,
// an invalid selection, device memory or an inner codec the layout cannot use.
absl::Status EncodeCompacted(const CodecParams& inner, const CompactedSource& source,
                             const Selection& selection, std::vector<uint8_t>* payload);

// What a compacted payload says about itself after both checksums were verified.
struct CompactedInfo {
  uint16_t format_version = 0;
  CodecParams inner_codec;
  KvLayout layout;                       // of the source prompt
  uint32_t source_tokens = 0;            // T
  uint64_t first_position = 0;
  bool ends_sequence = false;
  std::vector<uint32_t> kept_per_layer;  // [num_layers]
  size_t header_bytes = 0;
  size_t body_bytes = 0;
};

// True when `payload` starts with the compacted-context magic (nothing else is checked).
bool IsCompactedPayload(absl::Span<const uint8_t> payload);

// Checks magic, version, header fields and both CRCs; never reads past `payload`.
// Errors: InvalidArgument (malformed), DataLoss (checksum mismatch), Unimplemented (newer version).
absl::StatusOr<CompactedInfo> InspectCompacted(absl::Span<const uint8_t> payload);

// A decoded compacted context, host memory.
struct CompactedContext {
  CompactedInfo info;
  Selection selection;     // kept positions per (layer, KV head)
  // Per layer l, at LayerOffset(l): [K|V][kv_head][kept_per_layer[l]][head_dim] in layout.dtype.
  std::vector<uint8_t> kv;

  size_t LayerOffset(uint32_t layer) const;
  // Bytes of element (layer, kv 0=K/1=V, head, i-th kept token, dim 0).
  const uint8_t* Vector(uint32_t layer, uint32_t kv_index, uint32_t kv_head, uint32_t i) const;
};

// Validates everything InspectCompacted does plus every inner payload and the positions
// (strictly ascending, below T), then decodes. On error nothing is returned.
absl::StatusOr<CompactedContext> DecodeCompacted(absl::Span<const uint8_t> payload);

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_COMPACTED_H_
