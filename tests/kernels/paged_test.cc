// CPU tests of the paged-layout helpers: exact bytes against an independent reference.
#include "kvtier/kernels/paged.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "paged_test_util.h"
#include "kvtier/kernels/codec.h"
#include "kvtier/kernels/device.h"

namespace kvtier::kernels {
namespace {

using testing::PagedShape;
using testing::RandomBlockTable;
using testing::RandomBytes;
using testing::ReferenceGather;
using testing::ReferenceScatter;

struct HostCache {
  PagedShape shape;
  std::vector<std::vector<uint8_t>> layers;

  HostCache(const PagedShape& s, uint32_t seed) : shape(s) {
    for (uint32_t l = 0; l < s.layout.num_layers; ++l) {
      layers.push_back(RandomBytes(s.LayerBytes(), seed + l));
    }
  }
  PagedKvCache View() {
    PagedKvCache c;
    for (auto& l : layers) c.layer_base.push_back(l.data());
    c.layout = shape.layout;
    c.num_blocks = shape.num_blocks;
    c.block_size = shape.block_size;
    return c;
  }
};

struct Case {
  const char* name;
  PagedShape shape;
  uint32_t first_token;
  uint32_t num_tokens;
  uint32_t tokens_per_chunk;
};

std::vector<Case> Cases() {
  return {
      {"gqa_fp16_aligned", {KvLayout::Mha(3, 2, 8, 64), 40, 16}, 0, 256, 64},
      {"gqa_fp16_unaligned_partial", {KvLayout::Mha(2, 4, 4, 32), 30, 16}, 5, 200, 48},
      {"mha_bf16_odd_dim", {KvLayout::Mha(2, 3, 3, 65, DType::kBFloat16), 12, 8}, 3, 70, 16},
      {"fp32_one_chunk", {KvLayout::Mha(1, 1, 1, 16, DType::kFloat32), 10, 4}, 7, 9, 100},
      {"mla", {KvLayout::Mla(4, 64, 8), 20, 16}, 16, 150, 32},
  };
}

TEST(PagedTest, GatherMatchesReference) {
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    HostCache cache(c.shape, 11);
    const auto ids = RandomBlockTable(c.shape.num_blocks,
                                      (c.first_token + c.num_tokens + c.shape.block_size - 1) /
                                          c.shape.block_size,
                                      7);
    std::vector<uint8_t> out(c.shape.layout.ChunkBytes(c.num_tokens), 0xA5);
    ASSERT_TRUE(GatherChunks(cache.View(), {ids, c.first_token, c.num_tokens},
                             c.tokens_per_chunk, out.data())
                    .ok());
    EXPECT_EQ(out, ReferenceGather(c.shape, cache.layers, ids, c.first_token, c.num_tokens,
                                   c.tokens_per_chunk));
  }
}

TEST(PagedTest, ScatterWritesOnlyTheRun) {
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    HostCache cache(c.shape, 21);
    auto expected = cache.layers;
    const auto ids = RandomBlockTable(c.shape.num_blocks,
                                      (c.first_token + c.num_tokens + c.shape.block_size - 1) /
                                          c.shape.block_size,
                                      9);
    const auto chunks = RandomBytes(c.shape.layout.ChunkBytes(c.num_tokens), 33);
    ASSERT_TRUE(ScatterChunks(chunks.data(), c.tokens_per_chunk, cache.View(),
                              {ids, c.first_token, c.num_tokens})
                    .ok());
    ReferenceScatter(c.shape, chunks, &expected, ids, c.first_token, c.num_tokens,
                     c.tokens_per_chunk);
    EXPECT_EQ(cache.layers, expected);  // includes every slot outside the run, unchanged
    // And the run reads back as the same chunks.
    std::vector<uint8_t> back(chunks.size());
    ASSERT_TRUE(GatherChunks(cache.View(), {ids, c.first_token, c.num_tokens},
                             c.tokens_per_chunk, back.data())
                    .ok());
    EXPECT_EQ(back, chunks);
  }
}

