// MemoryTier: the host tier and the GPU tier. One arena allocated at start, carved by a
// RangeAllocator in units of a granule (host: the alignment; GPU: the slab size). A copy owns its
// range and returns it on destruction, so a ChunkHandle that still reads an evicted chunk keeps its
// bytes intact.
//
// Thread-safety: thread-safe; the allocator is guarded by an internal mutex, copies in and out run
// outside it.
#ifndef KVTIER_STORAGE_SRC_MEMORY_TIER_H_
#define KVTIER_STORAGE_SRC_MEMORY_TIER_H_

#include <atomic>
#include <memory>
#include <mutex>

#include "arena.h"
#include "range_allocator.h"
#include "tier.h"

namespace kvtier::storage::internal {

class MemoryTier final : public Tier, public std::enable_shared_from_this<MemoryTier> {
 public:
  // Host tier from options (pinned when CUDA is built in and `pin`).
  static absl::StatusOr<std::shared_ptr<MemoryTier>> NewHost(uint64_t capacity, uint64_t alignment,
                                                             bool pin);
  // GPU tier: FailedPrecondition without CUDA or without the device.
  static absl::StatusOr<std::shared_ptr<MemoryTier>> NewGpu(uint64_t capacity, int device,
                                                            uint64_t slab_bytes);

  MemoryTier(TierKind kind, std::unique_ptr<Arena> arena, uint64_t granule);

  TierKind kind() const override { return kind_; }
  uint64_t capacity_bytes() const override { return capacity_; }
  uint64_t used_bytes() const override { return used_.load(std::memory_order_relaxed); }
  uint64_t ChargeFor(uint64_t size) const override;
  absl::StatusOr<std::shared_ptr<TierCopy>> Write(const StorageKey& key, const ChunkMeta& meta,
                                                  uint32_t crc32c,
                                                  absl::Span<const uint8_t> payload) override;
  absl::StatusOr<TierRead> Read(const StorageKey& key,
                                const std::shared_ptr<TierCopy>& copy) override;
  absl::Status Erase(const StorageKey& key, const TierCopy& copy) override;

  bool pinned() const { return arena_->pinned(); }
  // Size of the largest free range (fragmentation diagnostics).
  uint64_t largest_free() const;

 private:
  class Copy;
  void Release(uint64_t offset, uint64_t size);

  const TierKind kind_;
  const std::unique_ptr<Arena> arena_;
  const uint64_t capacity_;
  mutable std::mutex mu_;
  RangeAllocator allocator_;  // Guarded by mu_.
  std::atomic<uint64_t> used_{0};
};

}  // namespace kvtier::storage::internal

#endif  // KVTIER_STORAGE_SRC_MEMORY_TIER_H_
