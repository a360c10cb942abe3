// StorageStats: plain counters and gauges of the storage engine, sampled by TierManager::Stats()
// and exported by the daemon (Prometheus). Counters only grow; gauges are point-in-time values.
//
// Thread-safety: a value snapshot; safe to copy.
#ifndef KVTIER_STORAGE_STATS_H_
#define KVTIER_STORAGE_STATS_H_

#include <array>
#include <cstdint>

#include "kvtier/storage/types.h"

namespace kvtier::storage {

struct TierStats {
  bool enabled = false;
  // Gauges.
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;  // Includes bytes still held by live ChunkHandles after eviction.
  uint64_t chunks = 0;      // Chunks with a copy in this tier.
  // Counters.
  uint64_t hits = 0;            // Lookup/Get hits served from this tier (fastest copy here).
  uint64_t puts = 0;            // Chunks written into this tier by Put.
  uint64_t bytes_written = 0;   // Payload bytes written into this tier (puts + movement).
  uint64_t bytes_read = 0;      // Payload bytes read out of this tier.
  uint64_t evictions = 0;       // Copies dropped from this tier to make room.
  uint64_t demotions_out = 0;   // Copies written from this tier to the next tier down.
  uint64_t promotions_in = 0;   // Copies written into this tier from a lower tier.
  uint64_t put_rejections = 0;  // Writes into this tier that failed (full, I/O error).
};

struct StorageStats {
  std::array<TierStats, kNumTiers> tiers;  // Indexed by TierIndex().

  // Gauges.
  uint64_t indexed_chunks = 0;  // Distinct (ns, key) with at least one copy.
  uint64_t pinned_chunks = 0;   // Chunks with pin count > 0 (explicit pins or leases).
  uint64_t active_leases = 0;

  // Counters.
  uint64_t lookups = 0;            // Lookup calls.
  uint64_t lookup_keys = 0;        // Keys asked for by Lookup calls.
  uint64_t lookup_hits = 0;        // Keys counted as hits (consecutive run from the first key).
  uint64_t gets = 0;
  uint64_t get_hits = 0;
  uint64_t get_misses = 0;         // Includes corrupt and unreadable copies.
  uint64_t puts = 0;
  uint64_t put_bytes = 0;
  uint64_t put_failures = 0;       // Put calls that returned an error.
  uint64_t deletes = 0;
  uint64_t checksum_failures = 0;  // Copies whose CRC32C (or RocksDB checksum) did not match.
  uint64_t io_errors = 0;          // Disk reads/writes that failed for another reason.
  uint64_t disk_full_events = 0;   // Disk writes refused with ResourceExhausted.
  uint64_t bytes_demoted = 0;      // Bytes copied down a tier.
  uint64_t bytes_promoted = 0;     // Bytes copied up a tier.
  uint64_t leases_granted = 0;
  uint64_t leases_expired = 0;     // Leases that ran out (never released by their client).
  uint64_t leases_released = 0;
};

}  // namespace kvtier::storage

#endif  // KVTIER_STORAGE_STATS_H_
