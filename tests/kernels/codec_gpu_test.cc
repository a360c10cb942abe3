// GPU codecs against the CPU reference, on seeded random inputs with poisoned outputs:
//   - a body encoded on the GPU has exactly the CPU's bytes (so payloads are interchangeable);
//   - a GPU decode (contiguous, strided with unaligned rows, paged) writes exactly what the CPU
//     decode writes, for payloads from either side;
//   - the batched launchers used by bench/codec_speed match the single-chunk path.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "codec_test_util.h"
#include "codecs/codec_cuda.h"
#include "codecs/device_memory.h"
#include "codecs/geometry.h"
#include "kvtier/kernels/codec.h"

namespace kvtier::kernels {
namespace {

#define CUDA_ASSERT(expr) ASSERT_EQ((expr), cudaSuccess) << #expr

struct DevMem {
  void* p = nullptr;
  explicit DevMem(size_t n) { EXPECT_EQ(cudaMalloc(&p, n), cudaSuccess); }
  ~DevMem() { cudaFree(p); }
};

struct Case {
  std::string codec;
  KvLayout layout;
  uint32_t tokens;
  uint64_t first_position = 0;
  bool ends_sequence = false;
};

std::string Name(const Case& c) {
  return c.codec + " " + c.layout.DebugString() + " T=" + std::to_string(c.tokens) +
         " pos=" + std::to_string(c.first_position) + (c.ends_sequence ? " ends" : "");
}

size_t FirstDiff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (a[i] != b[i]) return i;
  }
  return std::min(a.size(), b.size());
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  const std::vector<KvLayout> layouts = {
      KvLayout::Mha(2, 2, 4, 128, DType::kFloat16), KvLayout::Mha(2, 2, 2, 64, DType::kBFloat16),
      KvLayout::Mha(1, 3, 3, 128, DType::kFloat32), KvLayout::Mla(2, 512, 64, DType::kFloat16),
      KvLayout::Mla(1, 96, 32, DType::kBFloat16),   KvLayout::Mha(1, 2, 2, 96, DType::kFloat16)};
  for (const char* codec : {"raw", "fp8", "kivi:b=2,g=32", "kivi:b=4,g=32", "kivi:b=2,g=64",
                            "kivi:b=4,g=128", "kivi:b=2,g=32,sink=4,tail=7"}) {
    for (const KvLayout& l : layouts) {
      const CodecParams p = *CodecParams::Parse(codec);
      if (p.id == CodecId::kKivi && l.VectorDim() % p.group_size != 0) continue;
      cases.push_back({codec, l, 100, 0, true});
      cases.push_back({codec, l, 64, 3, false});
    }
  }
  // fp8 on an odd width (scalar paths).
  cases.push_back({"fp8", KvLayout::Mha(1, 1, 1, 36, DType::kFloat16), 9});
  return cases;
}

ChunkInput Input(const Case& c, const void* data, MemorySpace space) {
  ChunkInput in;
  in.data = data;
  in.space = space;
  in.layout = c.layout;
  in.num_tokens = c.tokens;
  in.first_position = c.first_position;
  in.ends_sequence = c.ends_sequence;
  return in;
}

TEST(CodecGpuTest, DeviceEncodeMatchesHostBytesAndDecodesMatch) {
  uint32_t seed = 100;
  for (const Case& c : Cases()) {
    SCOPED_TRACE(Name(c));
    const CodecParams p = *CodecParams::Parse(c.codec);
    const auto host_in = testing::RandomChunk(c.layout, c.tokens, ++seed);
    DevMem dev_in(host_in.size());
    CUDA_ASSERT(cudaMemcpy(dev_in.p, host_in.data(), host_in.size(), cudaMemcpyHostToDevice));
    std::vector<uint8_t> cpu_payload, gpu_payload;
    ASSERT_TRUE(Encode(p, Input(c, host_in.data(), MemorySpace::kHost), &cpu_payload).ok());
    const absl::Status s = Encode(p, Input(c, dev_in.p, MemorySpace::kDevice), &gpu_payload);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_EQ(gpu_payload.size(), cpu_payload.size());
    ASSERT_EQ(gpu_payload, cpu_payload) << "first differing byte " << FirstDiff(gpu_payload, cpu_payload);

    // CPU decode of the GPU payload, GPU decode of the CPU payload: same bytes.
    std::vector<uint8_t> cpu_out(host_in.size());
    testing::Poison(&cpu_out);
    ASSERT_TRUE(Decode(gpu_payload, DecodeTarget::Contiguous(cpu_out.data(), c.layout, c.tokens)).ok());
    DevMem dev_out(host_in.size());
    CUDA_ASSERT(cudaMemset(dev_out.p, 0xA5, host_in.size()));
    const absl::Status d = Decode(
        cpu_payload, DecodeTarget::Contiguous(dev_out.p, c.layout, c.tokens, MemorySpace::kDevice));
    ASSERT_TRUE(d.ok()) << d;
    std::vector<uint8_t> gpu_out(host_in.size());
    CUDA_ASSERT(cudaMemcpy(gpu_out.data(), dev_out.p, gpu_out.size(), cudaMemcpyDeviceToHost));
    ASSERT_EQ(gpu_out, cpu_out) << "first differing byte " << FirstDiff(gpu_out, cpu_out);
    if (p.id == CodecId::kRaw) {
      ASSERT_EQ(gpu_out, host_in);
    }
  }
}

