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

// With all pairs in one launch batch, pass 2 runs in this many launches (1 to 8; process-wide,
// for bench/selection_speed and the GPU tests), each followed by the top-k of its pairs, whose
// positions then travel to the host while the next launch runs. 1 = top-k after all of pass 2.
uint32_t DefaultMassGroups();
absl::Status SetMassGroupsForBench(uint32_t groups);

// How the fp16/bf16 attention kernels' warps synchronise on K tiles: 1 = block barrier (both
// key halves step together), 2 = one named barrier per key half (the halves drift apart).
// Process-wide, for bench/selection_speed and the GPU tests to compare both; set it before
// selecting, from one thread.
int DefaultAttentionSync();
absl::Status SetAttentionSyncForBench(int mode);

}  // namespace kvtier::kernels::internal

#endif  // KVTIER_KERNELS_SRC_SELECTION_SELECTION_TIMING_H_
