// Acknowledged chunks stay readable while the cache is far from full: several threads each Put
// fresh keys and Get their own earlier ones (what `kvtier bench --mode mixed` does against the
// daemon), with host and disk tiers and the default policy. No Get may miss and nothing may be
// evicted or demoted: a cache may drop data under pressure, never without it.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kvtier/storage/tier_manager.h"
#include "test_util.h"

namespace kvtier::storage {
namespace {

using testing::TempDir;
using testing::TestKey;
using testing::TestPayload;

void RunOwnKeys(const std::string& policy, int background_threads) {
  TempDir dir;
  TierManagerOptions o;
  o.host.capacity_bytes = 256ull << 20;  // What the daemon tests give the host tier.
  o.host.pin_memory = false;
  o.disk.path = dir.Sub("db");
  o.disk.write_buffer_bytes = 8 << 20;
  o.disk.block_cache_bytes = 8 << 20;
  o.policy = policy;
  o.background_threads = background_threads;
  auto tm = TierManager::Create(o).value();

  constexpr int kThreads = 4;
  constexpr uint64_t kPerThread = 200;  // 800 chunks of 32 or 128 KiB: ~64 MiB, a quarter full.
  const std::vector<uint8_t> sizes_payload[2] = {TestPayload(1, 32 << 10),
                                                 TestPayload(2, 128 << 10)};
  std::atomic<uint64_t> counter{0}, misses{0}, wrong{0}, put_errors{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kThreads; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937_64 rng(1000 + w);
      std::vector<uint64_t> mine;
      for (uint64_t i = 0; i < kPerThread; ++i) {
        const uint64_t n = counter.fetch_add(1);
        const std::vector<uint8_t>& v = sizes_payload[n % 2];
        ChunkMeta meta;
        meta.num_tokens = 1;
        if (tm->Put(1, TestKey(n), v, meta).ok()) {
          mine.push_back(n);
        } else {
          put_errors.fetch_add(1);
        }
        const uint64_t k = mine[rng() % mine.size()];
        auto got = tm->Get(1, TestKey(k));
        if (!got.ok()) {
          misses.fetch_add(1);
          continue;
        }
        const std::vector<uint8_t>& want = sizes_payload[k % 2];
        if (got->bytes().size() != want.size() ||
            std::memcmp(got->bytes().data(), want.data(), want.size()) != 0) {
          wrong.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  tm->WaitForBackgroundWork();
  const StorageStats s = tm->Stats();
  EXPECT_EQ(put_errors.load(), 0u);
  EXPECT_EQ(misses.load(), 0u);
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_EQ(s.get_misses, 0u);
  EXPECT_EQ(s.indexed_chunks, kThreads * kPerThread);
  for (int t = 0; t < kNumTiers; ++t) {
    EXPECT_EQ(s.tiers[t].evictions, 0u) << TierName(static_cast<TierKind>(t));
    EXPECT_EQ(s.tiers[t].demotions_out, 0u) << TierName(static_cast<TierKind>(t));
  }
  // Every chunk is still there, in the host tier.
  for (uint64_t n = 0; n < kThreads * kPerThread; ++n) {
    auto got = tm->Get(1, TestKey(n));
    ASSERT_TRUE(got.ok()) << "chunk " << n << ": " << got.status();
    EXPECT_EQ(got->tier(), TierKind::kHost);
  }
}

TEST(StorageOwnKeysTest, S3FifoBackgroundThread) { RunOwnKeys("s3fifo", 1); }
TEST(StorageOwnKeysTest, LruInline) { RunOwnKeys("lru", 0); }
TEST(StorageOwnKeysTest, PrefixLruTwoBackgroundThreads) { RunOwnKeys("prefix_lru", 2); }

}  // namespace
}  // namespace kvtier::storage
