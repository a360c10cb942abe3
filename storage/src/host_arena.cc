#include <cstdlib>
#include <cstring>

#include "arena.h"
#include "cuda_memory.h"
#include "kvtier/common/logging.h"

namespace kvtier::storage::internal {
namespace {

class HostArena final : public Arena {
 public:
  HostArena(uint8_t* base, uint64_t size, bool pinned) : base_(base), size_(size), pinned_(pinned) {}
  ~HostArena() override {
    if (pinned_) {
      FreePinnedHost(base_);
    } else {
      std::free(base_);
    }
  }
  uint64_t size() const override { return size_; }
  const uint8_t* host_base() const override { return base_; }
  absl::Status CopyIn(uint64_t offset, const uint8_t* src, uint64_t n) override {
    std::memcpy(base_ + offset, src, n);
    return absl::OkStatus();
  }
  absl::Status CopyOut(uint8_t* dst, uint64_t offset, uint64_t n) const override {
    std::memcpy(dst, base_ + offset, n);
    return absl::OkStatus();
  }
  bool pinned() const override { return pinned_; }

 private:
  uint8_t* base_;
  uint64_t size_;
  bool pinned_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Arena>> NewHostArena(uint64_t size, uint64_t alignment, bool pin) {
  if (pin && CudaBuiltIn()) {
    std::string error;
    if (void* p = AllocPinnedHost(size, &error)) {
      return std::unique_ptr<Arena>(new HostArena(static_cast<uint8_t*>(p), size, true));
    }
    KVTIER_LOG(WARNING, "host tier: pinning {} bytes failed ({}); using pageable memory", size,
               error);
  }
  const uint64_t rounded = (size + alignment - 1) / alignment * alignment;
  void* p = std::aligned_alloc(alignment < 64 ? 64 : alignment, rounded);
  if (p == nullptr) {
    return absl::ResourceExhaustedError("host tier: cannot allocate " + std::to_string(size) +
                                        " bytes");
  }
  return std::unique_ptr<Arena>(new HostArena(static_cast<uint8_t*>(p), size, false));
}

}  // namespace kvtier::storage::internal
