// TurboQuant device entry points in a build without CUDA.
#include "turboquant/tq_codec.h"

namespace kvtier::kernels::internal {

absl::Status TqEncodeOnDevice(const TqPlan&, const void*, void*, bool) {
  return absl::UnimplementedError("turboquant: built without CUDA");
}
absl::Status TqDecodeOnDevice(const TqPlan&, const void*, const DecodeTarget&, bool) {
  return absl::UnimplementedError("turboquant: built without CUDA");
}
void TqSetSplitKernelsForTesting(bool) {}
void TqSetKernelGenerationForTesting(int) {}

}  // namespace kvtier::kernels::internal
