// Disk-tier faults: corruption is a miss plus a counted event (never wrong bytes), a full disk
// fails disk puts with ResourceExhausted while memory tiers keep serving, I/O errors are misses,
// and a crashed process loses no acknowledged chunk.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "kvtier/storage/disk_io.h"
#include "kvtier/storage/tier_manager.h"
#include "test_util.h"

namespace kvtier::storage {
namespace {

using testing::TempDir;
using testing::TestKey;
using testing::TestKeys;
using testing::TestPayload;

constexpr NamespaceId kNs = 3;
constexpr size_t kSize = 64 << 10;

ChunkMeta Meta(uint64_t i) { return ChunkMeta{1, 256, 2 * kSize + i}; }

TierManagerOptions DiskOnly(const TempDir& dir, std::shared_ptr<DiskIo> io = nullptr) {
  TierManagerOptions o;
  o.host.capacity_bytes = 0;
  o.disk.path = dir.Sub("db");
  o.disk.capacity_bytes = 256 << 20;
  o.disk.write_buffer_bytes = 1 << 20;
  o.disk.io = std::move(io);
  o.background_threads = 0;
  return o;
}

void PutAll(TierManager* tm, uint64_t n) {
  for (uint64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(tm->Put(kNs, TestKey(i), TestPayload(i, kSize), Meta(i)).ok()) << i;
  }
}

// Every Get is a miss or exactly the bytes that were put. Returns the number of hits.
int CheckNeverWrong(TierManager* tm, uint64_t n) {
  int hits = 0;
  for (uint64_t i = 0; i < n; ++i) {
    auto h = tm->Get(kNs, TestKey(i));
    if (!h.ok()) {
      EXPECT_EQ(h.status().code(), absl::StatusCode::kNotFound) << h.status();
      continue;
    }
    ++hits;
    auto expected = TestPayload(i, kSize);
    EXPECT_TRUE(std::equal(h->bytes().begin(), h->bytes().end(), expected.begin(), expected.end()))
        << "wrong bytes returned for chunk " << i;
  }
  return hits;
}

std::vector<std::filesystem::path> FilesWithSuffix(const std::string& dir, const std::string& sfx) {
  std::vector<std::filesystem::path> out;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.size() >= sfx.size() && name.compare(name.size() - sfx.size(), sfx.size(), sfx) == 0) {
      out.push_back(entry.path());
    }
  }
  return out;
}

