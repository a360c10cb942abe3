// Arena: the memory behind a memory tier, allocated once at start. HostArena is plain or pinned
// host memory; DeviceArena (CUDA builds only) is one device allocation. Copies in and out go
// through the arena so the same MemoryTier code serves both.
//
// Thread-safety: CopyIn/CopyOut on disjoint ranges may run concurrently.
#ifndef KVTIER_STORAGE_SRC_ARENA_H_
#define KVTIER_STORAGE_SRC_ARENA_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvtier::storage::internal {

class Arena {
 public:
  virtual ~Arena() = default;
  virtual uint64_t size() const = 0;
  // Non-null when the CPU can read the arena directly (zero-copy handles).
  virtual const uint8_t* host_base() const = 0;
  virtual absl::Status CopyIn(uint64_t offset, const uint8_t* src, uint64_t n) = 0;
  virtual absl::Status CopyOut(uint8_t* dst, uint64_t offset, uint64_t n) const = 0;
  // True when the memory is page-locked (pinned) host memory.
  virtual bool pinned() const { return false; }
};

// Host memory of `size` bytes aligned to `alignment`; pinned when `pin` and the build has CUDA
// (falls back to plain memory with a warning if pinning fails).
absl::StatusOr<std::unique_ptr<Arena>> NewHostArena(uint64_t size, uint64_t alignment, bool pin);

// One device allocation of `size` bytes on `device`. FailedPrecondition without CUDA or device.
absl::StatusOr<std::unique_ptr<Arena>> NewDeviceArena(uint64_t size, int device);

}  // namespace kvtier::storage::internal

#endif  // KVTIER_STORAGE_SRC_ARENA_H_
