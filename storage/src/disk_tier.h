// DiskTier: chunks in RocksDB, tuned for large already-compressed values: payloads in the default
// column family with BlobDB (values >= min_blob_size live in blob files), no RocksDB compression,
// block and blob checksums verified on every read, write-ahead log on (fsync per write only with
// sync_writes). Per-chunk metadata (codec, tokens, size, CRC32C) lives in a small "meta" column
// family written in the same WriteBatch, so a restart rebuilds the index by scanning metadata
// only, and an acknowledged chunk (in the WAL) is never lost by a process crash.
//
// Every read is checked twice: by RocksDB's own checksums and against the CRC32C recorded at Put.
// Either mismatch is DataLoss (the manager turns it into a miss plus a counted event).
//
// Thread-safety: thread-safe. The caller serializes Write/Erase of the same key.
#ifndef KVTIER_STORAGE_SRC_DISK_TIER_H_
#define KVTIER_STORAGE_SRC_DISK_TIER_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>

#include "kvtier/storage/options.h"
#include "tier.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
class Env;
}  // namespace rocksdb

namespace kvtier::storage::internal {

class DiskTier final : public Tier {
 public:
  // Opens (creating if missing) the database at options.path.
  static absl::StatusOr<std::unique_ptr<DiskTier>> Open(const DiskTierOptions& options);
  ~DiskTier() override;

  TierKind kind() const override { return TierKind::kDisk; }
  uint64_t capacity_bytes() const override { return capacity_; }
  uint64_t used_bytes() const override { return used_.load(std::memory_order_relaxed); }
  uint64_t ChargeFor(uint64_t size) const override { return size; }
  absl::StatusOr<std::shared_ptr<TierCopy>> Write(const StorageKey& key, const ChunkMeta& meta,
                                                  uint32_t crc32c,
                                                  absl::Span<const uint8_t> payload) override;
  absl::StatusOr<TierRead> Read(const StorageKey& key,
                                const std::shared_ptr<TierCopy>& copy) override;
  absl::Status Erase(const StorageKey& key, const TierCopy& copy) override;
  void Forget(const TierCopy& copy) override { used_.fetch_sub(copy.size()); }
  absl::Status Recover(
      const std::function<void(const StorageKey&, std::shared_ptr<TierCopy>)>& fn) override;

  // Flushes memtables to files (tests that corrupt files on disk need the data in files).
  absl::Status Flush();

  // Metadata records found damaged (and dropped) by Recover.
  uint64_t recovered_corrupt() const { return recovered_corrupt_; }

 private:
  struct Config;  // RocksDB options, kept for reopening.

  DiskTier(const DiskTierOptions& options);
  // Opens db_ and the column family handles from config_. Caller holds db_mu_ exclusively.
  absl::Status OpenDb();
  void CloseDb();
  // After a failed write: checks that the file system takes writes again (a small probe file),
  // then brings RocksDB back (Resume(), or a reopen when the error was fatal, e.g. a failed WAL
  // append). Until the probe succeeds, writes fail fast and reads keep working.
  absl::Status ResumeIfStopped();
  absl::Status ProbeWritable();

  const DiskTierOptions options_;
  const uint64_t capacity_;
  std::unique_ptr<rocksdb::Env> env_;
  std::unique_ptr<Config> config_;
  // Shared by every read and write; exclusive only to reopen the database after a fatal error.
  mutable std::shared_mutex db_mu_;
  rocksdb::DB* db_ = nullptr;
  rocksdb::ColumnFamilyHandle* payload_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* meta_cf_ = nullptr;
  std::atomic<uint64_t> used_{0};
  std::atomic<bool> had_write_error_{false};
  std::mutex resume_mu_;
  // One RocksDB write at a time. The manager already serializes disk mutations; holding this here
  // too keeps RocksDB's write-group batching (whose leader/follower hand-off is invisible to
  // ThreadSanitizer in the uninstrumented library) out of play, at no cost.
  std::mutex write_mu_;
  uint64_t recovered_corrupt_ = 0;
};

// 36-byte RocksDB key of a chunk: big-endian namespace id, then the 32 key bytes.
std::string EncodeDiskKey(const StorageKey& key);

}  // namespace kvtier::storage::internal

#endif  // KVTIER_STORAGE_SRC_DISK_TIER_H_
