// Domain types of the kvtier client SDK: namespaces, lookup results, stored and fetched chunks,
// daemon statistics. They mirror kvtier.proto (docs/API.md) without exposing protobuf.
//
// Value types; thread-compatible.
#ifndef KVTIER_CLIENT_TYPES_H_
#define KVTIER_CLIENT_TYPES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "kvtier/kernels/layout.h"

namespace kvtier::client {

// One model's cache identity and shape (kvtier.proto Namespace).
struct NamespaceSpec {
  std::string name;              // [A-Za-z0-9._-]{1,128}
  std::string model_id;          // informational
  kernels::KvLayout layout;
  std::string codec = "raw";     // kvtier codec text form, e.g. "fp8", "kivi:b=2,g=32"
  uint32_t tokens_per_chunk = 0; // 0 = the daemon default (256)
  std::string salt;              // tenant salt folded into every chunk key (<= 256 bytes)
};

enum class Tier : uint8_t { kUnknown = 0, kGpu = 1, kHost = 2, kDisk = 3 };
const char* TierName(Tier tier);  // "gpu", "host", "disk", "unknown"

struct LookupResult {
  uint32_t prefix_chunks = 0;     // longest run of consecutive hits from keys[0]
  uint64_t prefix_tokens = 0;
  std::vector<Tier> tiers;        // per prefix chunk: fastest tier holding it
  uint64_t lease_id = 0;          // non-zero when a lease was requested and taken
};

// Bytes given to Put / returned by Get: raw tensor bytes in the namespace's canonical layout and
// dtype (the daemon encodes / decodes), or an already-encoded kvtier payload.
enum class DataFormat : uint8_t { kTensor = 0, kPayload = 1 };

struct PutOptions {
  DataFormat format = DataFormat::kTensor;
  uint32_t num_tokens = 0;       // tokens in the chunk (<= tokens_per_chunk)
  uint64_t first_position = 0;   // position of the chunk's first token in its sequence
  bool ends_sequence = false;
  bool pin = false;              // keep the chunk unevictable until Unpin
};

struct PutResult {
  uint64_t stored_bytes = 0;     // payload size as stored (compressed)
  uint64_t tensor_bytes = 0;     // decoded size
  Tier tier = Tier::kUnknown;
  bool replaced = false;
};

struct GetOptions {
  DataFormat format = DataFormat::kTensor;
  uint64_t release_lease_id = 0; // release this Lookup lease once the chunk has been sent
};

struct GetResult {
  std::vector<uint8_t> data;     // tensor bytes or payload, as asked (checksum verified)
  DataFormat format = DataFormat::kTensor;
  uint32_t num_tokens = 0;
  uint64_t first_position = 0;
  bool ends_sequence = false;
  std::string codec;
  kernels::KvLayout layout;
  Tier tier = Tier::kUnknown;
  uint64_t payload_bytes = 0;    // compressed size as stored
};

struct TierStats {
  Tier tier = Tier::kUnknown;
  uint64_t capacity_bytes = 0, used_bytes = 0, chunks = 0, hits = 0, misses = 0, evictions = 0;
};

struct ServerStats {
  std::vector<TierStats> tiers;
  uint32_t namespaces = 0;
  uint64_t pinned_chunks = 0, active_leases = 0;
  uint64_t lookup_tokens_requested = 0, lookup_tokens_hit = 0;
  uint64_t ingest_tensor_bytes = 0, ingest_payload_bytes = 0;
  std::string version;
  bool gpu_tier = false;
};

}  // namespace kvtier::client

#endif  // KVTIER_CLIENT_TYPES_H_
