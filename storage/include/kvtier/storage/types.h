// Value types shared by every storage API: namespace ids, storage keys, tier kinds, chunk
// metadata and lease ids.
//
// Thread-safety: plain values; safe to copy between threads.
#ifndef KVTIER_STORAGE_TYPES_H_
#define KVTIER_STORAGE_TYPES_H_

#include <cstdint>
#include <string_view>

#include "kvtier/common/chunk_key.h"

namespace kvtier::storage {

// Opaque namespace id. The daemon owns namespace metadata (model, layout, salt) and maps each
// namespace to a small integer; storage only keeps chunks of different ids apart.
using NamespaceId = uint32_t;

// The identity of a stored chunk: (namespace id, chained prefix key).
struct StorageKey {
  NamespaceId ns = 0;
  ChunkKey key;

  friend bool operator==(const StorageKey& a, const StorageKey& b) {
    return a.ns == b.ns && a.key == b.key;
  }
  friend bool operator!=(const StorageKey& a, const StorageKey& b) { return !(a == b); }
  template <typename H>
  friend H AbslHashValue(H h, const StorageKey& k) {
    return H::combine(std::move(h), k.ns, k.key);
  }
};

// Tiers from fastest to slowest. The numeric values index per-tier arrays (kNumTiers entries).
enum class TierKind : uint8_t { kGpu = 0, kHost = 1, kDisk = 2 };
inline constexpr int kNumTiers = 3;
inline constexpr int TierIndex(TierKind t) { return static_cast<int>(t); }
std::string_view TierName(TierKind t);  // "gpu", "host", "disk".

// What the caller says about a payload. Storage treats the payload as opaque bytes; these fields
// are kept next to it and returned with it, so the daemon needs no second lookup.
struct ChunkMeta {
  uint8_t codec_id = 0;        // kvtier::kernels::CodecId value of the payload's codec.
  uint32_t num_tokens = 0;     // Tokens the chunk covers.
  uint64_t decoded_bytes = 0;  // Size of the chunk once decoded (for accounting/metrics).

  friend bool operator==(const ChunkMeta& a, const ChunkMeta& b) {
    return a.codec_id == b.codec_id && a.num_tokens == b.num_tokens &&
           a.decoded_bytes == b.decoded_bytes;
  }
};

// A lease pins the hits of one Lookup until it expires or is released. 0 means "no lease".
using LeaseId = uint64_t;
inline constexpr LeaseId kNoLease = 0;

}  // namespace kvtier::storage

#endif  // KVTIER_STORAGE_TYPES_H_
