// Internal: the TurboQuant chunk codec's plan (geometry + per-part tables) and its device entry
// points (tq_cuda.cu with CUDA, tq_nocuda.cc without). Not a public header.
#ifndef KVTIER_KERNELS_SRC_TURBOQUANT_TQ_CODEC_H_
#define KVTIER_KERNELS_SRC_TURBOQUANT_TQ_CODEC_H_

#include <memory>

#include "absl/status/statusor.h"
#include "codec_impl.h"
#include "turboquant/tq_geometry.h"
#include "turboquant/tq_tables.h"

namespace kvtier::kernels::internal {

struct TqPlan {
  TqGeometry g;
  std::shared_ptr<const TqTables> tables[2];
  uint8_t dtype_code = 1;
};

// Checks compatibility and builds geometry and tables.
absl::StatusOr<TqPlan> MakeTqPlan(const CodecParams& params, const ChunkShape& shape);

// Split only: the stream's outlier mask (16 bytes) from the per-channel sums of squares over the
// stream's T rows (sequential in t), ranked descending, ties to the lower channel.
void TqOutlierMask(const float* sumsq, uint32_t width, uint32_t outliers, uint8_t mask[16]);

// The target checks shared by host and device decode (dtype, one base per layer, block table).
absl::Status TqCheckTarget(const ChunkShape& shape, const DecodeTarget& target);

// The codec's device entry points (CodecImpl::EncodeDevice / DecodeDevice and their stream
// forms): the plan, kernel parameters (tables' device pointers) and split constants of a
// (params, shape) are prepared on the first call per device and cached (thread-safe, bounded),
// so a later call does a lookup, the launches on `stream` (a cudaStream_t; null = the legacy
// default stream) and, unless `sync` is false, one synchronize of that stream. Errors as
// MakeTqPlan's, then (decode) TqCheckTarget's.
absl::Status TqEncodeDevice(const CodecParams& params, const ChunkShape& shape,
                            const void* device_input, void* device_body, bool sync = true,
                            void* stream = nullptr);
absl::Status TqDecodeDevice(const CodecParams& params, const ChunkShape& shape,
                            const void* device_body, const DecodeTarget& target, bool sync = true,
                            void* stream = nullptr);

// Tests and the speed report only: false makes TqEncodeDevice / TqDecodeDevice prepare
// everything on every call (MakeTqPlan, then TqEncodeOnDevice / TqDecodeOnDevice), as before the
// cache, so that both can be timed in one run. Same launches either way. Not thread-safe; set it
// while no device call is in flight.
void TqSetLaunchCacheForTesting(bool enabled);

// Tests and the overhead report only: launches an empty one-block kernel on the default stream
// without synchronizing: kind 0 without parameters, 1 with a TqDevParams by value (the quad and
// generic kernels' parameter size), 2 with TqDevParams and the split constants (the split
// kernels'), so that the launch's own cost can be told from the codec's host work. Returns a
// cudaError_t value (0 = success; without CUDA, non-zero).
int TqLaunchProbeForTesting(int kind);

// Device entry points on a ready plan (the kernel parameters are built on every call); they synchronize the default stream unless `sync` is false (the speed
// report times back-to-back launches that way).
absl::Status TqEncodeOnDevice(const TqPlan& plan, const void* device_input, void* device_body,
                              bool sync = true);
absl::Status TqDecodeOnDevice(const TqPlan& plan, const void* device_body,
                              const DecodeTarget& target, bool sync = true);

// Tests and the speed report only: false sends the 2.5 / 3.5 splits to the generic kernels
// (the path they took before the split kernels) so that both can be compared in one run. Not
// thread-safe; set it while no device call is in flight.
void TqSetSplitKernelsForTesting(bool enabled);

// Tests and the speed report only: 1 selects the kernels as they were before generation 2 (the
// prefetching qjl=hadamard quad kernels and the reworked split kernels; docs/BENCHMARKS.md), 2
// the quad qjl=hadamard kernels, 3 those with the other quantizer form (select trees or table;
// HqSelectTrees in tq_cuda.cu), 4 the qjl=hadamard kernels with two lanes per vector (the pair
// layout), 5 those with the other quantizer form, 6 those in their other launch shape, 7 (the
// default) generation 4 with a leaner prod qjl=hadamard encode (decode as 4), so that every form
// stays tested and can be timed in one run (generations 3-7 run the split kernels as 2 does).
// Same bodies and outputs either way. Not thread-safe, as above.
void TqSetKernelGenerationForTesting(int generation);

// Tests and the speed report only: false sends dense mse with fixed-point matrices to the
// shared-memory tensor-core kernels instead of the register-fragment ones (tq_fixed_kernels.cuh),
// so that both stay checked and can be compared in one run. Same bodies and outputs either way.
// Not thread-safe, as above.
void TqSetFixedRegisterPathForTesting(bool enabled);

}  // namespace kvtier::kernels::internal

#endif  // KVTIER_KERNELS_SRC_TURBOQUANT_TQ_CODEC_H_
