// Internal: phase timing of the CUDA selection pipeline for bench/selection_speed (CUDA events
// recorded between kernels). Not a public header; exists only in CUDA builds.
#ifndef KVTIER_KERNELS_SRC_SELECTION_SELECTION_TIMING_H_
#define KVTIER_KERNELS_SRC_SELECTION_SELECTION_TIMING_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kvtier/kernels/selection.h"

namespace kvtier::kernels::internal {

// Records an event per Mark() on the given stream (a cudaStream_t). Not thread-safe.
class SelectionTimings {
 public:
  SelectionTimings() = default;
  ~SelectionTimings();
  SelectionTimings(const SelectionTimings&) = delete;
  SelectionTimings& operator=(const SelectionTimings&) = delete;

  void Mark(void* stream, const char* name);
  // Milliseconds from each mark to the next, named by the later mark (after the work finished).
  std::vector<std::pair<std::string, double>> Phases() const;

 private:
  std::vector<void*> events_;
  std::vector<std::string> names_;
};

// SelectSnapKv's device path (no validation: callers pass checked input and PyramidKvCaps /
// uniform caps), with optional phase timing. `lh_per_launch` (layer, KV head) pairs run both
// attention passes per launch batch (0 = all pairs in one batch); SelectSnapKv uses
// DefaultLhPerLaunch().
absl::StatusOr<Selection> SnapKvSelectDeviceTimed(const SnapKvOptions& options,
                                                  const SelectionInput& input,
                                                  const std::vector<uint32_t>& caps,
                                                  SelectionTimings* timings,
                                                  uint32_t lh_per_launch);
uint32_t DefaultLhPerLaunch();

// Key tiles per block barrier in the fp16/bf16 attention kernels (1 or 2; process-wide, for
// bench/selection_speed to compare both; set it before selecting, from one thread).
int DefaultTilesPerBarrier();
absl::Status SetTilesPerBarrierForBench(int tiles);

}  // namespace kvtier::kernels::internal

#endif  // KVTIER_KERNELS_SRC_SELECTION_SELECTION_TIMING_H_
