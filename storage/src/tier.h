// Tier: one storage level (GPU arena, host arena, RocksDB) behind one narrow interface, with a
// byte capacity. The TierManager decides what goes where; a tier only stores, reads and erases
// copies and accounts for their bytes. tests/storage/tier_contract_test.cc runs one contract suite
// against every implementation.
//
// Thread-safety: every method of every implementation is thread-safe. Callers guarantee that
// Write/Erase of the same key are not concurrent (the TierManager serializes disk mutations).
#ifndef KVTIER_STORAGE_SRC_TIER_H_
#define KVTIER_STORAGE_SRC_TIER_H_

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvtier/storage/types.h"

namespace kvtier::storage::internal {

// One chunk's copy inside a tier. Memory tiers hand out copies that own their arena range: the
// range is freed when the last reference goes (the index's, and those of live ChunkHandles), which
// is what keeps reads from being torn by eviction.
class TierCopy {
 public:
  TierCopy(uint64_t size, uint32_t crc32c, const ChunkMeta& meta)
      : size_(size), crc32c_(crc32c), meta_(meta) {}
  virtual ~TierCopy() = default;
  TierCopy(const TierCopy&) = delete;
  TierCopy& operator=(const TierCopy&) = delete;

  uint64_t size() const { return size_; }
  uint32_t crc32c() const { return crc32c_; }
  const ChunkMeta& meta() const { return meta_; }

 private:
  uint64_t size_;
  uint32_t crc32c_;
  ChunkMeta meta_;
};

// Bytes read from a tier: `data` stays valid while `keepalive` lives.
struct TierRead {
  std::shared_ptr<const void> keepalive;
  const uint8_t* data = nullptr;
  uint64_t size = 0;
};

class Tier {
 public:
  virtual ~Tier() = default;

  virtual TierKind kind() const = 0;
  virtual uint64_t capacity_bytes() const = 0;
  // Bytes charged now, including copies only kept alive by ChunkHandles.
  virtual uint64_t used_bytes() const = 0;
  // Bytes a payload of `size` bytes is charged (rounded to the tier's allocation unit).
  virtual uint64_t ChargeFor(uint64_t size) const = 0;

  // Stores a copy of `payload` (whose CRC32C is `crc32c`). ResourceExhausted when the tier has no
  // room (the caller may evict and retry); other errors for device or I/O failures.
  virtual absl::StatusOr<std::shared_ptr<TierCopy>> Write(const StorageKey& key,
                                                          const ChunkMeta& meta, uint32_t crc32c,
                                                          absl::Span<const uint8_t> payload) = 0;

  // Read access to a copy this tier returned from Write (or Recover). DataLoss when the stored
  // bytes do not match the copy's CRC32C, NotFound when they are gone, other codes for I/O errors.
  virtual absl::StatusOr<TierRead> Read(const StorageKey& key,
                                        const std::shared_ptr<TierCopy>& copy) = 0;

  // Removes the persistent state of a copy (disk). Memory tiers free on the last reference.
  virtual absl::Status Erase(const StorageKey& key, const TierCopy& copy) = 0;

  // The copy was overwritten in place by a newer Write of the same key (disk): forget its bytes.
  virtual void Forget(const TierCopy& copy) { (void)copy; }

  // Calls `fn` for every copy that survived a restart (disk only; memory tiers have none).
  virtual absl::Status Recover(
      const std::function<void(const StorageKey&, std::shared_ptr<TierCopy>)>& fn) {
    (void)fn;
    return absl::OkStatus();
  }
};

}  // namespace kvtier::storage::internal

#endif  // KVTIER_STORAGE_SRC_TIER_H_
