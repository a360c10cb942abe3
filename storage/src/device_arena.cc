#include "arena.h"
#include "cuda_memory.h"

namespace kvtier::storage::internal {
namespace {

class DeviceArena final : public Arena {
 public:
  DeviceArena(int device, uint8_t* base, uint64_t size)
      : device_(device), base_(base), size_(size) {}
  ~DeviceArena() override { FreeDevice(device_, base_); }
  uint64_t size() const override { return size_; }
  const uint8_t* host_base() const override { return nullptr; }
  absl::Status CopyIn(uint64_t offset, const uint8_t* src, uint64_t n) override {
    return CopyHostToDevice(device_, base_ + offset, src, n);
  }
  absl::Status CopyOut(uint8_t* dst, uint64_t offset, uint64_t n) const override {
    return CopyDeviceToHost(device_, dst, base_ + offset, n);
  }

 private:
  int device_;
  uint8_t* base_;
  uint64_t size_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Arena>> NewDeviceArena(uint64_t size, int device) {
  if (!CudaBuiltIn()) {
    return absl::FailedPreconditionError("GPU tier requested but kvtier was built without CUDA");
  }
  if (device >= CudaDevices()) {
    return absl::FailedPreconditionError("GPU tier requested but CUDA device " +
                                         std::to_string(device) + " is not visible");
  }
  std::string error;
  void* p = AllocDevice(device, size, &error);
  if (p == nullptr) {
    return absl::ResourceExhaustedError("GPU tier: cannot allocate " + std::to_string(size) +
                                        " device bytes: " + error);
  }
  return std::unique_ptr<Arena>(new DeviceArena(device, static_cast<uint8_t*>(p), size));
}

}  // namespace kvtier::storage::internal