// Paged target with scrambled blocks and padded rows: pad 8 elements keeps 16-byte alignment
// (vector stores), pad 1 breaks it (scalar stores).
TEST(CodecGpuTest, PagedAndUnalignedTargetsMatchHost) {
  uint32_t seed = 500;
  for (const Case& c : Cases()) {
    for (uint32_t pad : {8u, 1u}) {
      SCOPED_TRACE(Name(c) + " pad=" + std::to_string(pad));
      const KvLayout& l = c.layout;
      const auto host_in = testing::RandomChunk(l, c.tokens, ++seed);
      std::vector<uint8_t> payload;
      ASSERT_TRUE(Encode(*CodecParams::Parse(c.codec), Input(c, host_in.data(), MemorySpace::kHost),
                         &payload).ok());
      const bool mha = l.kind == LayoutKind::kMha;
      const int64_t es = DTypeSize(l.dtype), heads = mha ? l.num_kv_heads : 1, kvs = mha ? 2 : 1;
      const uint32_t bs = 16, blocks = (c.tokens + bs - 1) / bs, nblocks = blocks + 3;
      std::vector<int32_t> table(blocks);
      for (uint32_t i = 0; i < blocks; ++i) table[i] = static_cast<int32_t>(nblocks - 1 - i);  // a permutation
      const int64_t stride_head = (l.VectorDim() + pad) * es, stride_token = heads * stride_head;
      const int64_t stride_kv = bs * stride_token, stride_block = kvs * stride_kv;
      const size_t layer_bytes = nblocks * stride_block;
      DevMem dev(layer_bytes * l.num_layers);
      std::vector<uint8_t> host(layer_bytes * l.num_layers, 0xA5);
      CUDA_ASSERT(cudaMemset(dev.p, 0xA5, host.size()));
      DecodeTarget th, td;
      for (uint32_t i = 0; i < l.num_layers; ++i) {
        th.layer_base.push_back(host.data() + i * layer_bytes);
        td.layer_base.push_back(static_cast<char*>(dev.p) + i * layer_bytes);
      }
      for (DecodeTarget* t : {&th, &td}) {
        t->dtype = l.dtype;
        t->stride_kv = mha ? stride_kv : 0;
        t->stride_head = mha ? stride_head : 0;
        t->stride_token = stride_token;
        t->block_table = table.data();
        t->block_size = bs;
        t->stride_block = stride_block;
      }
      td.space = MemorySpace::kDevice;
      ASSERT_TRUE(Decode(payload, th).ok());
      const absl::Status s = Decode(payload, td);
      ASSERT_TRUE(s.ok()) << s;
      std::vector<uint8_t> back(host.size());
      CUDA_ASSERT(cudaMemcpy(back.data(), dev.p, back.size(), cudaMemcpyDeviceToHost));
      ASSERT_EQ(back, host) << "first differing byte " << FirstDiff(back, host);
    }
  }
}

