#include "kvtier/storage/types.h"

namespace kvtier::storage {

std::string_view TierName(TierKind t) {
  switch (t) {
    case TierKind::kGpu:
      return "gpu";
    case TierKind::kHost:
      return "host";
    case TierKind::kDisk:
      return "disk";
  }
  return "unknown";
}

}  // namespace kvtier::storage