TEST(PagedTest, MovesBetweenCachesWithDifferentBlockTables) {
  const PagedShape s{KvLayout::Mha(2, 2, 4, 16), 32, 16};
  HostCache a(s, 1), b(s, 2);
  const auto ids_a = RandomBlockTable(s.num_blocks, 8, 3);
  const auto ids_b = RandomBlockTable(s.num_blocks, 8, 4);
  std::vector<uint8_t> chunks(s.layout.ChunkBytes(128));
  ASSERT_TRUE(GatherChunks(a.View(), {ids_a, 0, 128}, 64, chunks.data()).ok());
  ASSERT_TRUE(ScatterChunks(chunks.data(), 64, b.View(), {ids_b, 0, 128}).ok());
  for (uint32_t i = 0; i < 8; ++i) {
    for (uint32_t l = 0; l < 2; ++l) {
      for (uint32_t p = 0; p < 2; ++p) {
        const size_t n = s.PagedOffset(0, 1, 0, 0);  // one block of one plane
        EXPECT_EQ(0, std::memcmp(&a.layers[l][s.PagedOffset(p, ids_a[i], 0, 0)],
                                 &b.layers[l][s.PagedOffset(p, ids_b[i], 0, 0)], n))
            << "block " << i << " layer " << l << " plane " << p;
      }
    }
  }
}

TEST(PagedTest, RejectsBadInput) {
  const PagedShape s{KvLayout::Mha(2, 2, 2, 16), 8, 4};
  HostCache cache(s, 5);
  std::vector<uint8_t> out(s.layout.ChunkBytes(16));
  std::vector<int32_t> ids = {0, 1, 2, 3};
  auto view = cache.View();
  EXPECT_TRUE(GatherChunks(view, {ids, 0, 16}, 16, out.data()).ok());

  auto code = [&](const PagedKvCache& c, std::vector<int32_t> table, uint32_t first,
                  uint32_t n, uint32_t tpc, void* buf) {
    return GatherChunks(c, {table, first, n}, tpc, buf).code();
  };
  EXPECT_EQ(code(view, {0, 1, 2}, 0, 16, 16, out.data()), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(view, {0, 1, 8, 3}, 0, 16, 16, out.data()), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(view, {0, -1, 2, 3}, 0, 16, 16, out.data()), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(view, ids, 0, 0, 16, out.data()), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(view, ids, 0, 16, 0, out.data()), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(view, ids, 0, 16, 16, nullptr), absl::StatusCode::kInvalidArgument);
  // A bad id outside the run is not looked at: the run [4, 8) uses only block_ids[1].
  EXPECT_EQ(code(view, {-7, 1}, 4, 4, 4, out.data()), absl::StatusCode::kOk);

  auto missing_layer = view;
  missing_layer.layer_base.pop_back();
  EXPECT_EQ(code(missing_layer, ids, 0, 16, 16, out.data()), absl::StatusCode::kInvalidArgument);
  auto null_layer = view;
  null_layer.layer_base[1] = nullptr;
  EXPECT_EQ(code(null_layer, ids, 0, 16, 16, out.data()), absl::StatusCode::kInvalidArgument);
  auto no_blocks = view;
  no_blocks.num_blocks = 0;
  EXPECT_EQ(code(no_blocks, ids, 0, 16, 16, out.data()), absl::StatusCode::kInvalidArgument);
  auto bad_layout = view;
  bad_layout.layout.head_dim = 0;
  EXPECT_EQ(code(bad_layout, ids, 0, 16, 16, out.data()), absl::StatusCode::kInvalidArgument);

  if (!CudaBuilt()) {
    auto device = view;
    device.space = MemorySpace::kDevice;
    EXPECT_EQ(code(device, ids, 0, 16, 16, out.data()), absl::StatusCode::kUnimplemented);
  }
}

TEST(PagedTest, GatherToHostFromAHostCacheIsGather) {
  const PagedShape s{KvLayout::Mha(2, 2, 2, 16), 8, 4};
  HostCache cache(s, 6);
  const std::vector<int32_t> ids = {5, 2, 7};
  std::vector<uint8_t> a(s.layout.ChunkBytes(10)), b(a.size(), 0xEE);
  ASSERT_TRUE(GatherChunks(cache.View(), {ids, 1, 10}, 4, a.data()).ok());
  ASSERT_TRUE(GatherChunksToHost(cache.View(), {ids, 1, 10}, 4, b.data()).ok());
  EXPECT_EQ(a, b);
  if (!CudaBuilt()) {
    auto device = cache.View();
    device.space = MemorySpace::kDevice;
    EXPECT_EQ(GatherChunksToHost(device, {ids, 1, 10}, 4, b.data()).code(),
              absl::StatusCode::kUnimplemented);
  }
}

TEST(PagedTest, StridesDescribeTheVllmLayout) {
  const PagedShape s{KvLayout::Mha(1, 8, 32, 128), 100, 16};
  HostCache cache(s, 0);
  const auto v = cache.View();
  EXPECT_EQ(v.StrideHead(), 128 * 2);
  EXPECT_EQ(v.StrideToken(), 8 * 128 * 2);
  EXPECT_EQ(v.StrideBlock(), 16 * 8 * 128 * 2);
  EXPECT_EQ(v.StrideKv(), 100 * 16 * 8 * 128 * 2);
  EXPECT_EQ(v.LayerBytes(), size_t{2} * 100 * 16 * 8 * 128 * 2);
}

