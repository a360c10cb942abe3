// Device entry points of a build without CUDA: the dispatcher never calls them (it rejects
// device input first); they exist so that the library links.
#include "selection/selection_internal.h"

namespace kvtier::kernels::internal {
namespace {
absl::Status NoCuda() {
  return absl::InvalidArgumentError("selection: device input, but this build has no CUDA");
}
}  // namespace

absl::StatusOr<std::vector<float>> ColumnMassDevice(const SelectionInput&, uint32_t) {
  return NoCuda();
}
absl::StatusOr<Selection> SnapKvSelectDevice(const SnapKvOptions&, const SelectionInput&,
                                             const std::vector<uint32_t>&) {
  return NoCuda();
}
absl::StatusOr<Selection> H2oSelectDevice(const H2oOptions&, const H2oScoresInput&) {
  return NoCuda();
}
absl::StatusOr<Selection> H2oFromQueriesSelectDevice(const H2oOptions&, const SelectionInput&) {
  return NoCuda();
}

}  // namespace kvtier::kernels::internal
