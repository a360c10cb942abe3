// TierManager: the storage engine the daemon talks to. It keeps compressed KV chunks, keyed by
// (namespace id, chunk key), across up to three tiers (GPU arena, host arena, RocksDB on disk),
// decides where each chunk lives (admission, promotion on hit, demotion under pressure, eviction
// by a pluggable policy), protects chunks between Lookup and Get with pins and leases, and never
// returns wrong bytes: every payload read from disk is checked against the CRC32C recorded when
// it was written there (Put, or demotion of a chunk that lived in memory); a mismatch is a miss
// plus a counted event.
//
// Payloads are opaque bytes to storage (the kernels' payload format already carries its own
// header and checksum); storage adds its own CRC32C of the stored bytes.
//
// Usage:
//   KVTIER_ASSIGN_OR_RETURN(auto tm, TierManager::Create(options));   // Rebuilds the index.
//   KVTIER_RETURN_IF_ERROR(tm->Put(ns, key, payload, meta));
//   LookupResult r = tm->Lookup(ns, keys, LookupOptions{.lease = true});
//   auto h = tm->Get(ns, keys[0]);  // StatusOr<ChunkHandle>
//   tm->ReleaseLease(r.lease);
//
// Thread-safety: every method is safe to call concurrently from any number of threads. Get and
// Lookup never wait for background movement or disk writes of other calls (they take a short
// internal lock only to consult the index; disk reads happen outside it).
#ifndef KVTIER_STORAGE_TIER_MANAGER_H_
#define KVTIER_STORAGE_TIER_MANAGER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvtier/common/chunk_key.h"
#include "kvtier/storage/chunk_handle.h"
#include "kvtier/storage/options.h"
#include "kvtier/storage/stats.h"
#include "kvtier/storage/types.h"

namespace kvtier::storage {

struct PutOptions {
  // The key of the chunk that precedes this one in its chain (key_{i-1}), when the caller knows
  // it. Prefix-aware policies queue the chunk behind its parent so chain tails go first.
  std::optional<ChunkKey> parent;
  // The payload's CRC-32C when the caller already has it (e.g. checked as the bytes arrived):
  // stored with the chunk, so moving it to disk needs no checksum pass, and every later read is
  // checked against it. A wrong value makes the chunk unreadable (a miss), never wrong bytes.
  std::optional<uint32_t> crc32c;
};

struct LookupOptions {
  // Pin the hits under a new lease (LookupResult::lease) until it expires or is released.
  bool lease = false;
  // Lease length in ms; 0 = TierManagerOptions::default_lease_ms; capped at max_lease_ms.
  int64_t lease_ms = 0;
};

struct LookupResult {
  // Number of consecutive hits starting at the first key (the prefix rule).
  uint32_t hits = 0;
  // tiers[i]: the fastest tier holding keys[i], for i < hits.
  std::vector<TierKind> tiers;
  // Lease pinning the hits; kNoLease when none was asked for or there were no hits.
  LeaseId lease = kNoLease;
  // When the lease expires, in Clock::NowNanos() time (0 without a lease).
  int64_t lease_expiry_nanos = 0;
};

class TierManager {
 public:
  // Builds the tiers, opens (or creates) the disk tier and rebuilds the index from it, and starts
  // the background threads. Errors: InvalidArgument (options), FailedPrecondition (GPU tier asked
  // for without CUDA or a device), the disk tier's open error.
  static absl::StatusOr<std::unique_ptr<TierManager>> Create(const TierManagerOptions& options);

  // Stops background threads, then closes the disk tier cleanly (flushing the WAL).
  virtual ~TierManager() = default;

  // Stores `payload` (copied) under (ns, key), replacing an existing chunk. Admission goes to the
  // fastest enabled tier, making room by policy (demoting or evicting unpinned chunks); when no
  // memory tier can take it, to disk. On return the chunk is readable; if it went to disk it is in
  // RocksDB's WAL (it survives a process crash; survives power loss only with sync_writes).
  // Errors: InvalidArgument (empty or larger than max_chunk_bytes), ResourceExhausted (no tier
  // could take it, e.g. memory full of pinned chunks and disk full), Unavailable (disk I/O error).
  virtual absl::Status Put(NamespaceId ns, const ChunkKey& key, absl::Span<const uint8_t> payload,
                           const ChunkMeta& meta, const PutOptions& put_options = {}) = 0;

  // Prefix lookup: the longest run of consecutive hits from keys[0]. Counts as an access of each
  // hit (for the eviction policy). With options.lease, the hits are pinned under a lease.
  virtual LookupResult Lookup(NamespaceId ns, absl::Span<const ChunkKey> keys,
                              const LookupOptions& options = {}) = 0;

  // The payload of (ns, key). NotFound when absent, and also when the only copy failed its
  // checksum or could not be read (that copy is dropped and counted). A hit on a lower tier may
  // promote the chunk (see TierManagerOptions::promote_on_hit).
  virtual absl::StatusOr<ChunkHandle> Get(NamespaceId ns, const ChunkKey& key) = 0;

  // True when (ns, key) has a copy in some tier. No access is recorded.
  virtual bool Contains(NamespaceId ns, const ChunkKey& key) const = 0;

  // Removes every copy of (ns, key), pinned or not; live handles keep their bytes. NotFound when
  // absent.
  virtual absl::Status Delete(NamespaceId ns, const ChunkKey& key) = 0;
  // Removes every chunk of namespace `ns`; returns how many.
  virtual uint64_t DeleteNamespace(NamespaceId ns) = 0;

  // Explicit pins (counted): a pinned chunk is never evicted from the tiers holding it. NotFound
  // when absent. Every Pin must be matched by one Unpin.
  virtual absl::Status Pin(NamespaceId ns, const ChunkKey& key) = 0;
  virtual absl::Status Unpin(NamespaceId ns, const ChunkKey& key) = 0;

  // Ends a lease early, unpinning its chunks. NotFound when unknown or already expired.
  virtual absl::Status ReleaseLease(LeaseId lease) = 0;
  // Extends a live lease to now + lease_ms (capped). NotFound when unknown or expired.
  virtual absl::Status RenewLease(LeaseId lease, int64_t lease_ms) = 0;

  // Runs expiry of leases against the clock now (background threads also do this periodically,
  // and every Lookup does it lazily). Returns the number of leases that expired.
  virtual uint64_t ExpireLeases() = 0;

  // Blocks until queued background movement (demotions, promotions) has finished. For tests,
  // benchmarks and orderly shutdown; never needed for correctness.
  virtual void WaitForBackgroundWork() = 0;

  virtual StorageStats Stats() const = 0;
  virtual const TierManagerOptions& options() const = 0;
};

}  // namespace kvtier::storage

#endif  // KVTIER_STORAGE_TIER_MANAGER_H_
