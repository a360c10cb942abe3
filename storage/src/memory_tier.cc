#include "memory_tier.h"

#include <vector>

namespace kvtier::storage::internal {

// A payload's range in the arena. Holds the tier alive, so destruction order of the manager's
// members does not matter.
class MemoryTier::Copy final : public TierCopy {
 public:
  Copy(std::shared_ptr<MemoryTier> tier, uint64_t offset, uint64_t size, uint32_t crc,
       const ChunkMeta& meta)
      : TierCopy(size, crc, meta), tier_(std::move(tier)), offset_(offset) {}
  ~Copy() override { tier_->Release(offset_, size()); }
  uint64_t offset() const { return offset_; }

 private:
  std::shared_ptr<MemoryTier> tier_;
  uint64_t offset_;
};

absl::StatusOr<std::shared_ptr<MemoryTier>> MemoryTier::NewHost(uint64_t capacity,
                                                                 uint64_t alignment, bool pin) {
  auto arena = NewHostArena(capacity, alignment, pin);
  if (!arena.ok()) return arena.status();
  return std::make_shared<MemoryTier>(TierKind::kHost, std::move(arena).value(), alignment);
}

absl::StatusOr<std::shared_ptr<MemoryTier>> MemoryTier::NewGpu(uint64_t capacity, int device,
                                                                uint64_t slab_bytes) {
  auto arena = NewDeviceArena(capacity, device);
  if (!arena.ok()) return arena.status();
  return std::make_shared<MemoryTier>(TierKind::kGpu, std::move(arena).value(), slab_bytes);
}

MemoryTier::MemoryTier(TierKind kind, std::unique_ptr<Arena> arena, uint64_t granule)
    : kind_(kind),
      arena_(std::move(arena)),
      capacity_(arena_->size() & ~(granule - 1)),
      allocator_(arena_->size(), granule) {}

uint64_t MemoryTier::ChargeFor(uint64_t size) const { return allocator_.RoundUp(size ? size : 1); }

absl::StatusOr<std::shared_ptr<TierCopy>> MemoryTier::Write(const StorageKey& key,
                                                            const ChunkMeta& meta, uint32_t crc32c,
                                                            absl::Span<const uint8_t> payload) {
  (void)key;
  std::optional<uint64_t> offset;
  {
    std::lock_guard<std::mutex> lock(mu_);
    offset = allocator_.Allocate(payload.size());
    if (offset) used_.store(allocator_.used(), std::memory_order_relaxed);
  }
  if (!offset) {
    return absl::ResourceExhaustedError(std::string(TierName(kind_)) + " tier full");
  }
  // From here the Copy owns the range: an error below frees it.
  auto copy = std::make_shared<Copy>(shared_from_this(), *offset, payload.size(), crc32c, meta);
  if (auto s = arena_->CopyIn(*offset, payload.data(), payload.size()); !s.ok()) return s;
  return std::shared_ptr<TierCopy>(std::move(copy));
}

absl::StatusOr<TierRead> MemoryTier::Read(const StorageKey& key,
                                          const std::shared_ptr<TierCopy>& copy) {
  (void)key;
  const auto* c = static_cast<const Copy*>(copy.get());
  if (const uint8_t* base = arena_->host_base()) {
    return TierRead{copy, base + c->offset(), c->size()};
  }
  auto buffer = std::make_shared<std::vector<uint8_t>>(c->size());
  if (auto s = arena_->CopyOut(buffer->data(), c->offset(), c->size()); !s.ok()) return s;
  const uint8_t* data = buffer->data();
  return TierRead{std::move(buffer), data, c->size()};
}

absl::Status MemoryTier::Erase(const StorageKey& key, const TierCopy& copy) {
  (void)key;
  (void)copy;
  return absl::OkStatus();  // The range goes back when the last reference to the copy drops.
}

void MemoryTier::Release(uint64_t offset, uint64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  allocator_.Free(offset, size);
  used_.store(allocator_.used(), std::memory_order_relaxed);
}

uint64_t MemoryTier::largest_free() const {
  std::lock_guard<std::mutex> lock(mu_);
  return allocator_.largest_free();
}

}  // namespace kvtier::storage::internal
