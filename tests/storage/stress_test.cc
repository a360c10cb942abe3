// Concurrent puts, gets, lookups with leases, pins, deletes and background movement across host
// and disk tiers. Values are self-describing (key id, version, then PRNG(key id, version)), so
// every returned payload is checked without keeping copies: a Get is a miss or exactly the bytes
// of some version that was put for that key. Also run under TSan (see docs/BENCHMARKS.md).
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "kvtier/storage/tier_manager.h"
#include "test_util.h"

namespace kvtier::storage {
namespace {

using testing::TempDir;
using testing::TestKey;
using testing::TestPayload;

constexpr NamespaceId kNs = 9;
constexpr uint64_t kKeys = 96;

std::vector<uint8_t> MakeValue(uint64_t id, uint64_t version) {
  const size_t size = 2048 + (id * 131 + version * 17) % 6000;
  std::vector<uint8_t> v = TestPayload(id * 1000003 + version, size);
  std::memcpy(v.data(), &id, 8);
  std::memcpy(v.data() + 8, &version, 8);
  return v;
}

// True when `bytes` is exactly MakeValue(id, v) for the version v it names.
bool ValueIsRight(uint64_t id, absl::Span<const uint8_t> bytes) {
  if (bytes.size() < 16) return false;
  uint64_t got_id = 0, version = 0;
  std::memcpy(&got_id, bytes.data(), 8);
  std::memcpy(&version, bytes.data() + 8, 8);
  if (got_id != id) return false;
  std::vector<uint8_t> expected = MakeValue(id, version);
  return expected.size() == bytes.size() &&
         std::memcmp(expected.data(), bytes.data(), bytes.size()) == 0;
}

void RunStress(const std::string& policy, int background_threads) {
  TempDir dir;
  TierManagerOptions o;
  o.host.capacity_bytes = 48 * 8192;  // About half the key space fits in memory.
  o.host.pin_memory = false;
  o.disk.path = dir.Sub("db");
  o.disk.capacity_bytes = 64 * 8192;  // And not all of it on disk: disk evicts too.
  o.disk.write_buffer_bytes = 1 << 20;
  o.policy = policy;
  o.background_threads = background_threads;
  o.default_lease_ms = 50;
  auto tm = TierManager::Create(o).value();

  std::atomic<uint64_t> wrong{0}, put_errors{0}, gets_ok{0};
  std::atomic<uint64_t> next_version{1};
  constexpr int kOps = 1500;
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937_64 rng(1000 + w);
      std::vector<LeaseId> leases;
      for (int op = 0; op < kOps; ++op) {
        const uint64_t id = rng() % kKeys;
        const int kind = static_cast<int>(rng() % 100);
        if (kind < 35) {
          const uint64_t version = next_version.fetch_add(1);
          PutOptions po;
          if (id > 0) po.parent = TestKey(id - 1);
          absl::Status s = tm->Put(kNs, TestKey(id), MakeValue(id, version),
                                   ChunkMeta{1, 256, 4096}, po);
          // Everything pinned in memory and disk full can refuse a put; nothing else may fail.
          if (!s.ok() && s.code() != absl::StatusCode::kResourceExhausted) ++put_errors;
        } else if (kind < 70) {
          auto h = tm->Get(kNs, TestKey(id));
          if (h.ok()) {
            ++gets_ok;
            if (!ValueIsRight(id, h->bytes())) ++wrong;
          } else if (h.status().code() != absl::StatusCode::kNotFound) {
            ++wrong;
          }
        } else if (kind < 88) {
          std::vector<ChunkKey> keys;
          for (uint64_t k = id; k < std::min(kKeys, id + 6); ++k) keys.push_back(TestKey(k));
          auto r = tm->Lookup(kNs, keys, LookupOptions{rng() % 2 == 0, 0});
          if (r.lease != kNoLease) leases.push_back(r.lease);
          if (leases.size() > 4) {
            (void)tm->ReleaseLease(leases.front());  // May already have expired.
            leases.erase(leases.begin());
          }
        } else if (kind < 94) {
          if (tm->Pin(kNs, TestKey(id)).ok()) {
            auto h = tm->Get(kNs, TestKey(id));
            if (h.ok() && !ValueIsRight(id, h->bytes())) ++wrong;
            // The pin may have been dropped by a concurrent Delete; then Unpin says NotFound or
            // FailedPrecondition (a re-put chunk is a new chunk).
            (void)tm->Unpin(kNs, TestKey(id));
          }
        } else if (kind < 97) {
          (void)tm->Delete(kNs, TestKey(id));
        } else {
          tm->ExpireLeases();
          (void)tm->Stats();
        }
      }
      for (LeaseId l : leases) (void)tm->ReleaseLease(l);
    });
  }
  for (auto& t : threads) t.join();
  tm->WaitForBackgroundWork();

  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_EQ(put_errors.load(), 0u);
  EXPECT_GT(gets_ok.load(), 0u);
  auto s = tm->Stats();
  EXPECT_EQ(s.checksum_failures, 0u);
  // No faults are injected here: a failed disk read would mean the index named a disk copy that
  // RocksDB does not hold (a movement race), not an I/O problem.
  EXPECT_EQ(s.io_errors, 0u);
  uint64_t present = 0;
  for (uint64_t id = 0; id < kKeys; ++id) {
    if (!tm->Contains(kNs, TestKey(id))) continue;
    ++present;
    auto h = tm->Get(kNs, TestKey(id));
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_TRUE(ValueIsRight(id, h->bytes())) << id;
  }
  EXPECT_EQ(s.indexed_chunks, present);
  for (int t = 0; t < kNumTiers; ++t) {
    if (s.tiers[t].enabled) {
      EXPECT_LE(s.tiers[t].used_bytes, s.tiers[t].capacity_bytes);
    }
  }
  EXPECT_GT(s.tiers[TierIndex(TierKind::kHost)].evictions +
                s.tiers[TierIndex(TierKind::kHost)].demotions_out,
            0u);
}

TEST(StorageStressTest, PrefixLruWithBackgroundThread) { RunStress("prefix_lru", 1); }
TEST(StorageStressTest, S3FifoWithTwoBackgroundThreads) { RunStress("s3fifo", 2); }
TEST(StorageStressTest, LruInline) { RunStress("lru", 0); }

}  // namespace
}  // namespace kvtier::storage
