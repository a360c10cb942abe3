// storage_bench: speed of the storage engine on this machine (docs/BENCHMARKS.md, "Storage").
//   - index lookups per second on one core (single-key and 32-key prefix lookups);
//   - index memory per chunk (counter bytes_per_chunk);
//   - host-tier put/get of 1 MiB payloads next to plain memcpy of 1 MiB in the same run;
//   - disk-tier (RocksDB) write and read throughput of 1 MiB payloads.
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "kvtier/common/status.h"
#include "kvtier/storage/tier_manager.h"

namespace kvtier::storage {
namespace {

ChunkKey Key(uint64_t i) {
  std::array<uint8_t, ChunkKey::kSize> b{};
  for (int j = 0; j < 8; ++j) b[j] = static_cast<uint8_t>(i >> (8 * j));
  for (int j = 8; j < 32; ++j) b[j] = static_cast<uint8_t>((i * 2654435761u) >> (j % 8));
  return ChunkKey(b);
}

std::unique_ptr<TierManager> HostManager(uint64_t capacity, const std::string& policy = "lru") {
  TierManagerOptions o;
  o.host.capacity_bytes = capacity;
  o.host.pin_memory = false;
  o.background_threads = 0;
  o.policy = policy;
  return TierManager::Create(o).value();
}

constexpr uint64_t kIndexed = 200'000;

const char* PolicyArg(const benchmark::State& state) { return state.range(0) ? "s3fifo" : "lru"; }

// Arg 0: policy lru, 1: s3fifo (the default).
void BM_LookupSingleKey(benchmark::State& state) {
  auto tm = HostManager(kIndexed * 512, PolicyArg(state));
  std::vector<uint8_t> payload(64, 1);
  std::vector<ChunkKey> keys;
  for (uint64_t i = 0; i < kIndexed; ++i) {
    keys.push_back(Key(i));
    KVTIER_CHECK_OK(tm->Put(0, keys.back(), payload, ChunkMeta{}));
  }
  uint64_t i = 0, hits = 0;
  for (auto _ : state) {
    auto r = tm->Lookup(0, absl::MakeConstSpan(&keys[i], 1));
    hits += r.hits;
    i = (i + 7919) % kIndexed;
  }
  benchmark::DoNotOptimize(hits);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LookupSingleKey)->Arg(0)->Arg(1);

void BM_LookupPrefix32(benchmark::State& state) {
  auto tm = HostManager(kIndexed * 512, PolicyArg(state));
  std::vector<uint8_t> payload(64, 1);
  std::vector<ChunkKey> keys;
  for (uint64_t i = 0; i < kIndexed; ++i) {
    keys.push_back(Key(i));
    KVTIER_CHECK_OK(tm->Put(0, keys.back(), payload, ChunkMeta{}));
  }
  uint64_t i = 0, hits = 0;
  for (auto _ : state) {
    auto r = tm->Lookup(0, absl::MakeConstSpan(&keys[i], 32));
    hits += r.hits;
    i = (i + 7919) % (kIndexed - 32);
  }
  benchmark::DoNotOptimize(hits);
  state.SetItemsProcessed(state.iterations() * 32);
}
BENCHMARK(BM_LookupPrefix32)->Arg(0)->Arg(1);

// Heap bytes per indexed chunk: index entry, hash slot and the host copy's bookkeeping (the
// payload itself lives in the arena allocated up front, outside this count).
void BM_IndexMemoryPerChunk(benchmark::State& state) {
  for (auto _ : state) {
    auto tm = HostManager(kIndexed * 512, state.range(0) ? "s3fifo" : "lru");
    std::vector<uint8_t> payload(64, 1);
    const struct mallinfo2 m0 = mallinfo2();
    const size_t before = m0.uordblks + m0.hblkhd;
    for (uint64_t i = 0; i < kIndexed; ++i) {
      KVTIER_CHECK_OK(tm->Put(0, Key(i), payload, ChunkMeta{}));
    }
    const struct mallinfo2 m1 = mallinfo2();
    const size_t after = m1.uordblks + m1.hblkhd;
    if (tm->Stats().indexed_chunks != kIndexed) state.SkipWithError("chunks were evicted");
    state.counters["bytes_per_chunk"] = static_cast<double>(after - before) / kIndexed;
  }
}
BENCHMARK(BM_IndexMemoryPerChunk)->Arg(0)->Arg(1)->Iterations(1)->Unit(benchmark::kMillisecond);

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kWorkingSet = 256;  // 1 MiB buffers cycled through: 256 MiB, beyond caches.

std::vector<uint8_t>& Source() {
  static auto* src = [] {
    auto* v = new std::vector<uint8_t>(kWorkingSet * kMiB);
    for (size_t i = 0; i < v->size(); ++i) (*v)[i] = static_cast<uint8_t>(i * 7 + 3);
    return v;
  }();
  return *src;
}

void BM_Memcpy1MiB(benchmark::State& state) {
  auto& src = Source();
  std::vector<uint8_t> dst(kWorkingSet * kMiB, 0);
  uint64_t i = 0;
  for (auto _ : state) {
    std::memcpy(dst.data() + (i % kWorkingSet) * kMiB, src.data() + ((i * 37) % kWorkingSet) * kMiB,
                kMiB);
    benchmark::ClobberMemory();
    ++i;
  }
  state.SetBytesProcessed(state.iterations() * kMiB);
}
BENCHMARK(BM_Memcpy1MiB)->UseRealTime();

void BM_HostPut1MiB(benchmark::State& state) {
  auto& src = Source();
  auto tm = HostManager((kWorkingSet + 8) * kMiB);
  // Warm-up pass: the arena's pages are touched once (page faults are a start-up cost, not a
  // per-put cost; a pinned arena is committed at start anyway).
  for (uint64_t k = 0; k < kWorkingSet; ++k) {
    KVTIER_CHECK_OK(tm->Put(0, Key(k), absl::MakeConstSpan(src.data() + k * kMiB, kMiB), ChunkMeta{}));
  }
  uint64_t i = 0;
  for (auto _ : state) {
    // Keys cycle over the working set: each put replaces the chunk put kWorkingSet puts ago.
    absl::Status s = tm->Put(0, Key(i % kWorkingSet),
                             absl::MakeConstSpan(src.data() + ((i * 37) % kWorkingSet) * kMiB, kMiB),
                             ChunkMeta{});
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    ++i;
  }
  state.SetBytesProcessed(state.iterations() * kMiB);
}
BENCHMARK(BM_HostPut1MiB)->UseRealTime();

// Get plus copying the bytes out (what a server does when it sends them).
void BM_HostGet1MiBCopyOut(benchmark::State& state) {
  auto& src = Source();
  auto tm = HostManager((kWorkingSet + 8) * kMiB);
  for (uint64_t i = 0; i < kWorkingSet; ++i) {
    KVTIER_CHECK_OK(tm->Put(0, Key(i), absl::MakeConstSpan(src.data() + i * kMiB, kMiB), ChunkMeta{}));
  }
  std::vector<uint8_t> dst(kWorkingSet * kMiB, 0);
  uint64_t i = 0;
  for (auto _ : state) {
    auto h = tm->Get(0, Key((i * 37) % kWorkingSet));
    if (!h.ok()) state.SkipWithError("miss");
    std::memcpy(dst.data() + (i % kWorkingSet) * kMiB, h->bytes().data(), h->bytes().size());
    benchmark::ClobberMemory();
    ++i;
  }
  state.SetBytesProcessed(state.iterations() * kMiB);
}
BENCHMARK(BM_HostGet1MiBCopyOut)->UseRealTime();

// Get alone: a zero-copy handle into the host arena.
void BM_HostGet1MiBZeroCopy(benchmark::State& state) {
  auto& src = Source();
  auto tm = HostManager(72 * kMiB);
  for (uint64_t i = 0; i < 64; ++i) {
    KVTIER_CHECK_OK(tm->Put(0, Key(i), absl::MakeConstSpan(src.data() + i * kMiB, kMiB), ChunkMeta{}));
  }
  uint64_t i = 0;
  for (auto _ : state) {
    auto h = tm->Get(0, Key(i % 64));
    benchmark::DoNotOptimize(h->bytes().data());
    ++i;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HostGet1MiBZeroCopy);

class DiskFixture {
 public:
  DiskFixture() {
    char tmpl[] = "/tmp/kvtier-storage-bench-XXXXXX";
    dir_ = mkdtemp(tmpl);
    TierManagerOptions o;
    o.host.capacity_bytes = 0;
    o.disk.path = dir_ + "/db";
    o.disk.capacity_bytes = 8ull << 30;
    o.background_threads = 0;
    tm_ = TierManager::Create(o).value();
  }
  ~DiskFixture() {
    tm_.reset();
    std::filesystem::remove_all(dir_);
  }
  TierManager* tm() { return tm_.get(); }

 private:
  std::string dir_;
  std::unique_ptr<TierManager> tm_;
};

void BM_DiskWrite1MiB(benchmark::State& state) {
  auto& src = Source();
  DiskFixture disk;
  uint64_t i = 0;
  for (auto _ : state) {
    absl::Status s = disk.tm()->Put(
        0, Key(i), absl::MakeConstSpan(src.data() + (i % kWorkingSet) * kMiB, kMiB), ChunkMeta{});
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    ++i;
  }
  state.SetBytesProcessed(state.iterations() * kMiB);
}
BENCHMARK(BM_DiskWrite1MiB)->UseRealTime()->Iterations(768);

void BM_DiskRead1MiB(benchmark::State& state) {
  auto& src = Source();
  DiskFixture disk;
  constexpr uint64_t kChunks = 512;
  for (uint64_t i = 0; i < kChunks; ++i) {
    KVTIER_CHECK_OK(disk.tm()->Put(
        0, Key(i), absl::MakeConstSpan(src.data() + (i % kWorkingSet) * kMiB, kMiB), ChunkMeta{}));
  }
  uint64_t i = 0;
  for (auto _ : state) {
    auto h = disk.tm()->Get(0, Key((i * 37) % kChunks));
    if (!h.ok()) state.SkipWithError(h.status().ToString().c_str());
    benchmark::DoNotOptimize(h->bytes().data());
    ++i;
  }
  state.SetBytesProcessed(state.iterations() * kMiB);
}
BENCHMARK(BM_DiskRead1MiB)->UseRealTime()->Iterations(1024);

}  // namespace
}  // namespace kvtier::storage

BENCHMARK_MAIN();
