// TurboQuant device entry points in a build without CUDA.
#include "kvtier/common/status.h"
#include "turboquant/tq_codec.h"

namespace kvtier::kernels::internal {

absl::Status TqEncodeOnDevice(const TqPlan&, const void*, void*, bool) {
  return absl::UnimplementedError("turboquant: built without CUDA");
}
absl::Status TqDecodeOnDevice(const TqPlan&, const void*, const DecodeTarget&, bool) {
  return absl::UnimplementedError("turboquant: built without CUDA");
}
// Same error order as the CUDA build: the plan's errors, then the target's, then no CUDA.
absl::Status TqEncodeDevice(const CodecParams& params, const ChunkShape& shape, const void* in,
                            void* body, bool sync, void*) {
  KVTIER_ASSIGN_OR_RETURN(TqPlan plan, MakeTqPlan(params, shape));
  return TqEncodeOnDevice(plan, in, body, sync);
}
absl::Status TqDecodeDevice(const CodecParams& params, const ChunkShape& shape, const void* body,
                            const DecodeTarget& target, bool sync, void*) {
  KVTIER_ASSIGN_OR_RETURN(TqPlan plan, MakeTqPlan(params, shape));
  KVTIER_RETURN_IF_ERROR(TqCheckTarget(shape, target));
  return TqDecodeOnDevice(plan, body, target, sync);
}
void TqSetLaunchCacheForTesting(bool) {}
int TqLaunchProbeForTesting(int) { return 1; }
void TqSetSplitKernelsForTesting(bool) {}
void TqSetKernelGenerationForTesting(int) {}
void TqSetFixedRegisterPathForTesting(bool) {}

}  // namespace kvtier::kernels::internal
