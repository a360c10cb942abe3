#include "kvtier/common/chunk_key.h"

#include <cstdio>
#include <numeric>
#include <string>

#include <gtest/gtest.h>

namespace kvtier {
namespace {

// Expected values computed independently with Python's hashlib from the definition in
// docs/FORMAT.md ("Chunk keys").
TEST(ChunkKeyTest, KnownAnswerVectors) {
  const std::vector<uint32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  auto keys = ComputeChunkKeys(tokens, "", 4);
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys[0].ToHex(), "1710fa11a0801f662a386faa9d32b3df7e42df5ea02ac3634cbe3c18f576ec01");
  EXPECT_EQ(keys[1].ToHex(), "e05ce7880f4c06d0923966524394a3159c38ad6fedcaaf5ad16a8c1fbf5bafee");
  auto salted = ComputeChunkKeys(tokens, "tenant-a", 4);
  EXPECT_EQ(salted[0].ToHex(), "d6286c36ab13f9e897c46e062a7fe02bc149bc4b27202f2871845b6a6ecb2763");
}

TEST(ChunkKeyTest, ChainMatchesStepwise) {
  std::vector<uint32_t> tokens(1000);
  std::iota(tokens.begin(), tokens.end(), 7);
  auto keys = ComputeChunkKeys(tokens, "s", 256);
  ASSERT_EQ(keys.size(), 3u);  // 1000 = 3 * 256 + 232: the partial tail gets no key by default.
  ChunkKey prev;
  for (size_t i = 0; i < keys.size(); ++i) {
    prev = NextChunkKey(prev, "s", absl::MakeConstSpan(tokens).subspan(i * 256, 256));
    EXPECT_EQ(keys[i], prev);
  }
  auto with_tail = ComputeChunkKeys(tokens, "s", 256, /*include_partial_tail=*/true);
  ASSERT_EQ(with_tail.size(), 4u);
  EXPECT_EQ(with_tail[3], NextChunkKey(keys[2], "s", absl::MakeConstSpan(tokens).subspan(768)));
}

TEST(ChunkKeyTest, PrefixSharingAndDivergence) {
  std::vector<uint32_t> a(512), b(512);
  std::iota(a.begin(), a.end(), 0);
  b = a;
  b[300] = 99999;  // Differs inside chunk 1 only.
  auto ka = ComputeChunkKeys(a, "", 128);
  auto kb = ComputeChunkKeys(b, "", 128);
  EXPECT_EQ(ka[0], kb[0]);
  EXPECT_EQ(ka[1], kb[1]);
  EXPECT_NE(ka[2], kb[2]);
  EXPECT_NE(ka[3], kb[3]);  // The chain carries the divergence forward.
}

TEST(ChunkKeyTest, SaltSeparatesNamespaces) {
  std::vector<uint32_t> t(64, 5);
  EXPECT_NE(ComputeChunkKeys(t, "a", 64)[0], ComputeChunkKeys(t, "b", 64)[0]);
  // Length-prefixing keeps ("ab", tokens) and ("a", 'b'-prefixed tokens) apart.
  EXPECT_NE(ComputeChunkKeys(t, "ab", 64)[0], ComputeChunkKeys(t, "a", 64)[0]);
}

TEST(ChunkKeyTest, HexAndBytesRoundTrip) {
  auto k = ComputeChunkKeys(std::vector<uint32_t>{1, 2}, "", 2)[0];
  auto parsed = ChunkKey::FromHex(k.ToHex());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, k);
  auto from_bytes = ChunkKey::FromBytes(k.view());
  ASSERT_TRUE(from_bytes.ok());
  EXPECT_EQ(*from_bytes, k);
  EXPECT_FALSE(ChunkKey::FromHex("abc").ok());
  EXPECT_FALSE(ChunkKey::FromHex(std::string(64, 'g')).ok());
  EXPECT_FALSE(ChunkKey::FromBytes("short").ok());
}

TEST(ChunkKeyTest, ZeroChunkSizeYieldsNoKeys) {
  EXPECT_TRUE(ComputeChunkKeys(std::vector<uint32_t>{1, 2, 3}, "", 0).empty());
}

// Runs a separate process (a fresh address space, fresh hash seeds) and compares its keys with
// this process's: keys must not depend on anything but their inputs.
TEST(ChunkKeyTest, DeterministicAcrossProcesses) {
  std::string cmd = std::string(KVTIER_CHUNK_KEY_TOOL) + " 256 salt-x 3000";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[256];
  while (fgets(buf, sizeof(buf), pipe)) out += buf;
  ASSERT_EQ(pclose(pipe), 0);
  std::vector<uint32_t> tokens(3000);
  for (uint32_t i = 0; i < tokens.size(); ++i) tokens[i] = i * 2654435761u;
  std::string expected;
  for (const auto& k : ComputeChunkKeys(tokens, "salt-x", 256)) expected += k.ToHex() + "\n";
  EXPECT_EQ(out, expected);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 11);
}

}  // namespace
}  // namespace kvtier
