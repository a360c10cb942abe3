#include "kvtier/storage/tier_manager.h"

#include <gtest/gtest.h>

#include <list>
#include <random>
#include <unordered_map>

#include "kvtier/common/crc32c.h"
#include "test_util.h"

namespace kvtier::storage {
namespace {

using testing::TempDir;
using testing::TestKey;
using testing::TestKeys;
using testing::TestPayload;

constexpr NamespaceId kNs = 1;

TierManagerOptions HostOnly(uint64_t capacity, const std::string& policy = "lru") {
  TierManagerOptions o;
  o.host.capacity_bytes = capacity;
  o.host.pin_memory = false;
  o.policy = policy;
  o.background_threads = 0;
  return o;
}

ChunkMeta Meta(uint64_t i) { return ChunkMeta{static_cast<uint8_t>(i % 7), 256, 1000 + i}; }

void ExpectChunk(TierManager* tm, uint64_t i, size_t size) {
  auto h = tm->Get(kNs, TestKey(i));
  ASSERT_TRUE(h.ok()) << "chunk " << i << ": " << h.status();
  auto expected = TestPayload(i, size);
  EXPECT_TRUE(std::equal(h->bytes().begin(), h->bytes().end(), expected.begin(), expected.end()))
      << "chunk " << i;
  EXPECT_EQ(h->meta(), Meta(i));
}

TEST(TierManagerOptionsTest, ValidateRejectsBadSettings) {
  TierManagerOptions o;
  EXPECT_TRUE(o.Validate().ok());
  o.policy = "mru";
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o = TierManagerOptions();
  o.host.capacity_bytes = 0;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);  // No tier at all.
  o = TierManagerOptions();
  o.host.alignment = 100;
  EXPECT_FALSE(o.Validate().ok());
  o = TierManagerOptions();
  o.demote_low_watermark = 0.99;
  EXPECT_FALSE(o.Validate().ok());
  o = TierManagerOptions();
  o.default_lease_ms = 100000;
  EXPECT_FALSE(o.Validate().ok());
  EXPECT_FALSE(TierManager::Create(o).ok());
}

TEST(TierManagerTest, GpuTierWithoutDeviceIsFailedPrecondition) {
  TierManagerOptions o = HostOnly(1 << 20);
  o.gpu.capacity_bytes = 1 << 20;
  o.gpu.device = 99;
  EXPECT_EQ(TierManager::Create(o).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(TierManagerTest, PutGetRoundTrip) {
  auto tm = TierManager::Create(HostOnly(1 << 20)).value();
  auto p = TestPayload(1, 5000);
  ASSERT_TRUE(tm->Put(kNs, TestKey(1), p, Meta(1)).ok());
  ExpectChunk(tm.get(), 1, 5000);
  auto h = tm->Get(kNs, TestKey(1)).value();
  EXPECT_EQ(h.tier(), TierKind::kHost);
  EXPECT_EQ(h.crc32c(), 0u);  // Memory-only: the CRC32C is computed when it first goes to disk.
  EXPECT_EQ(tm->Get(kNs, TestKey(2)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(tm->Get(kNs + 1, TestKey(1)).status().code(), absl::StatusCode::kNotFound);
  auto s = tm->Stats();
  EXPECT_EQ(s.gets, 4u);
  EXPECT_EQ(s.get_hits, 2u);
  EXPECT_EQ(s.get_misses, 2u);
  EXPECT_EQ(s.tiers[TierIndex(TierKind::kHost)].chunks, 1u);
  EXPECT_GE(s.tiers[TierIndex(TierKind::kHost)].used_bytes, 5000u);
}

TEST(TierManagerTest, PutRejectsEmptyAndOversizedPayloads) {
  auto o = HostOnly(1 << 20);
  o.max_chunk_bytes = 1000;
  auto tm = TierManager::Create(o).value();
  EXPECT_EQ(tm->Put(kNs, TestKey(1), {}, Meta(1)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tm->Put(kNs, TestKey(1), TestPayload(1, 1001), Meta(1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tm->Stats().put_failures, 2u);
}

TEST(TierManagerTest, PayloadLargerThanEveryTierIsResourceExhausted) {
  auto tm = TierManager::Create(HostOnly(64 << 10)).value();
  EXPECT_EQ(tm->Put(kNs, TestKey(1), TestPayload(1, 100 << 10), Meta(1)).code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(TierManagerTest, LookupReturnsLongestConsecutivePrefix) {
  auto tm = TierManager::Create(HostOnly(1 << 20)).value();
  for (uint64_t i : {0, 1, 2, 4}) ASSERT_TRUE(tm->Put(kNs, TestKey(i), TestPayload(i, 100), Meta(i)).ok());
  auto r = tm->Lookup(kNs, TestKeys(0, 5));
  EXPECT_EQ(r.hits, 3u);
  ASSERT_EQ(r.tiers.size(), 3u);
  for (TierKind t : r.tiers) EXPECT_EQ(t, TierKind::kHost);
  EXPECT_EQ(r.lease, kNoLease);
  EXPECT_EQ(tm->Lookup(kNs, TestKeys(3, 2)).hits, 0u);  // First key missing: no hits.
  EXPECT_EQ(tm->Lookup(kNs, {}).hits, 0u);
  auto s = tm->Stats();
  EXPECT_EQ(s.lookups, 3u);
  EXPECT_EQ(s.lookup_keys, 7u);
  EXPECT_EQ(s.lookup_hits, 3u);
}

TEST(TierManagerTest, PutReplacesAndDeleteRemoves) {
  auto tm = TierManager::Create(HostOnly(1 << 20)).value();
  ASSERT_TRUE(tm->Put(kNs, TestKey(1), TestPayload(99, 300), Meta(1)).ok());
  auto old_handle = tm->Get(kNs, TestKey(1)).value();
  ASSERT_TRUE(tm->Put(kNs, TestKey(1), TestPayload(1, 700), Meta(1)).ok());
  ExpectChunk(tm.get(), 1, 700);
  auto old_expected = TestPayload(99, 300);
  EXPECT_TRUE(std::equal(old_handle.bytes().begin(), old_handle.bytes().end(),
                         old_expected.begin(), old_expected.end()));
  EXPECT_EQ(tm->Stats().indexed_chunks, 1u);
  EXPECT_TRUE(tm->Delete(kNs, TestKey(1)).ok());
  EXPECT_FALSE(tm->Contains(kNs, TestKey(1)));
  EXPECT_EQ(tm->Delete(kNs, TestKey(1)).code(), absl::StatusCode::kNotFound);
}

TEST(TierManagerTest, NamespacesAreIsolatedAndDeletedWhole) {
  auto tm = TierManager::Create(HostOnly(1 << 20)).value();
  for (uint64_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(tm->Put(1, TestKey(i), TestPayload(i, 100), Meta(i)).ok());
    ASSERT_TRUE(tm->Put(2, TestKey(i), TestPayload(i + 50, 100), Meta(i)).ok());
  }
  EXPECT_EQ(tm->DeleteNamespace(1), 5u);
  EXPECT_EQ(tm->Lookup(1, TestKeys(0, 5)).hits, 0u);
  EXPECT_EQ(tm->Lookup(2, TestKeys(0, 5)).hits, 5u);
}

// Rule 9: with policy "lru" a single memory tier evicts exactly what an exact LRU model evicts.
TEST(TierManagerTest, LruMatchesExactLruModel) {
  constexpr size_t kChunk = 1024;
  constexpr size_t kSlots = 32;
  auto tm = TierManager::Create(HostOnly(kSlots * kChunk)).value();
  std::list<uint64_t> model;  // Front = most recent.
  std::unordered_map<uint64_t, std::list<uint64_t>::iterator> where;
  auto touch = [&](uint64_t k) {
    model.erase(where[k]);
    model.push_front(k);
    where[k] = model.begin();
  };
  std::mt19937_64 rng(42);
  for (int step = 0; step < 5000; ++step) {
    const uint64_t k = rng() % 96;
    const int op = static_cast<int>(rng() % 3);
    if (op == 0) {
      ASSERT_TRUE(tm->Put(kNs, TestKey(k), TestPayload(k, kChunk), Meta(k)).ok());
      if (where.count(k)) {
        model.erase(where[k]);
        where.erase(k);
      }
      if (model.size() == kSlots) {
        where.erase(model.back());
        model.pop_back();
      }
      model.push_front(k);
      where[k] = model.begin();
    } else if (op == 1) {
      const bool hit = tm->Get(kNs, TestKey(k)).ok();
      ASSERT_EQ(hit, where.count(k) == 1) << "step " << step;
      if (hit) touch(k);
    } else {
      std::vector<ChunkKey> keys = {TestKey(k), TestKey(k + 1), TestKey(k + 2)};
      auto r = tm->Lookup(kNs, keys);
      uint32_t expect = 0;
      while (expect < 3 && where.count(k + expect)) ++expect;
      ASSERT_EQ(r.hits, expect) << "step " << step;
      for (uint32_t i = 0; i < expect; ++i) touch(k + i);
    }
  }
  for (uint64_t k = 0; k < 100; ++k) EXPECT_EQ(tm->Contains(kNs, TestKey(k)), where.count(k) == 1);
}

TierManagerOptions HostAndDisk(const TempDir& dir, uint64_t host_bytes, int threads) {
  TierManagerOptions o = HostOnly(host_bytes, "prefix_lru");
  o.disk.path = dir.Sub("db");
  o.disk.capacity_bytes = 64 << 20;
  o.disk.write_buffer_bytes = 1 << 20;
  o.background_threads = threads;
  return o;
}

TEST(TierManagerTest, DemotesToDiskAndPromotesOnHit) {
  TempDir dir;
  auto tm = TierManager::Create(HostAndDisk(dir, 4 * 4096, 0)).value();
  for (uint64_t i = 0; i < 10; ++i) {
    ASSERT_TRUE(tm->Put(kNs, TestKey(i), TestPayload(i, 4096), Meta(i)).ok());
  }
  auto s = tm->Stats();
  EXPECT_EQ(s.indexed_chunks, 10u);
  EXPECT_LE(s.tiers[TierIndex(TierKind::kHost)].chunks, 4u);
  EXPECT_EQ(s.tiers[TierIndex(TierKind::kDisk)].chunks, 6u);
  EXPECT_EQ(s.tiers[TierIndex(TierKind::kHost)].demotions_out, 6u);
  EXPECT_EQ(s.bytes_demoted, 6u * 4096);
  auto r = tm->Lookup(kNs, TestKeys(0, 10));
  EXPECT_EQ(r.hits, 10u);
  EXPECT_EQ(r.tiers[0], TierKind::kDisk);
  EXPECT_EQ(r.tiers[9], TierKind::kHost);
  // A disk hit is served from disk and promoted to host.
  auto h = tm->Get(kNs, TestKey(0));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->tier(), TierKind::kDisk);
  auto p0 = TestPayload(0, 4096);
  EXPECT_EQ(h->crc32c(), Crc32c(p0.data(), p0.size()));  // Computed at demotion, verified on read.
  EXPECT_EQ(tm->Lookup(kNs, TestKeys(0, 1)).tiers[0], TierKind::kHost);
  for (uint64_t i = 0; i < 10; ++i) ExpectChunk(tm.get(), i, 4096);
  s = tm->Stats();
  EXPECT_GE(s.tiers[TierIndex(TierKind::kHost)].promotions_in, 1u);
  EXPECT_GE(s.bytes_promoted, 4096u);
  EXPECT_EQ(s.checksum_failures, 0u);
}

// PutOptions::crc32c: a caller-given CRC is kept with the chunk (memory copy's handle reports it,
// demotion writes it to disk without a pass) and every disk read is checked against it; a wrong
// one turns the chunk into a counted miss, never into bytes.
TEST(TierManagerTest, CallerGivenCrcIsKeptAndCheckedOnRead) {
  TempDir dir;
  auto tm = TierManager::Create(HostAndDisk(dir, 2 * 4096, 0)).value();
  const auto good = TestPayload(1, 4096);
  PutOptions right;
  right.crc32c = Crc32c(good.data(), good.size());
  ASSERT_TRUE(tm->Put(kNs, TestKey(1), good, Meta(1), right).ok());
  auto h = tm->Get(kNs, TestKey(1));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->tier(), TierKind::kHost);
  EXPECT_EQ(h->crc32c(), *right.crc32c);  // known while still in memory
  h = absl::StatusOr<ChunkHandle>(absl::UnknownError("released"));

  PutOptions wrong;
  wrong.crc32c = *right.crc32c ^ 1;
  ASSERT_TRUE(tm->Put(kNs, TestKey(2), TestPayload(2, 4096), Meta(2), wrong).ok());
  // Two more chunks push both to disk (host holds two).
  for (uint64_t i = 3; i < 5; ++i) {
    ASSERT_TRUE(tm->Put(kNs, TestKey(i), TestPayload(i, 4096), Meta(i)).ok());
  }
  auto r = tm->Lookup(kNs, TestKeys(1, 2));
  ASSERT_EQ(r.hits, 2u);
  EXPECT_EQ(r.tiers[0], TierKind::kDisk);
  EXPECT_EQ(r.tiers[1], TierKind::kDisk);
  ExpectChunk(tm.get(), 1, 4096);  // right CRC: read back from disk
  auto bad = tm->Get(kNs, TestKey(2));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kNotFound);  // wrong CRC: a miss
  EXPECT_FALSE(tm->Contains(kNs, TestKey(2)));
  EXPECT_EQ(tm->Stats().checksum_failures, 1u);
}

TEST(TierManagerTest, BackgroundDemotionRelievesPressureWithoutLosingChunks) {
  TempDir dir;
  auto o = HostAndDisk(dir, 64 * 4096, 1);
  auto tm = TierManager::Create(o).value();
  for (uint64_t i = 0; i < 200; ++i) {
    ASSERT_TRUE(tm->Put(kNs, TestKey(i), TestPayload(i, 4096), Meta(i)).ok());
  }
  tm->WaitForBackgroundWork();
  auto s = tm->Stats();
  const auto& host = s.tiers[TierIndex(TierKind::kHost)];
  EXPECT_LE(host.used_bytes, static_cast<uint64_t>(o.demote_high_watermark * host.capacity_bytes));
  EXPECT_EQ(s.indexed_chunks, 200u);
  EXPECT_GT(s.tiers[TierIndex(TierKind::kDisk)].chunks, 0u);
  for (uint64_t i = 0; i < 200; ++i) ExpectChunk(tm.get(), i, 4096);
  tm->WaitForBackgroundWork();  // Let promotions settle before teardown.
}

TEST(TierManagerTest, HostOnlyEvictsAndMemoryStaysWithinCapacity) {
  auto tm = TierManager::Create(HostOnly(100 * 1024)).value();
  for (uint64_t i = 0; i < 1000; ++i) {
    ASSERT_TRUE(tm->Put(kNs, TestKey(i), TestPayload(i, 1000 + i % 500), Meta(i)).ok());
    ASSERT_LE(tm->Stats().tiers[TierIndex(TierKind::kHost)].used_bytes, 100u * 1024);
  }
  auto s = tm->Stats();
  EXPECT_GT(s.tiers[TierIndex(TierKind::kHost)].evictions, 800u);
  EXPECT_EQ(s.indexed_chunks, s.tiers[TierIndex(TierKind::kHost)].chunks);
}

TEST(TierManagerTest, PinnedChunksAreNeverEvicted) {
  auto tm = TierManager::Create(HostOnly(16 * 1024)).value();
  ASSERT_TRUE(tm->Put(kNs, TestKey(0), TestPayload(0, 1024), Meta(0)).ok());
  ASSERT_TRUE(tm->Pin(kNs, TestKey(0)).ok());
  ASSERT_TRUE(tm->Pin(kNs, TestKey(0)).ok());  // Pins count.
  EXPECT_EQ(tm->Stats().pinned_chunks, 1u);
  for (uint64_t i = 1; i < 100; ++i) {
    ASSERT_TRUE(tm->Put(kNs, TestKey(i), TestPayload(i, 1024), Meta(i)).ok());
  }
  ExpectChunk(tm.get(), 0, 1024);
  ASSERT_TRUE(tm->Unpin(kNs, TestKey(0)).ok());
  for (uint64_t i = 100; i < 200; ++i) {
    ASSERT_TRUE(tm->Put(kNs, TestKey(i), TestPayload(i, 1024), Meta(i)).ok());
  }
  EXPECT_TRUE(tm->Contains(kNs, TestKey(0)));  // Still pinned once.
  ASSERT_TRUE(tm->Unpin(kNs, TestKey(0)).ok());
  EXPECT_EQ(tm->Unpin(kNs, TestKey(0)).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(tm->Stats().pinned_chunks, 0u);
  for (uint64_t i = 200; i < 300; ++i) {
    ASSERT_TRUE(tm->Put(kNs, TestKey(i), TestPayload(i, 1024), Meta(i)).ok());
  }
  EXPECT_FALSE(tm->Contains(kNs, TestKey(0)));
  EXPECT_EQ(tm->Pin(kNs, TestKey(0)).code(), absl::StatusCode::kNotFound);
}

TEST(TierManagerTest, AllPinnedMemoryRefusesPutsWithoutDisk) {
  auto tm = TierManager::Create(HostOnly(4 * 1024)).value();
  for (uint64_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(tm->Put(kNs, TestKey(i), TestPayload(i, 1024), Meta(i)).ok());
    ASSERT_TRUE(tm->Pin(kNs, TestKey(i)).ok());
  }
  EXPECT_EQ(tm->Put(kNs, TestKey(9), TestPayload(9, 1024), Meta(9)).code(),
            absl::StatusCode::kResourceExhausted);
  for (uint64_t i = 0; i < 4; ++i) ExpectChunk(tm.get(), i, 1024);
}

// Rule 10: a handle's bytes survive eviction of its chunk and reuse of its memory.
TEST(TierManagerTest, HandlesAreNeverTornByEviction) {
  auto tm = TierManager::Create(HostOnly(8 * 4096)).value();
  ASSERT_TRUE(tm->Put(kNs, TestKey(0), TestPayload(0, 4096), Meta(0)).ok());
  auto h = tm->Get(kNs, TestKey(0)).value();
  for (uint64_t i = 1; i < 50; ++i) {
    ASSERT_TRUE(tm->Put(kNs, TestKey(i), TestPayload(i, 4096), Meta(i)).ok());
  }
  EXPECT_FALSE(tm->Contains(kNs, TestKey(0)));
  auto expected = TestPayload(0, 4096);
  EXPECT_TRUE(std::equal(h.bytes().begin(), h.bytes().end(), expected.begin(), expected.end()));
  // The held range stays charged until the handle goes.
  const uint64_t used_with_handle = tm->Stats().tiers[TierIndex(TierKind::kHost)].used_bytes;
  h = ChunkHandle();
  EXPECT_LT(tm->Stats().tiers[TierIndex(TierKind::kHost)].used_bytes, used_with_handle + 1);
}

class LeaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    clock_ = std::make_shared<ManualClock>();
    auto o = HostOnly(8 * 1024);
    o.clock = clock_;
    o.default_lease_ms = 1000;
    o.max_lease_ms = 10000;
    tm_ = TierManager::Create(o).value();
    for (uint64_t i = 0; i < 4; ++i) {
      ASSERT_TRUE(tm_->Put(kNs, TestKey(i), TestPayload(i, 1024), Meta(i)).ok());
    }
  }
  void Fill(uint64_t from, uint64_t n) {
    for (uint64_t i = from; i < from + n; ++i) {
      ASSERT_TRUE(tm_->Put(kNs, TestKey(i), TestPayload(i, 1024), Meta(i)).ok());
    }
  }
  std::shared_ptr<ManualClock> clock_;
  std::unique_ptr<TierManager> tm_;
};

TEST_F(LeaseTest, LeasePinsHitsUntilItExpires) {
  auto r = tm_->Lookup(kNs, TestKeys(0, 3), LookupOptions{true, 0});
  ASSERT_EQ(r.hits, 3u);
  ASSERT_NE(r.lease, kNoLease);
  EXPECT_EQ(r.lease_expiry_nanos, clock_->NowNanos() + 1000 * 1'000'000);
  EXPECT_EQ(tm_->Stats().pinned_chunks, 3u);
  Fill(100, 50);
  for (uint64_t i = 0; i < 3; ++i) EXPECT_TRUE(tm_->Contains(kNs, TestKey(i)));
  clock_->AdvanceMillis(999);
  EXPECT_EQ(tm_->ExpireLeases(), 0u);
  clock_->AdvanceMillis(1);
  EXPECT_EQ(tm_->ExpireLeases(), 1u);  // The client never came back: its pins go.
  EXPECT_EQ(tm_->Stats().pinned_chunks, 0u);
  EXPECT_EQ(tm_->Stats().leases_expired, 1u);
  EXPECT_EQ(tm_->ReleaseLease(r.lease).code(), absl::StatusCode::kNotFound);
  Fill(200, 50);
  for (uint64_t i = 0; i < 3; ++i) EXPECT_FALSE(tm_->Contains(kNs, TestKey(i)));
}

TEST_F(LeaseTest, ExpiryHappensLazilyOnLookup) {
  auto r = tm_->Lookup(kNs, TestKeys(0, 2), LookupOptions{true, 500});
  ASSERT_NE(r.lease, kNoLease);
  clock_->AdvanceMillis(501);
  tm_->Lookup(kNs, TestKeys(50, 1));  // Any lookup reaps expired leases.
  EXPECT_EQ(tm_->Stats().active_leases, 0u);
  EXPECT_EQ(tm_->Stats().pinned_chunks, 0u);
}

TEST_F(LeaseTest, ReleaseAndRenew) {
  auto a = tm_->Lookup(kNs, TestKeys(0, 2), LookupOptions{true, 1000});
  auto b = tm_->Lookup(kNs, TestKeys(1, 2), LookupOptions{true, 1000});
  EXPECT_EQ(tm_->Stats().pinned_chunks, 3u);
  ASSERT_TRUE(tm_->ReleaseLease(a.lease).ok());
  EXPECT_EQ(tm_->Stats().pinned_chunks, 2u);  // Chunk 1 still pinned by b.
  clock_->AdvanceMillis(900);
  ASSERT_TRUE(tm_->RenewLease(b.lease, 1000).ok());
  clock_->AdvanceMillis(900);
  EXPECT_EQ(tm_->ExpireLeases(), 0u);
  clock_->AdvanceMillis(200);
  EXPECT_EQ(tm_->ExpireLeases(), 1u);
  EXPECT_EQ(tm_->RenewLease(b.lease, 1000).code(), absl::StatusCode::kNotFound);
  auto s = tm_->Stats();
  EXPECT_EQ(s.leases_granted, 2u);
  EXPECT_EQ(s.leases_released, 1u);
  EXPECT_EQ(s.leases_expired, 1u);
}

TEST_F(LeaseTest, LeaseDurationIsCapped) {
  auto r = tm_->Lookup(kNs, TestKeys(0, 1), LookupOptions{true, 1'000'000});
  EXPECT_EQ(r.lease_expiry_nanos, clock_->NowNanos() + 10000ll * 1'000'000);
}

TEST_F(LeaseTest, NoLeaseWithoutHits) {
  auto r = tm_->Lookup(kNs, TestKeys(500, 2), LookupOptions{true, 0});
  EXPECT_EQ(r.hits, 0u);
  EXPECT_EQ(r.lease, kNoLease);
}

TEST_F(LeaseTest, LeaseDoesNotUnpinARecreatedChunk) {
  auto r = tm_->Lookup(kNs, TestKeys(0, 1), LookupOptions{true, 1000});
  ASSERT_TRUE(tm_->Delete(kNs, TestKey(0)).ok());
  ASSERT_TRUE(tm_->Put(kNs, TestKey(0), TestPayload(0, 1024), Meta(0)).ok());
  ASSERT_TRUE(tm_->Pin(kNs, TestKey(0)).ok());
  ASSERT_TRUE(tm_->ReleaseLease(r.lease).ok());
  EXPECT_EQ(tm_->Stats().pinned_chunks, 1u);  // The explicit pin of the new chunk holds.
}

TEST(TierManagerTest, RestartRebuildsIndexAndLosesNoAcknowledgedChunk) {
  TempDir dir;
  auto o = HostAndDisk(dir, 0, 0);
  o.host.capacity_bytes = 0;  // Disk only: every acknowledged put is on disk.
  {
    auto tm = TierManager::Create(o).value();
    for (uint64_t i = 0; i < 50; ++i) {
      ASSERT_TRUE(tm->Put(kNs, TestKey(i), TestPayload(i, 3000 + i), Meta(i)).ok());
    }
    ASSERT_TRUE(tm->Delete(kNs, TestKey(7)).ok());
  }
  auto tm = TierManager::Create(o).value();
  auto s = tm->Stats();
  EXPECT_EQ(s.indexed_chunks, 49u);
  EXPECT_EQ(s.tiers[TierIndex(TierKind::kDisk)].used_bytes, 50u * 3000 + 49 * 50 / 2 - 3007);
  for (uint64_t i = 0; i < 50; ++i) {
    if (i == 7) {
      EXPECT_FALSE(tm->Contains(kNs, TestKey(i)));
    } else {
      ExpectChunk(tm.get(), i, 3000 + i);
    }
  }
}

TEST(TierManagerTest, DiskOverwriteKeepsAccountingExact) {
  TempDir dir;
  auto o = HostAndDisk(dir, 0, 0);
  o.host.capacity_bytes = 0;
  auto tm = TierManager::Create(o).value();
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(tm->Put(kNs, TestKey(1), TestPayload(1, 1000 * (round + 1)), Meta(1)).ok());
  }
  EXPECT_EQ(tm->Stats().tiers[TierIndex(TierKind::kDisk)].used_bytes, 3000u);
  ExpectChunk(tm.get(), 1, 3000);
}

TEST(TierManagerTest, PrefixLruPutWithParentEvictsTailsFirst) {
  auto tm = TierManager::Create(HostOnly(8 * 1024, "prefix_lru")).value();
  // Chain 0..5 put with parents, then new chunks push the cache: the chain shrinks from its tail.
  for (uint64_t i = 0; i < 6; ++i) {
    PutOptions po;
    if (i > 0) po.parent = TestKey(i - 1);
    ASSERT_TRUE(tm->Put(kNs, TestKey(i), TestPayload(i, 1024), Meta(i), po).ok());
  }
  for (uint64_t i = 100; i < 104; ++i) {
    ASSERT_TRUE(tm->Put(kNs, TestKey(i), TestPayload(i, 1024), Meta(i)).ok());
  }
  EXPECT_EQ(tm->Lookup(kNs, TestKeys(0, 6)).hits, 4u);
  EXPECT_FALSE(tm->Contains(kNs, TestKey(4)));
  EXPECT_FALSE(tm->Contains(kNs, TestKey(5)));
}

}  // namespace
}  // namespace kvtier::storage