// The DecodeTarget formula (kernels/codec.h) must land every chunk element on its paged slot.
TEST(PagedTest, DecodeTargetAddressesThePagedSlots) {
  for (const PagedShape& s : {PagedShape{KvLayout::Mha(2, 3, 6, 32), 20, 16},
                              PagedShape{KvLayout::Mla(2, 32, 16), 20, 16}}) {
    HostCache cache(s, 1);
    const auto ids = RandomBlockTable(s.num_blocks, 12, 2);
    const uint32_t first = 32, n = 100;
    auto target_or = PagedDecodeTarget(cache.View(), {ids, first, n});
    ASSERT_TRUE(target_or.ok()) << target_or.status();
    const DecodeTarget& t = *target_or;
    ASSERT_EQ(t.block_size, s.block_size);
    for (uint32_t l = 0; l < s.layout.num_layers; ++l) {
      for (uint32_t p = 0; p < s.planes(); ++p) {
        for (uint32_t h = 0; h < s.heads(); ++h) {
          for (uint32_t tok = 0; tok < n; ++tok) {
            const char* got = static_cast<const char*>(t.layer_base[l]) + p * t.stride_kv +
                              h * t.stride_head + t.block_table[tok / t.block_size] * t.stride_block +
                              (tok % t.block_size) * t.stride_token;
            const uint32_t seq = first + tok;
            const uint8_t* want = &cache.layers[l][s.PagedOffset(
                p, ids[seq / s.block_size], seq % s.block_size, h)];
            ASSERT_EQ(static_cast<const void*>(got), static_cast<const void*>(want));
          }
        }
      }
    }
  }
}

// Decode straight into pages: a raw payload decoded through PagedDecodeTarget gathers back to the
// exact chunk, and every slot outside the chunk is untouched.
TEST(PagedTest, PayloadDecodesStraightIntoPages) {
  for (const PagedShape& s : {PagedShape{KvLayout::Mha(2, 2, 4, 32), 24, 16},
                              PagedShape{KvLayout::Mla(2, 32, 16), 24, 16}}) {
    HostCache cache(s, 3);
    const auto before = cache.layers;
    const auto ids = RandomBlockTable(s.num_blocks, 6, 5);
    const uint32_t first = 32, n = 64;
    const auto chunk = RandomBytes(s.layout.ChunkBytes(n), 8);
    ChunkInput in;
    in.data = chunk.data();
    in.layout = s.layout;
    in.num_tokens = n;
    std::vector<uint8_t> payload;
    ASSERT_TRUE(Encode(CodecParams{}, in, &payload).ok());  // raw
    auto target = PagedDecodeTarget(cache.View(), {ids, first, n});
    ASSERT_TRUE(target.ok()) << target.status();
    const absl::Status st = Decode(payload, *target);
    ASSERT_TRUE(st.ok()) << st;
    std::vector<uint8_t> back(chunk.size());
    ASSERT_TRUE(GatherChunks(cache.View(), {ids, first, n}, n, back.data()).ok());
    EXPECT_EQ(back, chunk);
    auto expected = before;
    ReferenceScatter(s, chunk, &expected, ids, first, n, n);
    EXPECT_EQ(cache.layers, expected);
  }
}

TEST(PagedTest, DecodeTargetRejectsUnsafeRuns) {
  const PagedShape s{KvLayout::Mha(1, 1, 1, 16), 4, 16};
  HostCache cache(s, 1);
  std::vector<int32_t> ids = {0, 1, 2};
  EXPECT_TRUE(PagedDecodeTarget(cache.View(), {ids, 16, 32}).ok());
  EXPECT_EQ(PagedDecodeTarget(cache.View(), {ids, 8, 16}).status().code(),
            absl::StatusCode::kInvalidArgument);  // not block aligned
  EXPECT_EQ(PagedDecodeTarget(cache.View(), {ids, 16, 48}).status().code(),
            absl::StatusCode::kInvalidArgument);  // table too short
  std::vector<int32_t> bad = {0, 4};
  EXPECT_EQ(PagedDecodeTarget(cache.View(), {bad, 0, 32}).status().code(),
            absl::StatusCode::kInvalidArgument);  // block 4 of 4
}

}  // namespace
}  // namespace kvtier::kernels
