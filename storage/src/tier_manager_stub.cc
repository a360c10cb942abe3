// Temporary: Create() until the implementation lands (tier_manager_impl.cc).
#include "kvtier/storage/tier_manager.h"

namespace kvtier::storage {

absl::StatusOr<std::unique_ptr<TierManager>> TierManager::Create(
    const TierManagerOptions& options) {
  if (auto s = options.Validate(); !s.ok()) return s;
  return absl::UnimplementedError("TierManager implementation not landed yet");
}

}  // namespace kvtier::storage
