// Options of the storage engine: one struct per tier plus the manager's, each field with its
// meaning, unit and default. Validate() rejects inconsistent settings before anything is built.
//
// Thread-safety: plain values; copied into the TierManager at Create().
#ifndef KVTIER_STORAGE_OPTIONS_H_
#define KVTIER_STORAGE_OPTIONS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "kvtier/storage/clock.h"
#include "kvtier/storage/disk_io.h"

namespace kvtier::storage {

// GPU tier: one device arena allocated at start, carved into fixed slabs. Only available in
// builds with CUDA (KVTIER_HAVE_CUDA); a non-zero capacity in a build without CUDA, or on a
// machine without a device, fails Create() with FailedPrecondition.
struct GpuTierOptions {
  uint64_t capacity_bytes = 0;      // Device arena size; 0 disables the tier (default).
  int device = 0;                   // CUDA device ordinal.
  uint64_t slab_bytes = 64 << 10;   // Allocation unit; payloads take whole runs of slabs.

  absl::Status Validate() const;
};

// Host tier: one host arena allocated at start; page-locked (pinned) when the build has CUDA and
// `pin_memory` is set, so GPU transfers can run at full speed.
struct HostTierOptions {
  uint64_t capacity_bytes = 1ull << 30;  // Arena size in bytes (1 GiB); 0 disables the tier.
  uint64_t alignment = 256;              // Allocation granularity/alignment in bytes (power of 2).
  bool pin_memory = true;                // Pin with cudaHostAlloc when CUDA is built in.

  absl::Status Validate() const;
};

// Disk tier: RocksDB tuned for large, already-compressed values.
struct DiskTierOptions {
  std::string path;                           // Database directory; empty disables the tier.
  uint64_t capacity_bytes = 64ull << 30;      // Payload bytes the tier may hold (64 GiB).
  bool sync_writes = false;                   // fsync the WAL on every put (WAL is always on).
  bool enable_blob_files = true;              // BlobDB: large values go to blob files.
  uint64_t min_blob_size = 4096;              // Values at least this large go to blob files.
  uint64_t write_buffer_bytes = 64ull << 20;  // Memtable size (64 MiB).
  uint64_t block_cache_bytes = 32ull << 20;   // Block cache for SST (metadata) blocks (32 MiB).
  int max_background_jobs = 2;                // RocksDB flush/compaction threads.
  // Every file operation goes through this gate (see disk_io.h); null means DefaultDiskIo().
  std::shared_ptr<DiskIo> io;

  absl::Status Validate() const;
};

// The TierManager's options: tiers, policy, leases and background movement.
struct TierManagerOptions {
  GpuTierOptions gpu;
  HostTierOptions host;
  DiskTierOptions disk;

  // Eviction/demotion policy of every tier: "lru" (exact LRU, the baseline), "prefix_lru"
  // (LRU that evicts chain tails before their prefixes) or "s3fifo" (S3-FIFO, the default: it
  // beat LRU at every capacity of the Mooncake trace replay, docs/BENCHMARKS.md).
  std::string policy = "s3fifo";
  // S3-FIFO only: share of a tier's bytes given to the probationary FIFO. The paper's default is
  // 0.10; 0.25 did better on the Mooncake trace replay (docs/BENCHMARKS.md, "Trace replay").
  double s3fifo_small_fraction = 0.25;

  // Largest payload accepted by Put, in bytes (64 MiB). Larger puts fail InvalidArgument.
  uint64_t max_chunk_bytes = 64ull << 20;

  // Lease length when a Lookup asks for a lease without a duration (5 s), and the upper bound of
  // any requested duration (60 s): a client that vanishes loses its pins within this time.
  int64_t default_lease_ms = 5000;
  int64_t max_lease_ms = 60000;

  // Background demotion keeps each memory tier's used bytes at or below
  // `demote_low_watermark` x capacity once it passes `demote_high_watermark` x capacity,
  // so puts rarely have to make room themselves.
  double demote_high_watermark = 0.95;
  double demote_low_watermark = 0.85;

  // Threads that demote, promote and reap expired leases in the background (default 1). With 0,
  // all movement happens inline in the calling thread (deterministic; used by trace replay and
  // some tests). Readers never wait for movement in either mode.
  int background_threads = 1;

  // A hit on a lower tier copies the chunk up to the fastest memory tier (asynchronously when
  // background_threads > 0, inline otherwise).
  bool promote_on_hit = true;

  // When a memory tier must free space, victims are written to the next tier down (demotion)
  // rather than dropped, unless the next tier already holds a copy.
  bool demote_on_evict = true;

  // Time source; null means DefaultClock().
  std::shared_ptr<Clock> clock;

  absl::Status Validate() const;
};

}  // namespace kvtier::storage

#endif  // KVTIER_STORAGE_OPTIONS_H_
