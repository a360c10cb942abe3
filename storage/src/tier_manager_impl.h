// TierManagerImpl: the TierManager behind kvtier/storage/tier_manager.h.
//
// Locking (the order is always disk_mu_ before mu_):
//   mu_       guards the index, the policies, the leases and the promotion queue. Held only for
//             index work: never across a payload copy or a disk operation, so Lookup and Get never
//             wait for I/O of other calls.
//   disk_mu_  serializes every mutation of the disk tier together with its index update, so the
//             index and RocksDB always agree on which version of a key is on disk. Readers never
//             take it.
//
// Movement protocol (demotion, promotion): under mu_ pick the copy and mark it moving; copy the
// bytes with no lock held; under mu_ install the new copy only if the entry still has the same
// version (a concurrent Put or Delete wins; the stray copy is erased).
#ifndef KVTIER_STORAGE_SRC_TIER_MANAGER_IMPL_H_
#define KVTIER_STORAGE_SRC_TIER_MANAGER_IMPL_H_

#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "chunk_index.h"
#include "eviction_policy.h"
#include "kvtier/storage/tier_manager.h"
#include "tier.h"

namespace kvtier::storage::internal {

class TierManagerImpl final : public TierManager {
 public:
  // `tiers[t]` may be null (tier disabled). Takes the options as validated.
  TierManagerImpl(const TierManagerOptions& options,
                  std::array<std::shared_ptr<Tier>, kNumTiers> tiers);
  ~TierManagerImpl() override;

  // Rebuilds the index from the disk tier and starts the background threads.
  absl::Status Start();

  absl::Status Put(NamespaceId ns, const ChunkKey& key, absl::Span<const uint8_t> payload,
                   const ChunkMeta& meta, const PutOptions& put_options) override;
  LookupResult Lookup(NamespaceId ns, absl::Span<const ChunkKey> keys,
                      const LookupOptions& options) override;
  absl::StatusOr<ChunkHandle> Get(NamespaceId ns, const ChunkKey& key) override;
  bool Contains(NamespaceId ns, const ChunkKey& key) const override;
  absl::Status Delete(NamespaceId ns, const ChunkKey& key) override;
  uint64_t DeleteNamespace(NamespaceId ns) override;
  absl::Status Pin(NamespaceId ns, const ChunkKey& key) override;
  absl::Status Unpin(NamespaceId ns, const ChunkKey& key) override;
  absl::Status ReleaseLease(LeaseId lease) override;
  absl::Status RenewLease(LeaseId lease, int64_t lease_ms) override;
  uint64_t ExpireLeases() override;
  void WaitForBackgroundWork() override;
  StorageStats Stats() const override;
  const TierManagerOptions& options() const override { return options_; }

 private:
  struct Lease {
    int64_t expiry_nanos = 0;
    std::vector<std::pair<StorageKey, uint64_t>> pinned;  // (key, entry incarnation).
  };
  struct PromotionJob {
    StorageKey key;
    uint64_t version = 0;
    int target = 0;
    TierRead bytes;
  };
  // Counters updated without mu_.
  struct Counters {
    std::atomic<uint64_t> lookups{0}, lookup_keys{0}, lookup_hits{0}, gets{0}, get_hits{0},
        get_misses{0}, puts{0}, put_bytes{0}, put_failures{0}, deletes{0}, checksum_failures{0},
        io_errors{0}, disk_full_events{0}, bytes_demoted{0}, bytes_promoted{0},
        leases_granted{0}, leases_expired{0}, leases_released{0};
    std::array<std::atomic<uint64_t>, kNumTiers> hits{}, tier_puts{}, bytes_written{},
        bytes_read{}, evictions{}, demotions_out{}, promotions_in{}, put_rejections{};
  };

  bool enabled(int t) const { return tiers_[t] != nullptr; }
  bool is_memory(int t) const { return t != TierIndex(TierKind::kDisk); }
  int next_lower(int t) const;  // Next enabled tier below t, or -1.
  int top_memory_tier() const;  // Fastest enabled memory tier, or -1.
  static constexpr int kDisk = 2;

  // Writes into tier t, evicting by policy until it fits. `holding_disk`: caller holds disk_mu_
  // (required when t is the disk tier).
  absl::StatusOr<std::shared_ptr<TierCopy>> WriteWithRoom(int t, const StorageKey& key,
                                                          const ChunkMeta& meta, uint32_t crc,
                                                          absl::Span<const uint8_t> payload,
                                                          bool holding_disk);
  // Frees space in tier t by moving or dropping one victim. False when nothing is evictable.
  bool EvictOne(int t, bool holding_disk);
  // Publishes a freshly written copy as the new version of `key`. Returns false (and does
  // nothing) when the old version has a disk copy and the caller does not hold disk_mu_.
  bool InstallNew(const StorageKey& key, int t, std::shared_ptr<TierCopy> copy,
                  const ChunkMeta& meta, uint64_t size, std::optional<uint32_t> crc,
                  const std::optional<ChunkKey>& parent, bool holding_disk,
                  std::vector<std::pair<StorageKey, std::shared_ptr<TierCopy>>>* disk_erase);
  // Drops tier t's copy of `e` (policy, counters) and erases the entry once no copy is left.
  // Returns the copy so the caller can release or erase it outside mu_.
  std::shared_ptr<TierCopy> DropCopyLocked(IndexEntry* e, int t, bool evicted);
  void RemoveEntryLocked(IndexEntry* e,
                         std::vector<std::pair<StorageKey, std::shared_ptr<TierCopy>>>* disk_erase);
  void EraseOnDisk(const std::vector<std::pair<StorageKey, std::shared_ptr<TierCopy>>>& copies);
  uint64_t ExpireLeasesLocked(int64_t now);
  void UnpinLocked(const StorageKey& key, uint64_t incarnation);
  void Promote(PromotionJob job);
  void BackgroundLoop();
  void RelieveMemoryPressure();
  int64_t LeaseNanos(int64_t lease_ms) const;

  const TierManagerOptions options_;
  const std::shared_ptr<Clock> clock_;
  const std::array<std::shared_ptr<Tier>, kNumTiers> tiers_;
  std::array<std::unique_ptr<EvictionPolicy>, kNumTiers> policies_;

  std::mutex disk_mu_;
  mutable std::mutex mu_;
  ChunkIndex index_;                                   // Guarded by mu_.
  uint64_t versions_ = 0;                              // Guarded by mu_.
  uint64_t pinned_chunks_ = 0;                         // Guarded by mu_.
  std::array<uint64_t, kNumTiers> tier_chunks_{};      // Guarded by mu_.
  absl::flat_hash_map<LeaseId, Lease> leases_;         // Guarded by mu_.
  std::multimap<int64_t, LeaseId> lease_expiry_;       // Guarded by mu_ (lazy: may hold stale).
  LeaseId next_lease_ = 1;                             // Guarded by mu_.
  std::deque<PromotionJob> promotions_;                // Guarded by mu_.
  uint64_t running_jobs_ = 0;                          // Guarded by mu_.
  uint64_t wake_seq_ = 0;                              // Guarded by mu_.
  uint64_t passes_done_ = 0;                           // Guarded by mu_.
  bool stop_ = false;                                  // Guarded by mu_.
  std::condition_variable work_cv_;
  std::condition_variable idle_cv_;
  std::vector<std::thread> threads_;

  mutable Counters c_;
};

}  // namespace kvtier::storage::internal

#endif  // KVTIER_STORAGE_SRC_TIER_MANAGER_IMPL_H_
