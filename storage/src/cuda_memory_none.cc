// Builds without CUDA: no pinned memory, no device tier.
#include "cuda_memory.h"

namespace kvtier::storage::internal {

bool CudaBuiltIn() { return false; }
int CudaDevices() { return 0; }
void* AllocPinnedHost(uint64_t, std::string* error) {
  *error = "built without CUDA";
  return nullptr;
}
void FreePinnedHost(void*) {}
void* AllocDevice(int, uint64_t, std::string* error) {
  *error = "built without CUDA";
  return nullptr;
}
void FreeDevice(int, void*) {}
absl::Status CopyHostToDevice(int, void*, const void*, uint64_t) {
  return absl::FailedPreconditionError("built without CUDA");
}
absl::Status CopyDeviceToHost(int, void*, const void*, uint64_t) {
  return absl::FailedPreconditionError("built without CUDA");
}

}  // namespace kvtier::storage::internal
