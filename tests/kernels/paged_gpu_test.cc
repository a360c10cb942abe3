// GPU tests of the paged-layout helpers: the CUDA kernels must give exactly the CPU reference's
// bytes, on seeded random inputs, with every output buffer poisoned first.
#include <cuda_runtime_api.h>

#include <memory>

#include <gtest/gtest.h>

#include "paged_test_util.h"
#include "kvtier/kernels/codec.h"
#include "kvtier/kernels/paged.h"

namespace kvtier::kernels {
namespace {

using testing::PagedShape;
using testing::RandomBlockTable;
using testing::RandomBytes;

#define ASSERT_CUDA(expr) ASSERT_EQ((expr), cudaSuccess) << #expr

class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes, size_t offset = 0) : offset_(offset) {
    EXPECT_EQ(cudaMalloc(&base_, bytes + offset), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(base_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return static_cast<char*>(base_) + offset_; }

 private:
  void* base_ = nullptr;
  size_t offset_;
};

struct Case {
  const char* name;
  PagedShape shape;
  uint32_t first_token;
  uint32_t num_tokens;
  uint32_t tokens_per_chunk;
  size_t misalign;  // byte offset applied to every device buffer (exercises narrow copy units)
};

std::vector<Case> Cases() {
  return {
      {"llama8b_like", {KvLayout::Mha(4, 8, 32, 128), 300, 16}, 0, 2048, 256, 0},
      {"gqa_unaligned_partial", {KvLayout::Mha(3, 4, 8, 64), 90, 16}, 5, 777, 256, 0},
      {"bf16_odd_dim", {KvLayout::Mha(2, 3, 3, 65, DType::kBFloat16), 64, 8}, 3, 300, 64, 0},
      {"fp32_misaligned_by_4", {KvLayout::Mha(2, 2, 2, 32, DType::kFloat32), 64, 16}, 0, 500, 128, 4},
      {"fp16_misaligned_by_2", {KvLayout::Mha(2, 2, 4, 128), 64, 16}, 17, 600, 256, 2},
      {"mla", {KvLayout::Mla(6, 512, 64), 80, 16}, 16, 1000, 512, 0},
      // More layers and blocks than one launch carries (64 layers, 6144 blocks): split launches.
      {"split_launches", {KvLayout::Mha(70, 1, 1, 8), 13000, 1}, 3, 6500, 1000, 0},
  };
}

struct DeviceCache {
  std::vector<std::unique_ptr<DeviceBuffer>> buffers;
  PagedKvCache view;
};

DeviceCache MakeDeviceCache(const PagedShape& s, const std::vector<std::vector<uint8_t>>& host,
                            size_t misalign) {
  DeviceCache c;
  for (const auto& layer : host) {
    c.buffers.push_back(std::make_unique<DeviceBuffer>(layer.size(), misalign));
    EXPECT_EQ(cudaMemcpy(c.buffers.back()->get(), layer.data(), layer.size(),
                         cudaMemcpyHostToDevice),
              cudaSuccess);
    c.view.layer_base.push_back(c.buffers.back()->get());
  }
  c.view.space = MemorySpace::kDevice;
  c.view.layout = s.layout;
  c.view.num_blocks = s.num_blocks;
  c.view.block_size = s.block_size;
  return c;
}

PagedKvCache HostView(const PagedShape& s, std::vector<std::vector<uint8_t>>* host) {
  PagedKvCache v;
  for (auto& l : *host) v.layer_base.push_back(l.data());
  v.layout = s.layout;
  v.num_blocks = s.num_blocks;
  v.block_size = s.block_size;
  return v;
}

TEST(PagedGpuTest, GatherMatchesCpu) {
  uint32_t seed = 100;
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    std::vector<std::vector<uint8_t>> host;
    for (uint32_t l = 0; l < c.shape.layout.num_layers; ++l) {
      host.push_back(RandomBytes(c.shape.LayerBytes(), ++seed));
    }
    const auto ids = RandomBlockTable(
        c.shape.num_blocks, (c.first_token + c.num_tokens + c.shape.block_size - 1) / c.shape.block_size,
        ++seed);
    const size_t bytes = c.shape.layout.ChunkBytes(c.num_tokens);
    std::vector<uint8_t> cpu(bytes, 0x5A);
    ASSERT_TRUE(GatherChunks(HostView(c.shape, &host), {ids, c.first_token, c.num_tokens},
                             c.tokens_per_chunk, cpu.data())
                    .ok());

    DeviceCache dev = MakeDeviceCache(c.shape, host, c.misalign);
    DeviceBuffer out(bytes, c.misalign);
    ASSERT_CUDA(cudaMemset(out.get(), 0xEE, bytes));  // poison
    const absl::Status st = GatherChunks(dev.view, {ids, c.first_token, c.num_tokens},
                                         c.tokens_per_chunk, out.get());
    ASSERT_TRUE(st.ok()) << st;
    std::vector<uint8_t> gpu(bytes);
    ASSERT_CUDA(cudaMemcpy(gpu.data(), out.get(), bytes, cudaMemcpyDeviceToHost));
    EXPECT_TRUE(gpu == cpu) << "GPU gather differs from the CPU reference";
  }
}

TEST(PagedGpuTest, ScatterMatchesCpu) {
  uint32_t seed = 500;
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    // Both sides start from the same random "poisoned" cache: slots outside the run must survive.
    std::vector<std::vector<uint8_t>> host;
    for (uint32_t l = 0; l < c.shape.layout.num_layers; ++l) {
      host.push_back(RandomBytes(c.shape.LayerBytes(), ++seed));
    }
    DeviceCache dev = MakeDeviceCache(c.shape, host, c.misalign);
    const auto ids = RandomBlockTable(
        c.shape.num_blocks, (c.first_token + c.num_tokens + c.shape.block_size - 1) / c.shape.block_size,
        ++seed);
    const size_t bytes = c.shape.layout.ChunkBytes(c.num_tokens);
    const auto chunks = RandomBytes(bytes, ++seed);
    ASSERT_TRUE(ScatterChunks(chunks.data(), c.tokens_per_chunk, HostView(c.shape, &host),
                              {ids, c.first_token, c.num_tokens})
                    .ok());

    DeviceBuffer in(bytes, c.misalign);
    ASSERT_CUDA(cudaMemcpy(in.get(), chunks.data(), bytes, cudaMemcpyHostToDevice));
    const absl::Status st =
        ScatterChunks(in.get(), c.tokens_per_chunk, dev.view, {ids, c.first_token, c.num_tokens});
    ASSERT_TRUE(st.ok()) << st;
    for (size_t l = 0; l < host.size(); ++l) {
      std::vector<uint8_t> gpu(host[l].size());
      ASSERT_CUDA(cudaMemcpy(gpu.data(), dev.view.layer_base[l], gpu.size(),
                             cudaMemcpyDeviceToHost));
      EXPECT_TRUE(gpu == host[l]) << "GPU scatter differs from the CPU reference in layer " << l;
    }
  }
}

