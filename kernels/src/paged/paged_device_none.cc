// Paged copies in a build without CUDA: device buffers cannot exist, so say so clearly.
#include "paged/paged_plan.h"

namespace kvtier::kernels::internal {

absl::Status PagedCopyDevice(const PagedCopyPlan&, PagedDirection) {
  return absl::UnimplementedError(
      "paged copy on device memory: this kvtier build has no CUDA (rebuild with -DKVTIER_CUDA=ON)");
}

absl::Status PagedGatherDeviceToHost(const PagedCopyPlan&, void*, size_t) {
  return absl::UnimplementedError(
      "paged gather from device memory: this kvtier build has no CUDA (rebuild with "
      "-DKVTIER_CUDA=ON)");
}

}  // namespace kvtier::kernels::internal