// The batched launchers (bench/codec_speed's entry points) against single-chunk host encodes.
TEST(CodecGpuTest, BatchedLaunchersMatchSingleChunk) {
  using namespace internal;
  const KvLayout l = KvLayout::Mha(2, 2, 4, 128);
  const uint32_t T = 64, n = 3;
  for (const char* codec : {"raw", "fp8", "kivi:b=2,g=32", "kivi:b=4,g=64"}) {
    SCOPED_TRACE(codec);
    const CodecParams p = *CodecParams::Parse(codec);
    std::vector<std::vector<uint8_t>> inputs, payloads;
    std::vector<uint8_t> all_in;
    for (uint32_t i = 0; i < n; ++i) {
      inputs.push_back(testing::RandomChunk(l, T, 900 + i));
      all_in.insert(all_in.end(), inputs.back().begin(), inputs.back().end());
      ChunkInput ci;
      ci.data = inputs.back().data();
      ci.layout = l;
      ci.num_tokens = T;
      payloads.emplace_back();
      ASSERT_TRUE(Encode(p, ci, &payloads.back()).ok());
    }
    const size_t in_stride = l.ChunkBytes(T), body = payloads[0].size() - 96;
    StreamShape s;
    s.mha = true;
    s.num_layers = 2;
    s.heads = 2;
    s.num_streams = 8;
    s.tokens = T;
    s.width = 128;
    s.elem_size = 2;
    const KiviGeometry g = p.id == CodecId::kKivi
                               ? KiviGeometry::Make(s, p.bits, p.group_size, 0, false, 0, 0)
                               : KiviGeometry{};
    DevMem din(all_in.size()), dbody(body * n), dout(all_in.size());
    CUDA_ASSERT(cudaMemcpy(din.p, all_in.data(), all_in.size(), cudaMemcpyHostToDevice));
    CUDA_ASSERT(cudaMemset(dbody.p, 0, body * n));
    int rc = 0;
    if (p.id == CodecId::kRaw) rc = cuda::LaunchRawEncode(s, din.p, in_stride, dbody.p, body, n, nullptr);
    if (p.id == CodecId::kFp8) rc = cuda::LaunchFp8Encode(1, s, din.p, in_stride, dbody.p, body, n, nullptr);
    if (p.id == CodecId::kKivi) rc = cuda::LaunchKiviEncode(1, g, din.p, in_stride, dbody.p, body, n, nullptr);
    ASSERT_EQ(rc, 0);
    CUDA_ASSERT(cudaDeviceSynchronize());
    std::vector<uint8_t> bodies(body * n);
    CUDA_ASSERT(cudaMemcpy(bodies.data(), dbody.p, bodies.size(), cudaMemcpyDeviceToHost));
    for (uint32_t i = 0; i < n; ++i) {
      ASSERT_EQ(std::memcmp(bodies.data() + i * body, payloads[i].data() + 96, body), 0) << i;
    }
    // Batched decode into chunk-strided contiguous targets.
    CUDA_ASSERT(cudaMemset(dout.p, 0xA5, all_in.size()));
    DecodeTarget t = DecodeTarget::Contiguous(dout.p, l, T, MemorySpace::kDevice);
    auto dt = UploadTarget(t, T);
    ASSERT_TRUE(dt.ok());
    dt->view.chunk_stride = static_cast<int64_t>(in_stride);
    dt->view.align16 = true;
    if (p.id == CodecId::kRaw) rc = cuda::LaunchRawDecode(s, dbody.p, body, dt->view, n, nullptr);
    if (p.id == CodecId::kFp8) rc = cuda::LaunchFp8Decode(1, s, dbody.p, body, dt->view, n, nullptr);
    if (p.id == CodecId::kKivi) rc = cuda::LaunchKiviDecode(1, g, dbody.p, body, dt->view, n, nullptr);
    ASSERT_EQ(rc, 0);
    CUDA_ASSERT(cudaDeviceSynchronize());
    std::vector<uint8_t> out(all_in.size());
    CUDA_ASSERT(cudaMemcpy(out.data(), dout.p, out.size(), cudaMemcpyDeviceToHost));
    for (uint32_t i = 0; i < n; ++i) {
      std::vector<uint8_t> ref(in_stride);
      ASSERT_TRUE(Decode(payloads[i], DecodeTarget::Contiguous(ref.data(), l, T)).ok());
      ASSERT_EQ(std::memcmp(out.data() + i * in_stride, ref.data(), in_stride), 0) << i;
    }
  }
}

}  // namespace
}  // namespace kvtier::kernels
