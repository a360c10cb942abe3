// Decoding into strided and paged DecodeTargets gives, element for element, what decoding into
// the contiguous canonical layout gives, and writes nothing outside the addressed elements.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "codec_test_util.h"
#include "kvtier/kernels/codec.h"

namespace kvtier::kernels {
namespace {

using testing::CanonicalOffset;

std::vector<uint8_t> EncodeChunk(const char* codec, const KvLayout& l, uint32_t T) {
  const auto in = testing::RandomChunk(l, T, 77);
  ChunkInput ci;
  ci.data = in.data();
  ci.layout = l;
  ci.num_tokens = T;
  ci.ends_sequence = true;
  std::vector<uint8_t> payload;
  EXPECT_TRUE(Encode(*CodecParams::Parse(codec), ci, &payload).ok());
  return payload;
}

// An engine-like paged buffer per layer: [num_blocks][K|V][block_size][kv_head][dim] with a
// padded dim, blocks assigned in a scrambled order.
struct PagedBuffer {
  std::vector<std::vector<uint8_t>> layers;
  std::vector<int32_t> table;
  DecodeTarget target;
};

PagedBuffer MakePaged(const KvLayout& l, uint32_t T, uint32_t block_size, uint32_t pad_dim) {
  PagedBuffer pb;
  const bool mha = l.kind == LayoutKind::kMha;
  const int64_t es = DTypeSize(l.dtype);
  const int64_t V = l.VectorDim() + pad_dim;
  const int64_t heads = mha ? l.num_kv_heads : 1;
  const int64_t kvs = mha ? 2 : 1;
  const uint32_t blocks = (T + block_size - 1) / block_size;
  const uint32_t num_blocks = blocks * 2 + 1;
  for (uint32_t i = 0; i < blocks; ++i) pb.table.push_back(static_cast<int32_t>((i * 7 + 3) % num_blocks));
  std::vector<bool> used(num_blocks);
  for (int32_t b : pb.table) {
    EXPECT_FALSE(used[b]);
    used[b] = true;
  }
  const int64_t stride_head = V * es;
  const int64_t stride_token = heads * stride_head;
  const int64_t stride_kv = block_size * stride_token;
  const int64_t stride_block = kvs * stride_kv;
  pb.layers.assign(l.num_layers, std::vector<uint8_t>(num_blocks * stride_block, 0xA5));
  pb.target.dtype = l.dtype;
  for (auto& layer : pb.layers) pb.target.layer_base.push_back(layer.data());
  pb.target.stride_kv = mha ? stride_kv : 0;
  pb.target.stride_head = mha ? stride_head : 0;
  pb.target.stride_token = stride_token;
  pb.target.block_table = pb.table.data();
  pb.target.block_size = block_size;
  pb.target.stride_block = stride_block;
  return pb;
}

void CheckPaged(const char* codec, const KvLayout& l, uint32_t T, uint32_t block_size,
                uint32_t pad_dim) {
  const auto payload = EncodeChunk(codec, l, T);
  std::vector<uint8_t> ref(l.ChunkBytes(T), 0xA5);
  ASSERT_TRUE(Decode(payload, DecodeTarget::Contiguous(ref.data(), l, T)).ok());
  PagedBuffer pb = MakePaged(l, T, block_size, pad_dim);
  const absl::Status s = Decode(payload, pb.target);
  ASSERT_TRUE(s.ok()) << s;
  const bool mha = l.kind == LayoutKind::kMha;
  const uint32_t heads = mha ? l.num_kv_heads : 1, kvs = mha ? 2 : 1, V = l.VectorDim();
  const size_t es = DTypeSize(l.dtype);
  size_t written = 0;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    for (uint32_t kv = 0; kv < kvs; ++kv) {
      for (uint32_t h = 0; h < heads; ++h) {
        for (uint32_t t = 0; t < T; ++t) {
          const uint8_t* dst = static_cast<uint8_t*>(pb.target.layer_base[layer]) +
                               kv * pb.target.stride_kv + h * pb.target.stride_head +
                               pb.table[t / block_size] * pb.target.stride_block +
                               (t % block_size) * pb.target.stride_token;
          ASSERT_EQ(std::memcmp(dst, &ref[CanonicalOffset(l, T, layer, kv, h, t, 0)], V * es), 0)
              << codec << " layer " << layer << " kv " << kv << " head " << h << " token " << t;
          written += V * es;
        }
      }
    }
  }
  // Nothing else was touched: every byte not addressed is still poison.
  size_t poison = 0;
  for (const auto& layer : pb.layers) {
    for (uint8_t b : layer) poison += b == 0xA5;
  }
  size_t total = 0;
  for (const auto& layer : pb.layers) total += layer.size();
  size_t written_poison = 0;  // decoded bytes that happen to equal 0xA5
  for (uint8_t b : ref) written_poison += b == 0xA5;
  EXPECT_EQ(poison, total - written + written_poison) << codec;
}

TEST(CodecTargetTest, PagedAndStridedTargets) {
  for (const char* codec : {"raw", "fp8", "kivi:b=2,g=32,tail=5", "kivi:b=4,g=64"}) {
    CheckPaged(codec, KvLayout::Mha(2, 2, 4, 64), 70, 16, 0);
    CheckPaged(codec, KvLayout::Mha(1, 3, 3, 128, DType::kBFloat16), 64, 32, 8);
    CheckPaged(codec, KvLayout::Mla(2, 128, 64), 40, 8, 4);
  }
}

// A strided (non-paged) target: per-layer buffers with heads interleaved per token.
TEST(CodecTargetTest, StridedTokenMajor) {
  const KvLayout l = KvLayout::Mha(2, 2, 2, 64);
  const uint32_t T = 48;
  for (const char* codec : {"raw", "fp8", "kivi:b=2,g=32"}) {
    const auto payload = EncodeChunk(codec, l, T);
    std::vector<uint8_t> ref(l.ChunkBytes(T));
    ASSERT_TRUE(Decode(payload, DecodeTarget::Contiguous(ref.data(), l, T)).ok());
    // Layout [layer][token][K|V][head][dim].
    const int64_t es = 2, D = 64;
    std::vector<uint8_t> buf(l.ChunkBytes(T), 0xA5);
    DecodeTarget t;
    for (uint32_t layer = 0; layer < 2; ++layer) {
      t.layer_base.push_back(buf.data() + layer * T * 2 * 2 * D * es);
    }
    t.stride_head = D * es;
    t.stride_kv = 2 * D * es;
    t.stride_token = 2 * 2 * D * es;
    ASSERT_TRUE(Decode(payload, t).ok());
    for (uint32_t layer = 0; layer < 2; ++layer) {
      for (uint32_t kv = 0; kv < 2; ++kv) {
        for (uint32_t h = 0; h < 2; ++h) {
          for (uint32_t tok = 0; tok < T; ++tok) {
            const uint8_t* dst = static_cast<uint8_t*>(t.layer_base[layer]) + kv * t.stride_kv +
                                 h * t.stride_head + tok * t.stride_token;
            ASSERT_EQ(std::memcmp(dst, &ref[CanonicalOffset(l, T, layer, kv, h, tok, 0)], D * es), 0)
                << codec;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvtier::kernels