void FlipByte(const std::filesystem::path& file, uint64_t offset) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good()) << file;
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(~c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

// Rule 4: flip bytes in the RocksDB blob files; restart; the damaged chunk is a miss and counted.
TEST(DiskFaultsTest, FlippedBytesInBlobFilesAreMissesAndCounted) {
  TempDir dir;
  constexpr uint64_t kN = 8;
  {
    auto tm = TierManager::Create(DiskOnly(dir)).value();
    PutAll(tm.get(), kN);
  }  // Clean close: memtables flushed, values in blob files.
  auto blobs = FilesWithSuffix(dir.Sub("db"), ".blob");
  ASSERT_FALSE(blobs.empty()) << "values did not go to blob files";
  uint64_t total = 0;
  for (const auto& b : blobs) total += std::filesystem::file_size(b);
  ASSERT_GE(total, kN * kSize);
  // One byte in the middle of the first blob file: inside some chunk's payload.
  FlipByte(blobs[0], std::filesystem::file_size(blobs[0]) / 2);

  auto tm = TierManager::Create(DiskOnly(dir)).value();
  EXPECT_EQ(tm->Stats().indexed_chunks, kN);  // Metadata is intact; the payload is not.
  const int hits = CheckNeverWrong(tm.get(), kN);
  EXPECT_EQ(hits, static_cast<int>(kN) - 1);
  auto s = tm->Stats();
  EXPECT_EQ(s.checksum_failures, 1u);
  EXPECT_EQ(s.get_misses, 1u);
  EXPECT_EQ(s.indexed_chunks, kN - 1);  // The corrupt copy was dropped.
  EXPECT_EQ(CheckNeverWrong(tm.get(), kN), static_cast<int>(kN) - 1);
}

TEST(DiskFaultsTest, BytesFlippedOnReadAreMissesAndCounted) {
  TempDir dir;
  auto io = std::make_shared<FaultInjectingDiskIo>();
  {
    auto tm = TierManager::Create(DiskOnly(dir, io)).value();
    PutAll(tm.get(), 4);
  }
  auto tm = TierManager::Create(DiskOnly(dir, io)).value();
  io->SetFlipReadBytes(true, ".blob");
  EXPECT_EQ(CheckNeverWrong(tm.get(), 4), 0);
  EXPECT_GT(io->injected_faults(), 0u);
  auto s = tm->Stats();
  EXPECT_EQ(s.checksum_failures, 4u);
  EXPECT_EQ(s.get_misses, 4u);
}

TEST(DiskFaultsTest, ReadErrorsAreMisses) {
  TempDir dir;
  auto io = std::make_shared<FaultInjectingDiskIo>();
  {
    auto tm = TierManager::Create(DiskOnly(dir, io)).value();
    PutAll(tm.get(), 2);
  }
  auto tm = TierManager::Create(DiskOnly(dir, io)).value();
  io->SetReadErrors(true);
  EXPECT_EQ(CheckNeverWrong(tm.get(), 2), 0);
  auto s = tm->Stats();
  EXPECT_EQ(s.get_misses, 2u);
  EXPECT_EQ(s.checksum_failures + s.io_errors, 2u);
}

// Rule 7: a full disk fails disk puts with ResourceExhausted; memory keeps serving; recovery
// after space returns.
TEST(DiskFaultsTest, FullDiskFailsDiskPutsWhileMemoryServes) {
  TempDir dir;
  auto io = std::make_shared<FaultInjectingDiskIo>();
  auto o = DiskOnly(dir, io);
  o.host.capacity_bytes = 8 * kSize;
  o.host.pin_memory = false;
  o.policy = "lru";
  auto tm = TierManager::Create(o).value();
  PutAll(tm.get(), 12);  // 8 in host, 4 demoted to disk.
  EXPECT_EQ(tm->Stats().tiers[TierIndex(TierKind::kDisk)].chunks, 4u);

  io->SetDiskFull(true);
  // Memory puts keep working; victims that cannot be demoted are dropped (a cache may lose data).
  for (uint64_t i = 100; i < 120; ++i) {
    ASSERT_TRUE(tm->Put(kNs, TestKey(i), TestPayload(i, kSize), Meta(i)).ok());
  }
  EXPECT_GT(tm->Stats().disk_full_events, 0u);
  for (uint64_t i = 112; i < 120; ++i) EXPECT_TRUE(tm->Get(kNs, TestKey(i)).ok());
  // Chunks already on disk are still readable.
  int disk_hits = 0;
  for (uint64_t i = 0; i < 12; ++i) disk_hits += tm->Get(kNs, TestKey(i)).ok() ? 1 : 0;
  EXPECT_GE(disk_hits, 1);

  // A disk-only manager on the same full disk: the put fails with a clear status.
  TempDir dir2;
  auto io2 = std::make_shared<FaultInjectingDiskIo>();
  auto disk_only = TierManager::Create(DiskOnly(dir2, io2)).value();
  ASSERT_TRUE(disk_only->Put(kNs, TestKey(1), TestPayload(1, kSize), Meta(1)).ok());
  io2->SetDiskFull(true);
  absl::Status full = disk_only->Put(kNs, TestKey(2), TestPayload(2, kSize), Meta(2));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_EQ(disk_only->Stats().disk_full_events, 1u);
  EXPECT_TRUE(disk_only->Get(kNs, TestKey(1)).ok());
  EXPECT_FALSE(disk_only->Contains(kNs, TestKey(2)));
  // Space returns: puts work again.
  io2->SetDiskFull(false);
  absl::Status again = disk_only->Put(kNs, TestKey(2), TestPayload(2, kSize), Meta(2));
  EXPECT_TRUE(again.ok()) << again;
  EXPECT_EQ(CheckNeverWrong(disk_only.get(), 3), 2);
}

TEST(DiskFaultsTest, WriteErrorsAreUnavailable) {
  TempDir dir;
  auto io = std::make_shared<FaultInjectingDiskIo>();
  auto tm = TierManager::Create(DiskOnly(dir, io)).value();
  io->SetWriteErrors(true);
  EXPECT_EQ(tm->Put(kNs, TestKey(1), TestPayload(1, kSize), Meta(1)).code(),
            absl::StatusCode::kUnavailable);
  io->SetWriteErrors(false);
  absl::Status again = tm->Put(kNs, TestKey(1), TestPayload(1, kSize), Meta(1));
  EXPECT_TRUE(again.ok()) << again;
  EXPECT_EQ(CheckNeverWrong(tm.get(), 2), 1);
}

// Rule 2: a process killed right after its puts were acknowledged loses none of them (WAL on, no
// sync: the data is in the OS page cache). The writer is this test binary re-executed (a fresh
// process: fork() alone would inherit RocksDB's global thread pools), running the disabled
// CrashWriterChild below, which exits without closing anything, like kill -9 after the acks.
constexpr uint64_t kCrashChunks = 20;
constexpr char kCrashDirVar[] = "KVTIER_TEST_CRASH_DIR";

TEST(DiskFaultsTest, DISABLED_CrashWriterChild) {
  const char* dir = getenv(kCrashDirVar);
  if (dir == nullptr) GTEST_SKIP() << "only run as the child of CrashAfterAcknowledgeLosesNothing";
  TierManagerOptions o;
  o.host.capacity_bytes = 0;
  o.disk.path = std::string(dir) + "/db";
  o.disk.write_buffer_bytes = 1 << 20;
  o.background_threads = 0;
  auto tm = TierManager::Create(o);
  if (!tm.ok()) _exit(2);
  for (uint64_t i = 0; i < kCrashChunks; ++i) {
    if (!(*tm)->Put(kNs, TestKey(i), TestPayload(i, kSize), Meta(i)).ok()) _exit(3);
  }
  _exit(0);  // No destructor, no flush, no close.
}

TEST(DiskFaultsTest, CrashAfterAcknowledgeLosesNothing) {
  TempDir dir;
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setenv(kCrashDirVar, dir.path().c_str(), 1);
    execl("/proc/self/exe", "storage_disk_faults_test", "--gtest_also_run_disabled_tests",
          "--gtest_filter=DiskFaultsTest.DISABLED_CrashWriterChild", static_cast<char*>(nullptr));
    _exit(4);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  auto tm = TierManager::Create(DiskOnly(dir)).value();
  EXPECT_EQ(tm->Stats().indexed_chunks, kCrashChunks);
  EXPECT_EQ(CheckNeverWrong(tm.get(), kCrashChunks), static_cast<int>(kCrashChunks));
}

}  // namespace
}  // namespace kvtier::storage