// A payload decodes straight into device pages (PagedDecodeTarget + Decode on the GPU) with the
// same bytes as the CPU decoding into host pages; slots outside the chunk stay as they were.
TEST(PagedGpuTest, DecodeIntoDevicePagesMatchesCpu) {
  const PagedShape s{KvLayout::Mha(4, 8, 32, 128), 40, 16};
  const uint32_t tokens = 256, first = 32;
  std::mt19937 rng(9);
  std::vector<uint8_t> chunk(s.layout.ChunkBytes(tokens));
  for (size_t i = 0; i + 1 < chunk.size(); i += 2) {
    // Finite fp16 normals in about [2^-5, 4): random sign and mantissa, bounded exponent.
    const uint16_t h = static_cast<uint16_t>((rng() & 0x83FF) | ((10 + rng() % 7) << 10));
    std::memcpy(&chunk[i], &h, 2);
  }
  const auto ids = RandomBlockTable(s.num_blocks, (first + tokens) / s.block_size, 4);
  for (const char* codec : {"raw", "fp8"}) {
    SCOPED_TRACE(codec);
    auto params = CodecParams::Parse(codec);
    ASSERT_TRUE(params.ok()) << params.status();
    ChunkInput in;
    in.data = chunk.data();
    in.layout = s.layout;
    in.num_tokens = tokens;
    in.first_position = first;
    std::vector<uint8_t> payload;
    ASSERT_TRUE(Encode(*params, in, &payload).ok());

    std::vector<std::vector<uint8_t>> host;
    for (uint32_t l = 0; l < s.layout.num_layers; ++l) host.push_back(RandomBytes(s.LayerBytes(), 70 + l));
    DeviceCache dev = MakeDeviceCache(s, host, 0);
    const PagedKvCache host_view = HostView(s, &host);
    auto host_target = PagedDecodeTarget(host_view, {ids, first, tokens});
    ASSERT_TRUE(host_target.ok()) << host_target.status();
    ASSERT_TRUE(Decode(payload, *host_target).ok());
    auto dev_target = PagedDecodeTarget(dev.view, {ids, first, tokens});
    ASSERT_TRUE(dev_target.ok()) << dev_target.status();
    const absl::Status st = Decode(payload, *dev_target);
    ASSERT_TRUE(st.ok()) << st;
    for (size_t l = 0; l < host.size(); ++l) {
      std::vector<uint8_t> gpu(host[l].size());
      ASSERT_CUDA(cudaMemcpy(gpu.data(), dev.view.layer_base[l], gpu.size(), cudaMemcpyDeviceToHost));
      EXPECT_TRUE(gpu == host[l]) << "device-page decode differs from the CPU in layer " << l;
    }
  }
}

TEST(PagedGpuTest, GatherToHostMatchesCpu) {
  const PagedShape s{KvLayout::Mha(3, 4, 8, 64), 90, 16};
  std::vector<std::vector<uint8_t>> host;
  for (uint32_t l = 0; l < s.layout.num_layers; ++l) host.push_back(RandomBytes(s.LayerBytes(), 90 + l));
  const auto ids = RandomBlockTable(s.num_blocks, 40, 91);
  std::vector<uint8_t> cpu(s.layout.ChunkBytes(600)), gpu(cpu.size(), 0xEE);
  ASSERT_TRUE(GatherChunks(HostView(s, &host), {ids, 7, 600}, 256, cpu.data()).ok());
  DeviceCache dev = MakeDeviceCache(s, host, 0);
  const absl::Status st = GatherChunksToHost(dev.view, {ids, 7, 600}, 256, gpu.data());
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(gpu == cpu);
}

TEST(PagedGpuTest, RejectsOutOfRangeBlocksBeforeLaunching) {
  const PagedShape s{KvLayout::Mha(1, 1, 1, 16), 4, 4};
  std::vector<std::vector<uint8_t>> host = {RandomBytes(s.LayerBytes(), 1)};
  DeviceCache dev = MakeDeviceCache(s, host, 0);
  DeviceBuffer out(s.layout.ChunkBytes(8));
  std::vector<int32_t> ids = {0, 9};
  EXPECT_EQ(GatherChunks(dev.view, {ids, 0, 8}, 8, out.get()).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::kernels
