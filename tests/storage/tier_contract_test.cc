// One contract every Tier implementation must keep (host, disk, and GPU when a device is present;
// the GPU instance is built into storage_tier_contract_gpu_test).
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <thread>
#include <vector>

#include "cuda_memory.h"
#include "disk_tier.h"
#include "kvtier/common/crc32c.h"
#include "memory_tier.h"
#include "test_util.h"

namespace kvtier::storage::internal {
namespace {

using testing::TempDir;
using testing::TestKey;
using testing::TestPayload;

struct TierFactory {
  std::string name;
  std::function<std::shared_ptr<Tier>(uint64_t capacity, TempDir* dir)> make;
};

std::vector<TierFactory> Factories() {
  std::vector<TierFactory> f;
#ifdef KVTIER_STORAGE_GPU_CONTRACT
  f.push_back({"gpu", [](uint64_t cap, TempDir*) -> std::shared_ptr<Tier> {
                 return MemoryTier::NewGpu(cap, 0, 4096).value();
               }});
  f.push_back({"host_pinned", [](uint64_t cap, TempDir*) -> std::shared_ptr<Tier> {
                 auto t = MemoryTier::NewHost(cap, 256, true).value();
                 EXPECT_TRUE(t->pinned());
                 return t;
               }});
#else
  f.push_back({"host", [](uint64_t cap, TempDir*) -> std::shared_ptr<Tier> {
                 return MemoryTier::NewHost(cap, 256, false).value();
               }});
  f.push_back({"disk", [](uint64_t cap, TempDir* dir) -> std::shared_ptr<Tier> {
                 DiskTierOptions o;
                 o.path = dir->Sub("db");
                 o.capacity_bytes = cap;
                 o.write_buffer_bytes = 1 << 20;
                 return std::shared_ptr<Tier>(DiskTier::Open(o).value());
               }});
#endif
  return f;
}

class TierContractTest : public ::testing::TestWithParam<TierFactory> {
 protected:
  std::shared_ptr<Tier> Make(uint64_t capacity) { return GetParam().make(capacity, &dir_); }
  static StorageKey Key(uint64_t i) { return StorageKey{7, TestKey(i)}; }
  static absl::StatusOr<std::shared_ptr<TierCopy>> Write(Tier* t, uint64_t i,
                                                         const std::vector<uint8_t>& p) {
    ChunkMeta meta{3, 256, p.size() * 4};
    return t->Write(Key(i), meta, Crc32c(p.data(), p.size()), p);
  }
  static std::vector<uint8_t> Bytes(const TierRead& r) {
    return std::vector<uint8_t>(r.data, r.data + r.size);
  }
  TempDir dir_;
};

TEST_P(TierContractTest, WriteThenReadReturnsTheSameBytes) {
  auto tier = Make(4 << 20);
  for (size_t size : {size_t{1}, size_t{255}, size_t{4097}, size_t{300000}}) {
    auto p = TestPayload(size, size);
    auto copy = Write(tier.get(), size, p);
    ASSERT_TRUE(copy.ok()) << copy.status();
    EXPECT_EQ((*copy)->size(), size);
    EXPECT_EQ((*copy)->meta().codec_id, 3);
    auto read = tier->Read(Key(size), *copy);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_EQ(Bytes(*read), p);
  }
}

TEST_P(TierContractTest, AccountsChargedBytesAndReleasesThem) {
  auto tier = Make(4 << 20);
  EXPECT_EQ(tier->used_bytes(), 0u);
  EXPECT_GE(tier->capacity_bytes(), 4u << 19);
  auto p = TestPayload(1, 10000);
  auto copy = Write(tier.get(), 1, p);
  ASSERT_TRUE(copy.ok());
  EXPECT_EQ(tier->used_bytes(), tier->ChargeFor(10000));
  EXPECT_GE(tier->ChargeFor(10000), 10000u);
  ASSERT_TRUE(tier->Erase(Key(1), **copy).ok());
  copy->reset();
  EXPECT_EQ(tier->used_bytes(), 0u);
}

TEST_P(TierContractTest, FullTierRefusesWithResourceExhausted) {
  const uint64_t capacity = 1 << 20;
  auto tier = Make(capacity);
  std::vector<std::shared_ptr<TierCopy>> copies;
  absl::Status last;
  for (int i = 0; i < 100; ++i) {
    auto copy = Write(tier.get(), i, TestPayload(i, 64 << 10));
    if (!copy.ok()) {
      last = copy.status();
      break;
    }
    copies.push_back(*copy);
  }
  EXPECT_EQ(last.code(), absl::StatusCode::kResourceExhausted) << last;
  EXPECT_GE(copies.size(), 8u);  // Allocation granules may cost a little, never half.
  EXPECT_LE(tier->used_bytes(), capacity);
  // Space comes back after an erase.
  ASSERT_TRUE(tier->Erase(Key(0), *copies[0]).ok());
  copies.erase(copies.begin());
  EXPECT_TRUE(Write(tier.get(), 1000, TestPayload(1000, 64 << 10)).ok());
}

TEST_P(TierContractTest, ReadAccessOutlivesErase) {
  auto tier = Make(4 << 20);
  auto p = TestPayload(9, 100000);
  auto copy = Write(tier.get(), 9, p);
  ASSERT_TRUE(copy.ok());
  auto read = tier->Read(Key(9), *copy);
  ASSERT_TRUE(read.ok());
  ASSERT_TRUE(tier->Erase(Key(9), **copy).ok());
  copy->reset();
  // Reuse the space: a torn read would now see these bytes.
  for (int i = 0; i < 8; ++i) (void)Write(tier.get(), 100 + i, TestPayload(100 + i, 100000));
  EXPECT_EQ(Bytes(*read), p);
}

TEST_P(TierContractTest, ConcurrentWritersAndReaders) {
  auto tier = Make(8 << 20);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < 40; ++i) {
        const uint64_t id = w * 1000 + i;
        auto p = TestPayload(id, 1000 + 97 * i);
        auto copy = Write(tier.get(), id, p);
        if (!copy.ok()) {
          ++failures;
          continue;
        }
        auto read = tier->Read(Key(id), *copy);
        if (!read.ok() || Bytes(*read) != p) ++failures;
        if (i % 2 == 0 && !tier->Erase(Key(id), **copy).ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(AllTiers, TierContractTest, ::testing::ValuesIn(Factories()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace kvtier::storage::internal
