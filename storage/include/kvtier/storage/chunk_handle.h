// ChunkHandle: move-only read access to one stored payload, returned by TierManager::Get.
//
// While a handle is alive its bytes stay valid and unchanged: eviction, demotion and Delete remove
// the chunk from the index, but the memory the handle points into is reclaimed only after the last
// handle to it is destroyed (so reads are never torn). Chunks served from the GPU or disk tier are
// copied into handle-owned host memory; host-tier hits point into the host arena (zero copy).
//
// A handle must not outlive the TierManager that produced it.
//
// Thread-safety: a handle is not shared; distinct handles (even to the same chunk) may be used
// concurrently from different threads.
#ifndef KVTIER_STORAGE_CHUNK_HANDLE_H_
#define KVTIER_STORAGE_CHUNK_HANDLE_H_

#include <cstdint>
#include <memory>
#include <utility>

#include "absl/types/span.h"
#include "kvtier/storage/types.h"

namespace kvtier::storage {

class ChunkHandle {
 public:
  ChunkHandle() = default;  // An empty handle (valid() == false).
  ChunkHandle(ChunkHandle&&) noexcept = default;
  ChunkHandle& operator=(ChunkHandle&&) noexcept = default;
  ChunkHandle(const ChunkHandle&) = delete;
  ChunkHandle& operator=(const ChunkHandle&) = delete;
  ~ChunkHandle() = default;

  bool valid() const { return data_ != nullptr || keepalive_ != nullptr; }
  // The payload exactly as it was Put.
  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }
  const ChunkMeta& meta() const { return meta_; }
  // CRC32C of bytes() when storage has computed it: always for chunks that have been on disk
  // (verified on every disk read). 0 for a chunk that has only lived in memory: storage computes
  // it lazily, when the chunk first goes to disk, so a memory put costs no checksum pass.
  uint32_t crc32c() const { return crc32c_; }
  // The tier the bytes were served from.
  TierKind tier() const { return tier_; }

  // For storage implementations: `keepalive` owns (or keeps alive) the `size` bytes at `data`.
  ChunkHandle(std::shared_ptr<const void> keepalive, const uint8_t* data, size_t size,
              const ChunkMeta& meta, uint32_t crc32c, TierKind tier)
      : keepalive_(std::move(keepalive)),
        data_(data),
        size_(size),
        meta_(meta),
        crc32c_(crc32c),
        tier_(tier) {}

 private:
  std::shared_ptr<const void> keepalive_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  ChunkMeta meta_;
  uint32_t crc32c_ = 0;
  TierKind tier_ = TierKind::kHost;
};

}  // namespace kvtier::storage

#endif  // KVTIER_STORAGE_CHUNK_HANDLE_H_
