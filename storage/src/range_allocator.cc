#include "range_allocator.h"

#include <cstdlib>

#include "kvtier/common/logging.h"

namespace kvtier::storage::internal {

RangeAllocator::RangeAllocator(uint64_t capacity, uint64_t granule)
    : capacity_(capacity & ~(granule - 1)), granule_(granule) {
  if (capacity_ > 0) Insert(0, capacity_);
}

void RangeAllocator::Insert(uint64_t offset, uint64_t length) {
  by_offset_.emplace(offset, length);
  by_size_.emplace(length, offset);
}

void RangeAllocator::Erase(std::map<uint64_t, uint64_t>::iterator it) {
  by_size_.erase({it->second, it->first});
  by_offset_.erase(it);
}

std::optional<uint64_t> RangeAllocator::Allocate(uint64_t size) {
  if (size == 0) size = 1;
  const uint64_t need = RoundUp(size);
  auto fit = by_size_.lower_bound({need, 0});
  if (fit == by_size_.end()) return std::nullopt;
  const uint64_t length = fit->first;
  const uint64_t offset = fit->second;
  Erase(by_offset_.find(offset));
  if (length > need) Insert(offset + need, length - need);
  used_ += need;
  return offset;
}

void RangeAllocator::Free(uint64_t offset, uint64_t size) {
  if (size == 0) size = 1;
  uint64_t length = RoundUp(size);
  if (offset + length > capacity_ || length > used_) {
    KVTIER_LOG(ERROR, "RangeAllocator::Free({}, {}) outside the arena or over-free", offset, size);
    std::abort();
  }
  used_ -= length;
  // Coalesce with the following free range.
  auto next = by_offset_.lower_bound(offset);
  if (next != by_offset_.end() && next->first == offset + length) {
    length += next->second;
    Erase(next);
  }
  // Coalesce with the preceding free range.
  auto prev = by_offset_.lower_bound(offset);
  if (prev != by_offset_.begin()) {
    --prev;
    if (prev->first + prev->second == offset) {
      offset = prev->first;
      length += prev->second;
      Erase(prev);
    }
  }
  Insert(offset, length);
}

uint64_t RangeAllocator::largest_free() const {
  return by_size_.empty() ? 0 : by_size_.rbegin()->first;
}

}  // namespace kvtier::storage::internal
