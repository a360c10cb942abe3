// RangeAllocator: best-fit allocation of byte ranges inside a fixed arena, in units of a
// power-of-two granule (the host tier's alignment, the GPU tier's slab size). Freed ranges coalesce
// with their neighbours, so a long-running cache does not fragment into unusable slivers.
//
// Thread-safety: not thread-safe; the owning tier serializes calls.
#ifndef KVTIER_STORAGE_SRC_RANGE_ALLOCATOR_H_
#define KVTIER_STORAGE_SRC_RANGE_ALLOCATOR_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <utility>

namespace kvtier::storage::internal {

class RangeAllocator {
 public:
  // Manages [0, capacity) rounded down to whole granules.
  RangeAllocator(uint64_t capacity, uint64_t granule);

  // Offset of a free range of at least `size` bytes (rounded up to the granule), or nullopt.
  std::optional<uint64_t> Allocate(uint64_t size);
  // Returns a range obtained from Allocate(size) with the same size.
  void Free(uint64_t offset, uint64_t size);

  uint64_t RoundUp(uint64_t size) const { return (size + granule_ - 1) & ~(granule_ - 1); }
  uint64_t capacity() const { return capacity_; }
  uint64_t used() const { return used_; }
  uint64_t largest_free() const;
  size_t free_ranges() const { return by_offset_.size(); }

 private:
  void Insert(uint64_t offset, uint64_t length);
  void Erase(std::map<uint64_t, uint64_t>::iterator it);

  uint64_t capacity_;
  uint64_t granule_;
  uint64_t used_ = 0;
  std::map<uint64_t, uint64_t> by_offset_;         // offset -> length of each free range.
  std::set<std::pair<uint64_t, uint64_t>> by_size_;  // (length, offset) of each free range.
};

}  // namespace kvtier::storage::internal

#endif  // KVTIER_STORAGE_SRC_RANGE_ALLOCATOR_H_
