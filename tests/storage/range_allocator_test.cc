#include "range_allocator.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace kvtier::storage::internal {
namespace {

TEST(RangeAllocatorTest, RoundsToGranuleAndFillsExactly) {
  RangeAllocator a(4096, 256);
  EXPECT_EQ(a.RoundUp(1), 256u);
  EXPECT_EQ(a.RoundUp(257), 512u);
  std::vector<uint64_t> offsets;
  for (int i = 0; i < 16; ++i) {
    auto off = a.Allocate(200);
    ASSERT_TRUE(off.has_value());
    offsets.push_back(*off);
  }
  EXPECT_FALSE(a.Allocate(1).has_value());
  EXPECT_EQ(a.used(), 4096u);
  for (uint64_t off : offsets) a.Free(off, 200);
  EXPECT_EQ(a.used(), 0u);
  EXPECT_EQ(a.free_ranges(), 1u);  // Fully coalesced.
  EXPECT_EQ(a.largest_free(), 4096u);
}

TEST(RangeAllocatorTest, CoalescesNeighboursAndReusesHoles) {
  RangeAllocator a(1024, 256);
  auto x = a.Allocate(256), y = a.Allocate(256), z = a.Allocate(256), w = a.Allocate(256);
  ASSERT_TRUE(x && y && z && w);
  a.Free(*y, 256);
  a.Free(*z, 256);
  EXPECT_EQ(a.largest_free(), 512u);
  auto big = a.Allocate(512);
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(*big, *y);
}

TEST(RangeAllocatorTest, RandomizedNoOverlap) {
  RangeAllocator a(1 << 20, 64);
  std::mt19937 rng(7);
  std::vector<std::pair<uint64_t, uint64_t>> live;
  for (int step = 0; step < 20000; ++step) {
    if (!live.empty() && (rng() % 2 == 0)) {
      size_t i = rng() % live.size();
      a.Free(live[i].first, live[i].second);
      live[i] = live.back();
      live.pop_back();
    } else {
      uint64_t size = 1 + rng() % 8192;
      if (auto off = a.Allocate(size)) live.emplace_back(*off, size);
    }
  }
  std::sort(live.begin(), live.end());
  uint64_t total = 0;
  for (size_t i = 0; i < live.size(); ++i) {
    total += a.RoundUp(live[i].second);
    if (i > 0) {
      EXPECT_LE(live[i - 1].first + a.RoundUp(live[i - 1].second), live[i].first);
    }
  }
  EXPECT_EQ(total, a.used());
}

}  // namespace
}  // namespace kvtier::storage::internal
