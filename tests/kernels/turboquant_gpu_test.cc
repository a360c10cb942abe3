// GPU tests of the TurboQuant codec: device-encoded bodies equal the CPU reference byte for byte
// (no rounding ties are expected: both sides run the same IEEE operations in the same order),
// bodies decode identically on either side (cross decode), and device decode writes strided and
// paged targets. Inputs are seeded random data; outputs are poisoned before every run.
// The last test prints encode/decode throughput beside device-to-device copy (information only).
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "codecs/numeric.h"
#include "turboquant/tq_codec.h"

namespace kvtier::kernels::internal {
namespace {

struct DevBuf {
  void* p = nullptr;
  explicit DevBuf(size_t n) { EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(n, 16)), cudaSuccess); }
  ~DevBuf() { cudaFree(p); }
  uint8_t* u8() { return static_cast<uint8_t*>(p); }
};

// GQA with 4 query heads per KV head (KvLayout::Mha with the group size fixed).
KvLayout Mha(uint32_t layers, uint32_t heads, uint32_t dim, DType dt = DType::kFloat16) {
  return KvLayout::Mha(layers, heads, heads * 4, dim, dt);
}

KvLayout Mla(uint32_t layers, uint32_t latent, uint32_t rope) {
  return KvLayout::Mla(layers, latent, rope, DType::kFloat16);
}

size_t ElemSize(DType dt) { return dt == DType::kFloat32 ? 4 : 2; }
size_t Elems(const KvLayout& l, uint32_t T) {
  return (l.kind == LayoutKind::kMha ? 2ull * l.num_layers * l.num_kv_heads * l.head_dim
                                     : size_t{l.num_layers} * (l.latent_dim + l.rope_dim)) *
         T;
}

std::vector<uint8_t> MakeInput(const KvLayout& l, uint32_t T, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0, 1);
  const uint32_t W = l.VectorDim();
  const size_t count = Elems(l, T), es = ElemSize(l.dtype);
  std::vector<uint8_t> bytes(count * es);
  for (size_t i = 0; i < count; ++i) {
    float x = n(rng);
    if (i % W == 3 || i % W == 70) x = 12.0f * x - 4.0f;
    if (l.dtype == DType::kFloat32) {
      std::memcpy(&bytes[4 * i], &x, 4);
    } else {
      const uint16_t h = l.dtype == DType::kFloat16 ? FloatToHalf(x) : FloatToBf16(x);
      std::memcpy(&bytes[2 * i], &h, 2);
    }
  }
  return bytes;
}

DecodeTarget Contiguous(uint8_t* base, const KvLayout& l, uint32_t T, MemorySpace space) {
  DecodeTarget t;
  const size_t es = ElemSize(l.dtype), W = l.VectorDim();
  t.space = space;
  t.dtype = l.dtype;
  t.stride_token = W * es;
  if (l.kind == LayoutKind::kMha) {
    t.stride_head = T * W * es;
    t.stride_kv = t.stride_head * l.num_kv_heads;
  }
  const size_t layer_bytes = Elems(l, T) / l.num_layers * es;
  for (uint32_t i = 0; i < l.num_layers; ++i) t.layer_base.push_back(base + i * layer_bytes);
  return t;
}

CodecParams Tq(uint8_t bits, TurboQuantVariant v, TurboQuantRotation r,
               TurboQuantSplit s = TurboQuantSplit::kNone,
               TurboQuantQjl qjl = TurboQuantQjl::kGaussian) {
  CodecParams p;
  p.id = CodecId::kTurboQuant;
  p.bits = bits;
  p.tq_variant = v;
  p.tq_rotation = r;
  p.tq_split = s;
  p.tq_qjl = qjl;
  p.seed = 1234;
  return p;
}

// The same with fixed-point matrices (matrix=fixed; the codec must use a matrix).
CodecParams TqFx(uint8_t bits, TurboQuantVariant v, TurboQuantRotation r,
                 TurboQuantSplit s = TurboQuantSplit::kNone,
                 TurboQuantQjl qjl = TurboQuantQjl::kGaussian) {
  CodecParams p = Tq(bits, v, r, s, qjl);
  p.tq_matrix = TurboQuantMatrix::kFixed;
  return p;
}

// The kernel generation the codec uses by default (g_kernel_generation in tq_cuda.cu); the tests
// restore it after switching (TqSetKernelGenerationForTesting).
constexpr int kDefaultGeneration = 7;

// Prod with the structured QJL projection (qjl=hadamard).
CodecParams TqHq(uint8_t bits, TurboQuantRotation r, TurboQuantSplit s = TurboQuantSplit::kNone) {
  return Tq(bits, TurboQuantVariant::kProd, r, s, TurboQuantQjl::kHadamard);
}

// Writes `text` to the file named by environment variable `env`, if set (report tests copy their
// figures for bench/results/ only when asked).
void WriteIfAsked(const char* env, const std::string& text) {
  if (const char* path = std::getenv(env)) {
    if (FILE* f = std::fopen(path, "w")) {
      std::fputs(text.c_str(), f);
      std::fclose(f);
    }
  }
}

struct Case {
  CodecParams params;
  KvLayout layout;
  uint32_t tokens;
  std::string name;
};

std::vector<Case> Cases() {
  std::vector<Case> cases;
  // Every path for mse, prod (Gaussian QJL) and prod with qjl=hadamard ("prod-hq").
  const std::pair<TurboQuantVariant, TurboQuantQjl> variants[] = {
      {TurboQuantVariant::kMse, TurboQuantQjl::kGaussian},
      {TurboQuantVariant::kProd, TurboQuantQjl::kGaussian},
      {TurboQuantVariant::kProd, TurboQuantQjl::kHadamard}};
  for (auto rot : {TurboQuantRotation::kHadamard, TurboQuantRotation::kDense}) {
    for (const auto& [var, qjl] : variants) {
      const std::string tag =
          std::string(rot == TurboQuantRotation::kDense ? "dense" : "hadamard") +
          (var == TurboQuantVariant::kMse ? "/mse"
                                          : qjl == TurboQuantQjl::kHadamard ? "/prod-hq" : "/prod");
      const auto none = TurboQuantSplit::kNone;
      for (uint8_t b = 1; b <= 4; ++b) {
        cases.push_back({Tq(b, var, rot, none, qjl), Mha(2, 2, 128), 37, tag + "/b" + std::to_string(b)});
      }
      cases.push_back({Tq(2, var, rot, TurboQuantSplit::k2p5, qjl), Mha(2, 2, 128), 33, tag + "/2.5"});
      cases.push_back({Tq(3, var, rot, TurboQuantSplit::k3p5, qjl), Mha(1, 2, 128), 64, tag + "/3.5"});
      cases.push_back({Tq(3, var, rot, none, qjl), Mla(2, 512, 64), 9, tag + "/mla"});
      cases.push_back({Tq(4, var, rot, none, qjl), Mha(1, 1, 96, DType::kBFloat16), 10, tag + "/bf16-d96"});
      cases.push_back({Tq(3, var, rot, none, qjl), Mha(2, 2, 128, DType::kBFloat16), 21, tag + "/bf16-d128"});
      cases.push_back({Tq(1, var, rot, none, qjl), Mha(1, 2, 128, DType::kFloat32), 21, tag + "/fp32-d128"});
      cases.push_back({Tq(2, var, rot, none, qjl), Mha(1, 2, 64, DType::kFloat32), 10, tag + "/fp32-d64"});
    }
  }
  // The quad path (2-byte dtypes, Hadamard, head_dim 128) for every width, bf16 too, and chunks
  // of more vectors than one grid of the grid-stride kernels covers (4 x 8 x 2 x 600).
  for (uint8_t b = 1; b <= 4; ++b) {
    cases.push_back({Tq(b, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard),
                     Mha(1, 3, 128, DType::kBFloat16), 19, "hadamard/mse/bf16-d128/b" + std::to_string(b)});
    cases.push_back({Tq(b, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard),
                     Mha(4, 8, 128), 600, "hadamard/mse/large/b" + std::to_string(b)});
  }
  for (uint8_t b : {1, 4}) {
    cases.push_back({Tq(b, TurboQuantVariant::kProd, TurboQuantRotation::kHadamard),
                     Mha(4, 8, 128), 600, "hadamard/prod/large/b" + std::to_string(b)});
  }
  // The structured-QJL quad kernels: every mse width, bf16, several grid-stride rounds.
  for (uint8_t b = 1; b <= 4; ++b) {
    cases.push_back({TqHq(b, TurboQuantRotation::kHadamard), Mha(4, 8, 128), 600,
                     "hadamard/prod-hq/large/b" + std::to_string(b)});
    cases.push_back({TqHq(b, TurboQuantRotation::kHadamard), Mha(1, 3, 128, DType::kBFloat16), 19,
                     "hadamard/prod-hq/bf16-d128/b" + std::to_string(b)});
  }
  // The split kernels (mse, Hadamard, 2-byte dtypes): several vectors per thread (T > 256), a
  // Llama-shaped 256-token chunk, bf16, and short streams.
  for (auto split : {TurboQuantSplit::k2p5, TurboQuantSplit::k3p5}) {
    const std::string sn = split == TurboQuantSplit::k2p5 ? "2.5" : "3.5";
    const uint8_t b = split == TurboQuantSplit::k2p5 ? 2 : 3;
    cases.push_back({Tq(b, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard, split),
                     Mha(2, 8, 128), 600, "hadamard/mse/large/" + sn});
    cases.push_back({Tq(b, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard, split),
                     Mha(2, 8, 128), 256, "hadamard/mse/t256/" + sn});
    cases.push_back({Tq(b, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard, split),
                     Mha(2, 3, 128, DType::kBFloat16), 19, "hadamard/mse/bf16-d128/" + sn});
    cases.push_back({Tq(b, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard, split),
                     Mha(1, 2, 128, DType::kBFloat16), 300, "hadamard/mse/bf16-t300/" + sn});
  }
  cases.push_back({Tq(3, TurboQuantVariant::kMse, TurboQuantRotation::kDense), Mha(2, 8, 128), 600,
                   "dense/mse/large/b3"});
  cases.push_back({Tq(2, TurboQuantVariant::kProd, TurboQuantRotation::kDense), Mha(2, 8, 128), 600,
                   "dense/prod/large/b2"});
  for (uint8_t b : {1, 4}) {
    cases.push_back({Tq(b, TurboQuantVariant::kProd, TurboQuantRotation::kDense),
                     Mha(1, 3, 128, DType::kBFloat16), 19, "dense/prod/bf16-d128/b" + std::to_string(b)});
  }
  // Fixed-point matrices (matrix=fixed): the head_dim-128 tensor-core kernels (dense, fp16/bf16,
  // aligned) and the generic kernels (everything else: Hadamard rotation with the fixed Gaussian
  // QJL, splits, MLA, other widths, fp32, dense with the structured QJL).
  const auto D = TurboQuantRotation::kDense, H = TurboQuantRotation::kHadamard;
  const auto mse = TurboQuantVariant::kMse, prod = TurboQuantVariant::kProd;
  const auto none = TurboQuantSplit::kNone;
  for (uint8_t b = 1; b <= 4; ++b) {
    const std::string bs = "/b" + std::to_string(b);
    cases.push_back({TqFx(b, mse, D), Mha(2, 2, 128), 37, "fixed/dense/mse" + bs});
    cases.push_back({TqFx(b, mse, D), Mha(1, 3, 128, DType::kBFloat16), 19,
                     "fixed/dense/mse/bf16-d128" + bs});
    cases.push_back({TqFx(b, prod, D), Mha(2, 2, 128), 37, "fixed/dense/prod" + bs});
    cases.push_back({TqFx(b, prod, D), Mha(1, 3, 128, DType::kBFloat16), 19,
                     "fixed/dense/prod/bf16-d128" + bs});
  }
  for (uint8_t b = 2; b <= 3; ++b) {
    const std::string bs = "/b" + std::to_string(b);
    cases.push_back({TqFx(b, prod, H), Mha(2, 2, 128), 37, "fixed/hadamard/prod" + bs});
    cases.push_back({TqFx(b, prod, H), Mha(1, 3, 128, DType::kBFloat16), 19,
                     "fixed/hadamard/prod/bf16-d128" + bs});
  }
  cases.push_back({TqFx(3, mse, D), Mha(2, 8, 128), 600, "fixed/dense/mse/large/b3"});
  cases.push_back({TqFx(2, prod, D), Mha(2, 8, 128), 600, "fixed/dense/prod/large/b2"});
  cases.push_back({TqFx(4, prod, D), Mha(2, 8, 128, DType::kBFloat16), 600,
                   "fixed/dense/prod/bf16-large/b4"});
  cases.push_back({TqFx(2, mse, D, TurboQuantSplit::k2p5), Mha(2, 2, 128), 33, "fixed/dense/mse/2.5"});
  cases.push_back({TqFx(3, mse, D, TurboQuantSplit::k3p5), Mha(1, 2, 128), 64, "fixed/dense/mse/3.5"});
  cases.push_back({TqFx(2, prod, D, TurboQuantSplit::k2p5), Mha(2, 2, 128), 33, "fixed/dense/prod/2.5"});
  cases.push_back({TqFx(3, prod, H, TurboQuantSplit::k3p5), Mha(1, 2, 128), 64,
                   "fixed/hadamard/prod/3.5"});
  cases.push_back({TqFx(3, prod, D), Mla(2, 512, 64), 9, "fixed/dense/prod/mla"});
  cases.push_back({TqFx(3, prod, H), Mla(2, 512, 64), 9, "fixed/hadamard/prod/mla"});
  cases.push_back({TqFx(4, prod, D), Mha(1, 1, 96, DType::kBFloat16), 10, "fixed/dense/prod/bf16-d96"});
  cases.push_back({TqFx(2, mse, D), Mha(1, 2, 64), 10, "fixed/dense/mse/d64"});
  cases.push_back({TqFx(1, prod, D), Mha(1, 2, 128, DType::kFloat32), 21, "fixed/dense/prod/fp32-d128"});
  cases.push_back({TqFx(3, mse, D), Mha(1, 2, 128, DType::kFloat32), 21, "fixed/dense/mse/fp32-d128"});
  cases.push_back({TqFx(2, prod, H), Mha(1, 2, 64, DType::kFloat32), 10, "fixed/hadamard/prod/fp32-d64"});
  cases.push_back({TqFx(3, prod, D, none, TurboQuantQjl::kHadamard), Mha(2, 2, 128), 37,
                   "fixed/dense/prod-hq/b3"});
  return cases;
}

// Restores the default kernel generation when a check returns (also through a failed ASSERT).
struct GenerationGuard {
  ~GenerationGuard() { TqSetKernelGenerationForTesting(kDefaultGeneration); }
};

// Encodes on both sides (bodies must be equal byte for byte) and decodes the CPU body on both
// sides (outputs must be equal byte for byte), the device side with each kernel generation in
// `generations` (TqSetKernelGenerationForTesting); the CPU reference is computed once.
void CheckCase(const Case& k, const std::vector<int>& generations) {
  const CodecImpl& c = TurboQuantCodec();
  GenerationGuard restore;
  SCOPED_TRACE(k.name);
  const ChunkShape shape{k.layout, k.tokens, 0, false};
  ASSERT_TRUE(c.CheckCompatible(k.params, shape).ok());
  const auto in = MakeInput(k.layout, k.tokens, 77);
  const size_t body_size = c.BodySize(k.params, shape);
  std::vector<uint8_t> cpu_body(body_size);
  ASSERT_TRUE(c.EncodeHost(k.params, shape, in.data(), absl::MakeSpan(cpu_body)).ok());
  std::vector<uint8_t> cpu_out(in.size(), 0x5A), gpu_out(in.size()), gpu_body(body_size);
  ASSERT_TRUE(c.DecodeHost(k.params, shape, cpu_body,
                           Contiguous(cpu_out.data(), k.layout, k.tokens, MemorySpace::kHost))
                  .ok());
  DevBuf d_in(in.size()), d_body(body_size), d_out(in.size());
  ASSERT_EQ(cudaMemcpy(d_in.p, in.data(), in.size(), cudaMemcpyHostToDevice), cudaSuccess);
  for (int generation : generations) {
    SCOPED_TRACE("kernel generation " + std::to_string(generation));
    TqSetKernelGenerationForTesting(generation);
    ASSERT_EQ(cudaMemset(d_body.p, 0xA5, body_size), cudaSuccess);  // poison
    ASSERT_TRUE(c.EncodeDevice(k.params, shape, d_in.p, d_body.p).ok());
    ASSERT_EQ(cudaMemcpy(gpu_body.data(), d_body.p, body_size, cudaMemcpyDeviceToHost), cudaSuccess);
    size_t diff = 0, first = body_size;
    for (size_t i = 0; i < body_size; ++i) {
      if (gpu_body[i] != cpu_body[i]) {
        ++diff;
        first = std::min(first, i);
      }
    }
    EXPECT_EQ(diff, 0u) << "first differing byte " << first << " of " << body_size;

    // Cross decode: the CPU body decoded on the GPU equals the CPU's own decode.
    ASSERT_EQ(cudaMemcpy(d_body.p, cpu_body.data(), body_size, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemset(d_out.p, 0xC3, in.size()), cudaSuccess);
    ASSERT_TRUE(c.DecodeDevice(k.params, shape, d_body.p,
                               Contiguous(d_out.u8(), k.layout, k.tokens, MemorySpace::kDevice))
                    .ok());
    ASSERT_EQ(cudaMemcpy(gpu_out.data(), d_out.p, in.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    size_t out_diff = 0;
    for (size_t i = 0; i < in.size(); ++i) out_diff += gpu_out[i] != cpu_out[i];
    EXPECT_EQ(out_diff, 0u) << "decoded bytes differ";
  }
}

// Every case with the default kernels; the cases whose kernels have other generations (1: the
// previous qjl=hadamard and split kernels, kept for before/after measurements; 2: the quad
// qjl=hadamard kernels; 3: generation 2's other quantizer form; 4: the pair-layout qjl=hadamard
// kernels; 5: generation 4's other quantizer form; 6: generation 4's kernels in their other
// launch shape; 7: generation 4 with the leaner encode) with those too: they must stay exact as
// well. (Generations 3-7 run the split kernels as generation 2 does, so the splits check 1 and 2.)
TEST(TurboQuantGpuTest, DeviceBodiesEqualCpuBodiesAndCrossDecode) {
  for (const Case& k : Cases()) {
    const bool hq = k.name.find("prod-hq") != std::string::npos;
    const bool split = k.name.find("/2.5") != std::string::npos ||
                       k.name.find("/3.5") != std::string::npos;
    CheckCase(k, hq      ? std::vector<int>{1, 2, 3, 4, 5, 6, 7}
                 : split ? std::vector<int>{1, 2}
                         : std::vector<int>{kDefaultGeneration});
    if (k.name.rfind("fixed/dense/mse", 0) == 0) {
      // Dense mse has two tensor-core forms (register fragments, the default, and shared
      // memory); both must be exact.
      TqSetFixedRegisterPathForTesting(false);
      CheckCase(k, {2});
      TqSetFixedRegisterPathForTesting(true);
    }
  }
}

// Split streams whose channel statistics tie (duplicated channels, a constant channel shared by
// two positions): the device's mask follows the CPU's rank rule (ties to the lower channel) and
// the bodies and decodes stay identical, with the split kernels and with the generic ones.
TEST(TurboQuantGpuTest, SplitTiesMatchCpu) {
  const CodecImpl& c = TurboQuantCodec();
  const KvLayout l = Mha(1, 2, 128);
  const uint32_t T = 40;
  const ChunkShape shape{l, T, 0, false};
  auto in = MakeInput(l, T, 123);
  uint16_t* h = reinterpret_cast<uint16_t*>(in.data());
  for (size_t r = 0; r < in.size() / 256; ++r) {
    h[r * 128 + 9] = h[r * 128 + 5];     // ties among ordinary channels
    h[r * 128 + 71] = h[r * 128 + 70];   // ties among the outliers
    h[r * 128 + 100] = h[r * 128 + 3];
  }
  for (bool kernels : {true, false}) {
    TqSetSplitKernelsForTesting(kernels);
    for (auto split : {TurboQuantSplit::k2p5, TurboQuantSplit::k3p5}) {
      SCOPED_TRACE(std::string(kernels ? "split kernels " : "generic ") +
                   (split == TurboQuantSplit::k2p5 ? "2.5" : "3.5"));
      const CodecParams p = Tq(split == TurboQuantSplit::k2p5 ? 2 : 3, TurboQuantVariant::kMse,
                               TurboQuantRotation::kHadamard, split);
      std::vector<uint8_t> cpu_body(c.BodySize(p, shape)), gpu_body(cpu_body.size());
      ASSERT_TRUE(c.EncodeHost(p, shape, in.data(), absl::MakeSpan(cpu_body)).ok());
      DevBuf d_in(in.size()), d_body(cpu_body.size()), d_out(in.size());
      ASSERT_EQ(cudaMemcpy(d_in.p, in.data(), in.size(), cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cudaMemset(d_body.p, 0x3C, cpu_body.size()), cudaSuccess);
      ASSERT_TRUE(c.EncodeDevice(p, shape, d_in.p, d_body.p).ok());
      ASSERT_EQ(cudaMemcpy(gpu_body.data(), d_body.p, gpu_body.size(), cudaMemcpyDeviceToHost),
                cudaSuccess);
      EXPECT_TRUE(gpu_body == cpu_body);
      std::vector<uint8_t> cpu_out(in.size(), 0x5A), gpu_out(in.size());
      ASSERT_TRUE(
          c.DecodeHost(p, shape, cpu_body, Contiguous(cpu_out.data(), l, T, MemorySpace::kHost)).ok());
      ASSERT_EQ(cudaMemset(d_out.p, 0xC3, in.size()), cudaSuccess);
      ASSERT_TRUE(
          c.DecodeDevice(p, shape, d_body.p, Contiguous(d_out.u8(), l, T, MemorySpace::kDevice)).ok());
      ASSERT_EQ(cudaMemcpy(gpu_out.data(), d_out.p, in.size(), cudaMemcpyDeviceToHost), cudaSuccess);
      EXPECT_TRUE(gpu_out == cpu_out);
    }
  }
  TqSetSplitKernelsForTesting(true);
}

// Paged targets: the register path (16-byte aligned rows) and the generic path (a split, or rows
// that are not 16-byte aligned) both write exactly what the host decode writes.
// The launch cache (TqEncodeDevice / TqDecodeDevice) keeps every (params, shape, generation,
// split switch) apart: configurations that differ in one field each, interleaved, in both orders,
// then from 4 threads at once, with the cache switched off for comparison; every device body
// equals the CPU body and every device decode of it the CPU decode. Incompatible parameters and
// bad targets are refused on every call (errors are not cached).
struct LaunchCacheGuard {
  ~LaunchCacheGuard() {
    TqSetLaunchCacheForTesting(true);
    TqSetKernelGenerationForTesting(kDefaultGeneration);
    TqSetSplitKernelsForTesting(true);
  }
};

TEST(TurboQuantGpuTest, LaunchCacheKeepsParametersApart) {
  const CodecImpl& c = TurboQuantCodec();
  LaunchCacheGuard restore;
  struct Item {
    CodecParams p;
    KvLayout l;
    uint32_t T;
    int generation;
    bool split_kernels;
    std::vector<uint8_t> in, cpu_body, cpu_out;
  };
  std::vector<Item> items;
  const auto H = TurboQuantRotation::kHadamard;
  auto add = [&](CodecParams p, KvLayout l, uint32_t T, int generation = kDefaultGeneration, bool sk = true) {
    items.push_back({p, l, T, generation, sk, {}, {}, {}});
  };
  CodecParams seed2 = Tq(2, TurboQuantVariant::kMse, H);
  seed2.seed = 99;
  add(Tq(2, TurboQuantVariant::kMse, H), Mha(2, 2, 128), 40);
  add(seed2, Mha(2, 2, 128), 40);                                   // seed only
  add(Tq(3, TurboQuantVariant::kMse, H), Mha(2, 2, 128), 40);       // bits only
  add(Tq(2, TurboQuantVariant::kMse, H), Mha(2, 2, 128), 41);       // tokens only
  add(Tq(2, TurboQuantVariant::kMse, H), Mha(2, 2, 128, DType::kBFloat16), 40);  // dtype only
  add(TqHq(2, H), Mha(2, 2, 128), 40);                              // variant
  add(TqHq(2, H), Mha(2, 2, 128), 40, 1);                           // generation only
  add(TqHq(2, H), Mha(2, 2, 128), 40, 2);                           // generation only
  add(Tq(2, TurboQuantVariant::kMse, H, TurboQuantSplit::k2p5), Mha(2, 2, 128), 40);
  add(Tq(2, TurboQuantVariant::kMse, H, TurboQuantSplit::k2p5), Mha(2, 2, 128), 40, 1);
  add(Tq(2, TurboQuantVariant::kMse, H, TurboQuantSplit::k2p5), Mha(2, 2, 128), 40, 2, false);
  add(Tq(3, TurboQuantVariant::kMse, H, TurboQuantSplit::k3p5), Mha(2, 2, 128), 40);
  add(Tq(3, TurboQuantVariant::kMse, TurboQuantRotation::kDense), Mha(2, 2, 128), 40);
  add(Tq(2, TurboQuantVariant::kMse, H), Mha(2, 2, 64), 40);        // generic kernels
  for (Item& it : items) {
    const ChunkShape shape{it.l, it.T, 0, false};
    it.in = MakeInput(it.l, it.T, 31 + it.T);
    it.cpu_body.resize(c.BodySize(it.p, shape));
    ASSERT_TRUE(c.EncodeHost(it.p, shape, it.in.data(), absl::MakeSpan(it.cpu_body)).ok());
    it.cpu_out.assign(it.in.size(), 0x5A);
    ASSERT_TRUE(c.DecodeHost(it.p, shape, it.cpu_body,
                             Contiguous(it.cpu_out.data(), it.l, it.T, MemorySpace::kHost))
                    .ok());
  }
  // One device encode + decode of item i; returns the number of differing bytes (or ~0 on a
  // failed call). Testing switches are process-wide, so the threaded round keeps them fixed.
  auto run = [&](const Item& it, bool set_switches) -> size_t {
    if (set_switches) {
      TqSetKernelGenerationForTesting(it.generation);
      TqSetSplitKernelsForTesting(it.split_kernels);
    }
    const ChunkShape shape{it.l, it.T, 0, false};
    DevBuf d_in(it.in.size()), d_body(it.cpu_body.size()), d_out(it.in.size());
    if (cudaMemcpy(d_in.p, it.in.data(), it.in.size(), cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemset(d_body.p, 0xA5, it.cpu_body.size()) != cudaSuccess ||
        cudaMemset(d_out.p, 0xC3, it.in.size()) != cudaSuccess) {
      return ~size_t{0};
    }
    if (!c.EncodeDevice(it.p, shape, d_in.p, d_body.p).ok()) return ~size_t{0};
    std::vector<uint8_t> body(it.cpu_body.size()), out(it.in.size());
    if (cudaMemcpy(body.data(), d_body.p, body.size(), cudaMemcpyDeviceToHost) != cudaSuccess) {
      return ~size_t{0};
    }
    if (!c.DecodeDevice(it.p, shape, d_body.p,
                        Contiguous(d_out.u8(), it.l, it.T, MemorySpace::kDevice)).ok() ||
        cudaMemcpy(out.data(), d_out.p, out.size(), cudaMemcpyDeviceToHost) != cudaSuccess) {
      return ~size_t{0};
    }
    size_t diff = 0;
    for (size_t i = 0; i < body.size(); ++i) diff += body[i] != it.cpu_body[i];
    for (size_t i = 0; i < out.size(); ++i) diff += out[i] != it.cpu_out[i];
    return diff;
  };
  for (bool cache : {true, false}) {
    TqSetLaunchCacheForTesting(cache);
    for (int round = 0; round < 2; ++round) {
      for (size_t j = 0; j < items.size(); ++j) {
        const size_t i = round == 0 ? j : items.size() - 1 - j;
        SCOPED_TRACE("cache " + std::to_string(cache) + " round " + std::to_string(round) +
                     " item " + std::to_string(i));
        EXPECT_EQ(run(items[i], true), 0u);
      }
    }
  }
  TqSetLaunchCacheForTesting(true);
  TqSetKernelGenerationForTesting(kDefaultGeneration);
  TqSetSplitKernelsForTesting(true);
  std::vector<size_t> diffs(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 3; ++rep) {
        for (size_t i = t; i < items.size(); i += 4) {
          if (items[i].generation == 2 && items[i].split_kernels) diffs[t] += run(items[i], false);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(diffs[t], 0u) << "thread " << t;
  // Refusals are not cached: an incompatible split (head_dim 64) fails every time, and a cached
  // configuration still checks each decode target.
  const KvLayout l64 = Mha(1, 1, 64);
  DevBuf d(1 << 20);
  for (int rep = 0; rep < 2; ++rep) {
    EXPECT_FALSE(c.EncodeDevice(Tq(2, TurboQuantVariant::kMse, H, TurboQuantSplit::k2p5),
                                ChunkShape{l64, 8, 0, false}, d.p, d.p)
                     .ok());
    DecodeTarget bad = Contiguous(d.u8(), items[0].l, items[0].T, MemorySpace::kDevice);
    bad.dtype = DType::kBFloat16;
    EXPECT_FALSE(c.DecodeDevice(items[0].p, ChunkShape{items[0].l, items[0].T, 0, false}, d.p, bad)
                     .ok());
    bad = Contiguous(d.u8(), items[0].l, items[0].T, MemorySpace::kDevice);
    bad.layer_base.pop_back();
    EXPECT_FALSE(c.DecodeDevice(items[0].p, ChunkShape{items[0].l, items[0].T, 0, false}, d.p, bad)
                     .ok());
  }
}

TEST(TurboQuantGpuTest, PagedDeviceDecodeMatchesHostDecode) {
  const CodecImpl& c = TurboQuantCodec();
  const KvLayout l = Mha(2, 2, 128);
  const uint32_t T = 12, bs = 4;
  // The fixed-point cases: with pad 32 the tensor-core kernels (rows 16-byte aligned), with pad 2
  // the generic ones.
  const CodecParams params[8] = {
      Tq(3, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard, TurboQuantSplit::k3p5),
      Tq(4, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard),
      Tq(2, TurboQuantVariant::kProd, TurboQuantRotation::kHadamard),
      Tq(3, TurboQuantVariant::kProd, TurboQuantRotation::kDense),
      TqHq(3, TurboQuantRotation::kHadamard),
      TqFx(3, TurboQuantVariant::kMse, TurboQuantRotation::kDense),
      TqFx(2, TurboQuantVariant::kProd, TurboQuantRotation::kDense),
      TqFx(3, TurboQuantVariant::kProd, TurboQuantRotation::kHadamard)};
  for (const CodecParams& p : params) {
    for (int64_t pad : {32, 2}) {
      SCOPED_TRACE(std::to_string(int(p.bits)) + " pad " + std::to_string(pad));
      const ChunkShape shape{l, T, 0, false};
      const auto in = MakeInput(l, T, 9);
      std::vector<uint8_t> body(c.BodySize(p, shape));
      ASSERT_TRUE(c.EncodeHost(p, shape, in.data(), absl::MakeSpan(body)).ok());
      const int32_t table[3] = {5, 2, 0};
      const int64_t st_tok = 2 * 2 * 128 * 2 + pad, st_block = bs * st_tok;
      const size_t pool_bytes = 2 * 6 * st_block;
      auto make_target = [&](uint8_t* base, MemorySpace space) {
        DecodeTarget t;
        t.space = space;
        t.dtype = l.dtype;
        t.stride_token = st_tok;
        t.stride_head = 2 * 128 * 2;
        t.stride_kv = 128 * 2;
        t.block_table = table;
        t.block_size = bs;
        t.stride_block = st_block;
        t.layer_base = {base, base + 6 * st_block};
        return t;
      };
      std::vector<uint8_t> host_pool(pool_bytes, 0xCD), dev_pool(pool_bytes);
      ASSERT_TRUE(
          c.DecodeHost(p, shape, body, make_target(host_pool.data(), MemorySpace::kHost)).ok());
      DevBuf d_body(body.size()), d_pool(pool_bytes);
      ASSERT_EQ(cudaMemcpy(d_body.p, body.data(), body.size(), cudaMemcpyHostToDevice),
                cudaSuccess);
      ASSERT_EQ(cudaMemset(d_pool.p, 0xCD, pool_bytes), cudaSuccess);
      ASSERT_TRUE(
          c.DecodeDevice(p, shape, d_body.p, make_target(d_pool.u8(), MemorySpace::kDevice)).ok());
      ASSERT_EQ(cudaMemcpy(dev_pool.data(), d_pool.p, pool_bytes, cudaMemcpyDeviceToHost),
                cudaSuccess);
      EXPECT_TRUE(host_pool == dev_pool);
    }
  }
}

// Scalars at the edges of fp16 (the largest finite norms, the smallest subnormals: outputs that
// round to fp16 subnormals) decode on the device exactly as on the host, on the quad path (fp16,
// bf16) and the register path (fp32), mse and prod with qjl=hadamard, and with fixed-point
// dense matrices (the tensor-core kernels; the generic ones for fp32) (the prod scalars are
// norm, gamma pairs, so there the edits hit gammas and one norm). (Non-finite norms are left out: 0 * inf gives NaNs whose
// sign differs between x86 and the GPU.)
TEST(TurboQuantGpuTest, ExtremeNormsDecodeLikeHost) {
  const CodecImpl& c = TurboQuantCodec();
  for (DType dt : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    for (uint8_t b : {1, 3}) {
      SCOPED_TRACE(std::to_string(int(dt)) + " b" + std::to_string(b));
      const KvLayout l = Mha(1, 2, 128, dt);
      const uint32_t T = 16;
      const ChunkShape shape{l, T, 0, false};
      // Hadamard mse and prod (qjl=hadamard); fixed-point dense mse and prod (the tensor-core
      // kernels for fp16 / bf16, the generic ones for fp32).
      const CodecParams ps[4] = {Tq(b, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard),
                                 TqHq(b, TurboQuantRotation::kHadamard),
                                 TqFx(b, TurboQuantVariant::kMse, TurboQuantRotation::kDense),
                                 TqFx(b, TurboQuantVariant::kProd, TurboQuantRotation::kDense)};
      for (int which = 0; which < 4; ++which) {
        const CodecParams& p = ps[which];
        SCOPED_TRACE(p.ToString());
        const auto in = MakeInput(l, T, 31);
        std::vector<uint8_t> body(c.BodySize(p, shape));
        ASSERT_TRUE(c.EncodeHost(p, shape, in.data(), absl::MakeSpan(body)).ok());
        uint16_t* sc = reinterpret_cast<uint16_t*>(body.data());  // no masks: scalars first
        sc[1] = 0x7BFF;  // 65504
        sc[5] = 0x0001;  // 2^-24
        sc[9] = 0xFBFF;  // -65504
        sc[12] = 0x0010;  // 2^-20
        std::vector<uint8_t> cpu_out(in.size(), 0x11), gpu_out(in.size());
        ASSERT_TRUE(
            c.DecodeHost(p, shape, body, Contiguous(cpu_out.data(), l, T, MemorySpace::kHost)).ok());
        DevBuf d_body(body.size()), d_out(in.size());
        ASSERT_EQ(cudaMemcpy(d_body.p, body.data(), body.size(), cudaMemcpyHostToDevice), cudaSuccess);
        ASSERT_EQ(cudaMemset(d_out.p, 0x22, in.size()), cudaSuccess);
        ASSERT_TRUE(c.DecodeDevice(p, shape, d_body.p,
                                   Contiguous(d_out.u8(), l, T, MemorySpace::kDevice))
                        .ok());
        ASSERT_EQ(cudaMemcpy(gpu_out.data(), d_out.p, in.size(), cudaMemcpyDeviceToHost), cudaSuccess);
        size_t diff = 0;
        for (size_t i = 0; i < in.size(); ++i) diff += gpu_out[i] != cpu_out[i];
        EXPECT_EQ(diff, 0u);
      }
    }
  }
}

// Information only (no assertion on speed): encode and decode of a Llama-3.1-8B-shaped chunk
// (32 layers, 8 KV heads, head_dim 128, 512 tokens = 64 MiB fp16), as a ratio to a
// device-to-device copy measured in the same run (bytes = fp16 side + body side).
TEST(TurboQuantGpuTest, ReportsThroughput) {
  const CodecImpl& c = TurboQuantCodec();
  const KvLayout l = Mha(32, 8, 128);
  const uint32_t T = 512;
  const ChunkShape shape{l, T, 0, false};
  const auto in = MakeInput(l, T, 5);
  DevBuf d_in(in.size()), d_out(in.size()), d_copy(in.size()), d_body(in.size());
  ASSERT_EQ(cudaMemcpy(d_in.p, in.data(), in.size(), cudaMemcpyHostToDevice), cudaSuccess);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  auto median_ms = [&](auto fn) {
    fn();
    fn();
    std::vector<float> ms;
    for (int i = 0; i < 9; ++i) {
      cudaEventRecord(e0, 0);
      fn();
      cudaEventRecord(e1, 0);
      cudaEventSynchronize(e1);
      float m = 0;
      cudaEventElapsedTime(&m, e0, e1);
      ms.push_back(m);
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  };
  const float copy_ms = median_ms(
      [&] { cudaMemcpyAsync(d_copy.p, d_in.p, in.size(), cudaMemcpyDeviceToDevice, 0); });
  const double copy_gbs = 2.0 * in.size() / copy_ms / 1e6;
  std::printf("d2d copy: %.3f ms, %.1f GB/s (read + write)\n", copy_ms, copy_gbs);
  struct Config {
    std::string name;
    CodecParams p;
    int generation = kDefaultGeneration;
    bool fx_register_path = true;  // TqSetFixedRegisterPathForTesting
  };
  std::vector<Config> configs;
  for (auto rot : {TurboQuantRotation::kHadamard, TurboQuantRotation::kDense}) {
    const std::string rn = rot == TurboQuantRotation::kDense ? "dense" : "hadamard";
    for (auto var : {TurboQuantVariant::kMse, TurboQuantVariant::kProd}) {
      for (uint8_t b : {1, 2, 3, 4}) {
        configs.push_back({rn + (var == TurboQuantVariant::kProd ? " prod b=" : " mse b=") +
                               std::to_string(b),
                           Tq(b, var, rot)});
      }
    }
    if (rot == TurboQuantRotation::kHadamard) {
      for (uint8_t b : {1, 2, 3, 4}) {
        configs.push_back({rn + " prod b=" + std::to_string(b) + " qjl=hadamard", TqHq(b, rot)});
        configs.push_back({rn + " prod b=" + std::to_string(b) + " qjl=hadamard gen1", TqHq(b, rot), 1});
        configs.push_back({rn + " prod b=" + std::to_string(b) + " qjl=hadamard gen3", TqHq(b, rot), 3});
        configs.push_back({rn + " prod b=" + std::to_string(b) + " qjl=hadamard gen2", TqHq(b, rot), 2});
        configs.push_back({rn + " prod b=" + std::to_string(b) + " qjl=hadamard gen5", TqHq(b, rot), 5});
        configs.push_back({rn + " prod b=" + std::to_string(b) + " qjl=hadamard gen6", TqHq(b, rot), 6});
        configs.push_back({rn + " prod b=" + std::to_string(b) + " qjl=hadamard gen4", TqHq(b, rot), 4});
        configs.push_back({rn + " prod b=" + std::to_string(b) + " qjl=hadamard gen7", TqHq(b, rot), 7});
      }
    }
    configs.push_back({rn + " mse 2.5",
                       Tq(2, TurboQuantVariant::kMse, rot, TurboQuantSplit::k2p5)});
    configs.push_back({rn + " mse 3.5",
                       Tq(3, TurboQuantVariant::kMse, rot, TurboQuantSplit::k3p5)});
  }
  // Fixed-point matrices (matrix=fixed, the text default wherever a matrix is used).
  for (uint8_t b : {1, 2, 3, 4}) {
    const std::string bs = " b=" + std::to_string(b);
    configs.push_back({"dense mse" + bs + " fixed",
                       TqFx(b, TurboQuantVariant::kMse, TurboQuantRotation::kDense)});
    configs.push_back({"dense prod" + bs + " fixed",
                       TqFx(b, TurboQuantVariant::kProd, TurboQuantRotation::kDense)});
    configs.push_back({"hadamard prod" + bs + " qjl=gaussian fixed",
                       TqFx(b, TurboQuantVariant::kProd, TurboQuantRotation::kHadamard)});
    configs.push_back({"dense mse" + bs + " fixed smem",
                       TqFx(b, TurboQuantVariant::kMse, TurboQuantRotation::kDense), 2, false});
  }
  // KVTIER_TQ_SPEED_FILTER=S keeps the configurations whose name contains S (a shorter run).
  if (const char* f = std::getenv("KVTIER_TQ_SPEED_FILTER")) {
    std::vector<Config> kept;
    for (const Config& cfg : configs) {
      if (cfg.name.find(f) != std::string::npos) kept.push_back(cfg);
    }
    configs = kept;
  }
  const DecodeTarget t = Contiguous(d_out.u8(), l, T, MemorySpace::kDevice);
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::string json = "{\n  \"device\": \"" + std::string(prop.name) +
                     "\",\n  \"shape\": \"32 layers x 8 KV heads x head_dim 128 x 512 tokens, fp16\",\n"
                     "  \"fp16_bytes\": " + std::to_string(in.size()) +
                     ",\n  \"d2d_copy_gbs\": " + std::to_string(copy_gbs) + ",\n  \"codecs\": [\n";
  for (const Config& cfg : configs) {
    const std::string& name = cfg.name;
    const CodecParams& p = cfg.p;
    TqSetKernelGenerationForTesting(cfg.generation);
    TqSetFixedRegisterPathForTesting(cfg.fx_register_path);
    const size_t body = c.BodySize(p, shape);
    const float enc = median_ms([&] { (void)c.EncodeDevice(p, shape, d_in.p, d_body.p); });
    const float dec = median_ms([&] { (void)c.DecodeDevice(p, shape, d_body.p, t); });
    // Kernel-side time: 10 back-to-back calls without the per-call synchronize, divided by 10.
    auto plan = MakeTqPlan(p, shape);
    ASSERT_TRUE(plan.ok());
    const float enc_k = median_ms([&] {
                          for (int i = 0; i < 10; ++i) (void)TqEncodeOnDevice(*plan, d_in.p, d_body.p, false);
                        }) / 10.0f;
    const float dec_k = median_ms([&] {
                          for (int i = 0; i < 10; ++i) (void)TqDecodeOnDevice(*plan, d_body.p, t, false);
                        }) / 10.0f;
    cudaDeviceSynchronize();
    const double bytes = double(in.size()) + double(body);
    std::printf("turboquant %-18s encode %.3f ms %6.1f GB/s (%.2f of copy; kernels %.3f ms, %.2f)  "
                "decode %.3f ms %6.1f GB/s (%.2f of copy; kernels %.3f ms, %.2f)\n",
                name.c_str(), enc, bytes / enc / 1e6, bytes / enc / 1e6 / copy_gbs, enc_k,
                bytes / enc_k / 1e6 / copy_gbs, dec, bytes / dec / 1e6, bytes / dec / 1e6 / copy_gbs,
                dec_k, bytes / dec_k / 1e6 / copy_gbs);
    json += "    {\"codec\": \"turboquant " + name + "\", \"body_bytes\": " + std::to_string(body) +
            ", \"encode_ms\": " + std::to_string(enc) + ", \"decode_ms\": " + std::to_string(dec) +
            ", \"encode_ratio_to_copy\": " + std::to_string(bytes / enc / 1e6 / copy_gbs) +
            ", \"decode_ratio_to_copy\": " + std::to_string(bytes / dec / 1e6 / copy_gbs) +
            ", \"encode_kernels_ms\": " + std::to_string(enc_k) +
            ", \"decode_kernels_ms\": " + std::to_string(dec_k) + "}" +
            (&cfg == &configs.back() ? "\n" : ",\n");
  }
  TqSetKernelGenerationForTesting(kDefaultGeneration);
  TqSetFixedRegisterPathForTesting(true);
  json += "  ]\n}\n";
  // Optional copy of the figures for bench/results/ (tests write nothing unless asked).
  WriteIfAsked("KVTIER_TQ_SPEED_JSON", json);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
}

// Information only: throughput through the codec's stream forms (CodecImpl::EncodeDeviceOn /
// DecodeDeviceOn, as GpuStager runs them): Llama-3.1-8B-shaped 256-token chunks (32 layers x 8
// KV heads x head_dim 128, 32 MiB of fp16 each), 8 chunks back to back on one stream per
// measurement (256 MiB of fp16, cycling over 4 buffers), one synchronize at the end; the
// reference is 8 device-to-device copies of the same chunks on the same stream, measured the same
// way in the same run. Ratio = (fp16 bytes + body bytes) / time / copy bandwidth (read + write).
// Median of 5 measurements after a warm-up. KVTIER_TQ_STREAM_JSON=PATH writes the figures;
// KVTIER_TQ_SPEED_FILTER=S keeps configurations whose name contains S.
TEST(TurboQuantGpuTest, ReportsStreamThroughput) {
  const CodecImpl& c = TurboQuantCodec();
  const KvLayout l = Mha(32, 8, 128);
  const uint32_t T = 256;
  const ChunkShape shape{l, T, 0, false};
  constexpr int kBufs = 4, kCalls = 8;
  const auto in = MakeInput(l, T, 9);
  std::vector<std::unique_ptr<DevBuf>> d_in, d_body, d_out;
  for (int i = 0; i < kBufs; ++i) {
    d_in.push_back(std::make_unique<DevBuf>(in.size()));
    d_body.push_back(std::make_unique<DevBuf>(in.size()));
    d_out.push_back(std::make_unique<DevBuf>(in.size()));
    ASSERT_EQ(cudaMemcpy(d_in.back()->p, in.data(), in.size(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  // Median ms of one batch of kCalls calls of fn(i).
  auto batch_ms = [&](auto fn) {
    for (int i = 0; i < kCalls; ++i) fn(i);
    cudaStreamSynchronize(stream);
    std::vector<float> ms;
    for (int rep = 0; rep < 5; ++rep) {
      cudaEventRecord(e0, stream);
      for (int i = 0; i < kCalls; ++i) fn(i);
      cudaEventRecord(e1, stream);
      cudaEventSynchronize(e1);
      float m = 0;
      cudaEventElapsedTime(&m, e0, e1);
      ms.push_back(m);
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  };
  const float copy_ms = batch_ms([&](int i) {
    cudaMemcpyAsync(d_out[i % kBufs]->p, d_in[i % kBufs]->p, in.size(), cudaMemcpyDeviceToDevice, stream);
  });
  const double copy_gbs = 2.0 * in.size() * kCalls / copy_ms / 1e6;
  std::printf("stream d2d copy: %d x %zu bytes in %.3f ms, %.1f GB/s (read + write)\n", kCalls,
              in.size(), copy_ms, copy_gbs);
  const auto D = TurboQuantRotation::kDense, H = TurboQuantRotation::kHadamard;
  const auto mse = TurboQuantVariant::kMse, prod = TurboQuantVariant::kProd;
  struct Config {
    std::string first;
    CodecParams second;
    int generation = kDefaultGeneration;
  };
  std::vector<Config> configs;
  for (uint8_t b = 1; b <= 4; ++b) {
    const std::string bs = " b=" + std::to_string(b);
    configs.push_back({"hadamard mse" + bs, Tq(b, mse, H)});
    configs.push_back({"hadamard prod" + bs + " qjl=hadamard", TqHq(b, H)});
    configs.push_back({"hadamard prod" + bs + " qjl=hadamard gen2", TqHq(b, H), 2});
    configs.push_back({"hadamard prod" + bs + " qjl=hadamard gen6", TqHq(b, H), 6});
    configs.push_back({"hadamard prod" + bs + " qjl=hadamard gen4", TqHq(b, H), 4});
    configs.push_back({"hadamard prod" + bs + " qjl=hadamard gen7", TqHq(b, H), 7});
    configs.push_back({"hadamard prod" + bs + " qjl=gaussian fixed", TqFx(b, prod, H)});
    configs.push_back({"dense mse" + bs + " fixed", TqFx(b, mse, D)});
    configs.push_back({"dense prod" + bs + " fixed", TqFx(b, prod, D)});
  }
  configs.push_back({"hadamard mse 2.5", Tq(2, mse, H, TurboQuantSplit::k2p5)});
  configs.push_back({"hadamard mse 3.5", Tq(3, mse, H, TurboQuantSplit::k3p5)});
  configs.push_back({"dense mse b=3 float", Tq(3, mse, D)});
  configs.push_back({"hadamard prod b=3 qjl=gaussian float", Tq(3, prod, H)});
  if (const char* f = std::getenv("KVTIER_TQ_SPEED_FILTER")) {
    std::vector<Config> kept;
    for (const auto& cfg : configs) {
      if (cfg.first.find(f) != std::string::npos) kept.push_back(cfg);
    }
    configs = kept;
  }
  std::string json = "{\n  \"shape\": \"32 layers x 8 KV heads x head_dim 128 x 256 tokens, fp16\",\n"
                     "  \"chunks_per_measurement\": " + std::to_string(kCalls) +
                     ",\n  \"fp16_bytes_per_chunk\": " + std::to_string(in.size()) +
                     ",\n  \"d2d_copy_gbs\": " + std::to_string(copy_gbs) + ",\n  \"codecs\": [\n";
  for (size_t k = 0; k < configs.size(); ++k) {
    const std::string& name = configs[k].first;
    const CodecParams& p = configs[k].second;
    TqSetKernelGenerationForTesting(configs[k].generation);
    const size_t body = c.BodySize(p, shape);
    absl::Status st;
    const float enc = batch_ms([&](int i) {
      st.Update(c.EncodeDeviceOn(p, shape, d_in[i % kBufs]->p, d_body[i % kBufs]->p, stream));
    });
    const float dec = batch_ms([&](int i) {
      st.Update(c.DecodeDeviceOn(p, shape, d_body[i % kBufs]->p,
                                 Contiguous(d_out[i % kBufs]->u8(), l, T, MemorySpace::kDevice),
                                 stream));
    });
    ASSERT_TRUE(st.ok()) << name << ": " << st;
    const double bytes = (double(in.size()) + double(body)) * kCalls;
    const double er = bytes / enc / 1e6 / copy_gbs, dr = bytes / dec / 1e6 / copy_gbs;
    std::printf("turboquant %-34s encode %.3f ms (%.2f of copy)  decode %.3f ms (%.2f of copy)\n",
                name.c_str(), enc, er, dec, dr);
    json += "    {\"codec\": \"turboquant " + name + "\", \"body_bytes\": " + std::to_string(body) +
            ", \"encode_batch_ms\": " + std::to_string(enc) + ", \"decode_batch_ms\": " +
            std::to_string(dec) + ", \"encode_ratio_to_copy\": " + std::to_string(er) +
            ", \"decode_ratio_to_copy\": " + std::to_string(dr) + "}" +
            (k + 1 == configs.size() ? "\n" : ",\n");
  }
  TqSetKernelGenerationForTesting(kDefaultGeneration);
  json += "  ]\n}\n";
  WriteIfAsked("KVTIER_TQ_STREAM_JSON", json);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(stream);
}

// Information only: the 2.5 / 3.5 splits (mse, Hadamard) on a Llama-3.1-8B-shaped 256-token
// chunk (32 layers x 8 KV heads x head_dim 128, 32 MiB of fp16), split kernels beside the generic
// kernels they replace, as a ratio to a device-to-device copy of the same bytes in the same run.
TEST(TurboQuantGpuTest, ReportsSplitThroughput) {
  const CodecImpl& c = TurboQuantCodec();
  const KvLayout l = Mha(32, 8, 128);
  const uint32_t T = 256;
  const ChunkShape shape{l, T, 0, false};
  const auto in = MakeInput(l, T, 5);
  DevBuf d_in(in.size()), d_out(in.size()), d_copy(in.size()), d_body(in.size());
  ASSERT_EQ(cudaMemcpy(d_in.p, in.data(), in.size(), cudaMemcpyHostToDevice), cudaSuccess);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  auto median_ms = [&](auto fn) {
    fn();
    fn();
    std::vector<float> ms;
    for (int i = 0; i < 15; ++i) {
      cudaEventRecord(e0, 0);
      fn();
      cudaEventRecord(e1, 0);
      cudaEventSynchronize(e1);
      float m = 0;
      cudaEventElapsedTime(&m, e0, e1);
      ms.push_back(m);
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  };
  const float copy_ms = median_ms(
      [&] { cudaMemcpyAsync(d_copy.p, d_in.p, in.size(), cudaMemcpyDeviceToDevice, 0); });
  const double copy_gbs = 2.0 * in.size() / copy_ms / 1e6;
  std::printf("split report: d2d copy of %zu bytes: %.4f ms, %.1f GB/s (read + write)\n", in.size(),
              copy_ms, copy_gbs);
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::string json = "{\n  \"device\": \"" + std::string(prop.name) +
                     "\",\n  \"shape\": \"32 layers x 8 KV heads x head_dim 128 x 256 tokens, fp16\",\n"
                     "  \"fp16_bytes\": " + std::to_string(in.size()) +
                     ",\n  \"d2d_copy_gbs\": " + std::to_string(copy_gbs) + ",\n  \"codecs\": [\n";
  const DecodeTarget t = Contiguous(d_out.u8(), l, T, MemorySpace::kDevice);
  bool first = true;
  for (auto split : {TurboQuantSplit::k2p5, TurboQuantSplit::k3p5}) {
    const CodecParams p = Tq(split == TurboQuantSplit::k2p5 ? 2 : 3, TurboQuantVariant::kMse,
                             TurboQuantRotation::kHadamard, split);
    auto plan = MakeTqPlan(p, shape);
    ASSERT_TRUE(plan.ok());
    const size_t body = c.BodySize(p, shape);
    const double bytes = double(in.size()) + double(body);
    for (int generation : {1, 2}) {
      TqSetKernelGenerationForTesting(generation);
      const float enc = median_ms([&] { (void)c.EncodeDevice(p, shape, d_in.p, d_body.p); });
      const float dec = median_ms([&] { (void)c.DecodeDevice(p, shape, d_body.p, t); });
      const float enc_k = median_ms([&] {
                            for (int i = 0; i < 10; ++i) (void)TqEncodeOnDevice(*plan, d_in.p, d_body.p, false);
                          }) / 10.0f;
      const float dec_k = median_ms([&] {
                            for (int i = 0; i < 10; ++i) (void)TqDecodeOnDevice(*plan, d_body.p, t, false);
                          }) / 10.0f;
      cudaDeviceSynchronize();
      const std::string name = std::string("hadamard mse ") +
                               (split == TurboQuantSplit::k2p5 ? "2.5" : "3.5") +
                               (generation == 1 ? " split kernels gen1" : " split kernels gen2");
      const double er = bytes / enc / 1e6 / copy_gbs, dr = bytes / dec / 1e6 / copy_gbs;
      std::printf("turboquant %-34s encode %.4f ms (%.2f of copy; kernels %.4f ms, %.2f)  decode %.4f "
                  "ms (%.2f of copy; kernels %.4f ms, %.2f)\n",
                  name.c_str(), enc, er, enc_k, bytes / enc_k / 1e6 / copy_gbs, dec, dr, dec_k,
                  bytes / dec_k / 1e6 / copy_gbs);
      json += std::string(first ? "" : ",\n") + "    {\"codec\": \"turboquant " + name +
              "\", \"body_bytes\": " + std::to_string(body) +
              ", \"encode_ms\": " + std::to_string(enc) + ", \"decode_ms\": " + std::to_string(dec) +
              ", \"encode_ratio_to_copy\": " + std::to_string(er) +
              ", \"decode_ratio_to_copy\": " + std::to_string(dr) +
              ", \"encode_kernels_ms\": " + std::to_string(enc_k) +
              ", \"decode_kernels_ms\": " + std::to_string(dec_k) + "}";
      first = false;
    }
  }
  TqSetKernelGenerationForTesting(kDefaultGeneration);
  json += "\n  ]\n}\n";
  WriteIfAsked("KVTIER_TQ_SPLIT_SPEED_JSON", json);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
}

// Information only: the per-call host overhead of the device entry points. For 256- and 512-token
// Llama-3.1-8B-shaped chunks, Hadamard mse b = 2..4, prod qjl=hadamard b = 1..4 and the
// 2.5 / 3.5 splits, encode and decode, with the launch cache (the default) and without it (every
// call prepares plan and kernel parameters, as before), alternating, two rounds. Per
// configuration: "call" = one EncodeDevice / DecodeDevice between two events (host work, launch
// and the final synchronize included, as in ReportsThroughput), "kernels" = 10 back-to-back calls
// without the synchronize / 10, "host" = wall-clock microseconds until a call without the
// synchronize returns (host work + launch API). References, same bracket: "copy" = one
// cudaMemcpyAsync device-to-device (no synchronize inside the bracket: the definition the ratios
// use), "copy+sync" = the same copy followed by cudaStreamSynchronize inside the bracket (like for
// like with "call"), "floor" = a 16-byte cudaMemsetAsync + cudaStreamSynchronize (one launch and
// one synchronize, no work), and the same split into its parts with empty kernels
// (TqLaunchProbeForTesting). KVTIER_TQ_OVERHEAD_JSON=PATH writes the figures.
TEST(TurboQuantGpuTest, ReportsHostOverhead) {
  const CodecImpl& c = TurboQuantCodec();
  LaunchCacheGuard restore;
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  auto median_ms = [&](auto fn) {
    fn();
    fn();
    std::vector<float> ms;
    for (int i = 0; i < 15; ++i) {
      cudaEventRecord(e0, 0);
      fn();
      cudaEventRecord(e1, 0);
      cudaEventSynchronize(e1);
      float m = 0;
      cudaEventElapsedTime(&m, e0, e1);
      ms.push_back(m);
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  };
  // Host wall time of fn (which must not synchronize), then a synchronize outside the timing.
  auto median_host_us = [&](auto fn) {
    fn();
    cudaStreamSynchronize(0);
    std::vector<double> us;
    for (int i = 0; i < 15; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      fn();
      const auto t1 = std::chrono::steady_clock::now();
      cudaStreamSynchronize(0);
      us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    std::sort(us.begin(), us.end());
    return us[us.size() / 2];
  };
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::string json = "{\n  \"device\": \"" + std::string(prop.name) + "\",\n  \"runs\": [\n";
  const auto H = TurboQuantRotation::kHadamard;
  struct Config {
    std::string name;
    CodecParams p;
  };
  const std::vector<Config> configs = {
      {"hadamard mse b=2", Tq(2, TurboQuantVariant::kMse, H)},
      {"hadamard mse b=3", Tq(3, TurboQuantVariant::kMse, H)},
      {"hadamard mse b=4", Tq(4, TurboQuantVariant::kMse, H)},
      {"hadamard prod b=1 qjl=hadamard", TqHq(1, H)},
      {"hadamard prod b=2 qjl=hadamard", TqHq(2, H)},
      {"hadamard prod b=3 qjl=hadamard", TqHq(3, H)},
      {"hadamard prod b=4 qjl=hadamard", TqHq(4, H)},
      {"hadamard mse 2.5", Tq(2, TurboQuantVariant::kMse, H, TurboQuantSplit::k2p5)},
      {"hadamard mse 3.5", Tq(3, TurboQuantVariant::kMse, H, TurboQuantSplit::k3p5)}};
  bool first_run = true;
  for (uint32_t T : {256u, 512u}) {
    const KvLayout l = Mha(32, 8, 128);
    const ChunkShape shape{l, T, 0, false};
    const auto in = MakeInput(l, T, 5);
    DevBuf d_in(in.size()), d_out(in.size()), d_copy(in.size()), d_body(in.size()), d_small(16);
    ASSERT_EQ(cudaMemcpy(d_in.p, in.data(), in.size(), cudaMemcpyHostToDevice), cudaSuccess);
    const DecodeTarget t = Contiguous(d_out.u8(), l, T, MemorySpace::kDevice);
    const float copy_ms = median_ms(
        [&] { cudaMemcpyAsync(d_copy.p, d_in.p, in.size(), cudaMemcpyDeviceToDevice, 0); });
    const float copy_sync_ms = median_ms([&] {
      cudaMemcpyAsync(d_copy.p, d_in.p, in.size(), cudaMemcpyDeviceToDevice, 0);
      cudaStreamSynchronize(0);
    });
    const float floor_ms = median_ms([&] {
      cudaMemsetAsync(d_small.p, 0, 16, 0);
      cudaStreamSynchronize(0);
    });
    const double copy_gbs = 2.0 * in.size() / copy_ms / 1e6;
    const double copy_sync_gbs = 2.0 * in.size() / copy_sync_ms / 1e6;
    std::printf("overhead report T=%u: copy %.4f ms (%.1f GB/s), copy+sync %.4f ms (%.1f GB/s), "
                "floor %.4f ms\n", T, copy_ms, copy_gbs, copy_sync_ms, copy_sync_gbs, floor_ms);
    // Decomposition: host microseconds to enqueue a 16-byte memset and empty kernels with no,
    // TqDevParams-sized and split-sized parameters, and the same in the event bracket with the
    // synchronize (as "floor").
    std::string probes;
    {
      const double memset_h =
          median_host_us([&] { cudaMemsetAsync(d_small.p, 0, 16, 0); });
      probes += ", \"memset16_host_us\": " + std::to_string(memset_h);
      std::printf("  memset16 host %.2f us\n", memset_h);
      for (int kind = 0; kind < 3; ++kind) {
        ASSERT_EQ(TqLaunchProbeForTesting(kind), 0);
        const double h = median_host_us([&] { (void)TqLaunchProbeForTesting(kind); });
        const float ms = median_ms([&] {
          (void)TqLaunchProbeForTesting(kind);
          cudaStreamSynchronize(0);
        });
        probes += ", \"probe" + std::to_string(kind) + "_host_us\": " + std::to_string(h) +
                  ", \"probe" + std::to_string(kind) + "_sync_ms\": " + std::to_string(ms);
        std::printf("  empty kernel, params kind %d: host %.2f us, launch + sync %.4f ms\n", kind,
                    h, ms);
      }
    }
    json += std::string(first_run ? "" : ",\n") + "    {\"tokens\": " + std::to_string(T) +
            ", \"fp16_bytes\": " + std::to_string(in.size()) +
            ", \"d2d_copy_ms\": " + std::to_string(copy_ms) +
            ", \"d2d_copy_gbs\": " + std::to_string(copy_gbs) +
            ", \"d2d_copy_sync_ms\": " + std::to_string(copy_sync_ms) +
            ", \"d2d_copy_sync_gbs\": " + std::to_string(copy_sync_gbs) +
            ", \"floor_memset16_sync_ms\": " + std::to_string(floor_ms) + probes +
            ", \"codecs\": [\n";
    first_run = false;
    bool first = true;
    for (int round = 0; round < 2; ++round) {
      for (const Config& cfg : configs) {
        const size_t body = c.BodySize(cfg.p, shape);
        const double bytes = double(in.size()) + double(body);
        for (int k = 0; k < 2; ++k) {
          const bool cache = (k == 0) == (round == 0);  // round 0: cached first; round 1: uncached
          TqSetLaunchCacheForTesting(cache);
          const float enc = median_ms([&] { (void)c.EncodeDevice(cfg.p, shape, d_in.p, d_body.p); });
          const float dec = median_ms([&] { (void)c.DecodeDevice(cfg.p, shape, d_body.p, t); });
          const float enc_k = median_ms([&] {
                                for (int i = 0; i < 10; ++i)
                                  (void)TqEncodeDevice(cfg.p, shape, d_in.p, d_body.p, false);
                              }) / 10.0f;
          const float dec_k = median_ms([&] {
                                for (int i = 0; i < 10; ++i)
                                  (void)TqDecodeDevice(cfg.p, shape, d_body.p, t, false);
                              }) / 10.0f;
          const double enc_h = median_host_us(
              [&] { (void)TqEncodeDevice(cfg.p, shape, d_in.p, d_body.p, false); });
          const double dec_h = median_host_us(
              [&] { (void)TqDecodeDevice(cfg.p, shape, d_body.p, t, false); });
          cudaDeviceSynchronize();
          const std::string name = cfg.name + (cache ? " cached" : " uncached");
          std::printf("T=%u round %d %-40s encode %.4f ms (%.2f of copy, %.2f of copy+sync; "
                      "kernels %.4f, host %.1f us)  decode %.4f ms (%.2f, %.2f; kernels %.4f, "
                      "host %.1f us)\n",
                      T, round, name.c_str(), enc, bytes / enc / 1e6 / copy_gbs,
                      bytes / enc / 1e6 / copy_sync_gbs, enc_k, enc_h, dec,
                      bytes / dec / 1e6 / copy_gbs, bytes / dec / 1e6 / copy_sync_gbs, dec_k, dec_h);
          json += std::string(first ? "" : ",\n") + "      {\"codec\": \"turboquant " + name +
                  "\", \"round\": " + std::to_string(round) +
                  ", \"body_bytes\": " + std::to_string(body) +
                  ", \"encode_ms\": " + std::to_string(enc) +
                  ", \"decode_ms\": " + std::to_string(dec) +
                  ", \"encode_ratio_to_copy\": " + std::to_string(bytes / enc / 1e6 / copy_gbs) +
                  ", \"decode_ratio_to_copy\": " + std::to_string(bytes / dec / 1e6 / copy_gbs) +
                  ", \"encode_ratio_to_copy_sync\": " +
                  std::to_string(bytes / enc / 1e6 / copy_sync_gbs) +
                  ", \"decode_ratio_to_copy_sync\": " +
                  std::to_string(bytes / dec / 1e6 / copy_sync_gbs) +
                  ", \"encode_kernels_ms\": " + std::to_string(enc_k) +
                  ", \"decode_kernels_ms\": " + std::to_string(dec_k) +
                  ", \"encode_host_us\": " + std::to_string(enc_h) +
                  ", \"decode_host_us\": " + std::to_string(dec_h) + "}";
          first = false;
        }
      }
    }
    json += "\n    ]}";
  }
  json += "\n  ]\n}\n";
  WriteIfAsked("KVTIER_TQ_OVERHEAD_JSON", json);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
}

// Not a test: with KVTIER_TQ_PROFILE_ONCE set, one encode and one decode of each kernel under
// study (qjl=hadamard b = 1 and 4, the splits; generations 1-4) on a 256-token
// Llama-3.1-8B-shaped chunk, for a profiler that filters kernels by name. Skipped otherwise.
TEST(TurboQuantGpuTest, ProfileKernelsOnce) {
  if (std::getenv("KVTIER_TQ_PROFILE_ONCE") == nullptr) GTEST_SKIP() << "KVTIER_TQ_PROFILE_ONCE not set";
  const CodecImpl& c = TurboQuantCodec();
  const KvLayout l = Mha(32, 8, 128);
  const uint32_t T = 256;
  const ChunkShape shape{l, T, 0, false};
  const auto in = MakeInput(l, T, 5);
  DevBuf d_in(in.size()), d_out(in.size()), d_body(in.size());
  ASSERT_EQ(cudaMemcpy(d_in.p, in.data(), in.size(), cudaMemcpyHostToDevice), cudaSuccess);
  const DecodeTarget t = Contiguous(d_out.u8(), l, T, MemorySpace::kDevice);
  const CodecParams params[4] = {
      TqHq(1, TurboQuantRotation::kHadamard), TqHq(4, TurboQuantRotation::kHadamard),
      Tq(2, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard, TurboQuantSplit::k2p5),
      Tq(3, TurboQuantVariant::kMse, TurboQuantRotation::kHadamard, TurboQuantSplit::k3p5)};
  for (int generation : {1, 2, 3, 4, 6}) {
    TqSetKernelGenerationForTesting(generation);
    for (const CodecParams& p : params) {
      ASSERT_TRUE(c.EncodeDevice(p, shape, d_in.p, d_body.p).ok());
      ASSERT_TRUE(c.DecodeDevice(p, shape, d_body.p, t).ok());
    }
  }
  TqSetKernelGenerationForTesting(kDefaultGeneration);
}

}  // namespace
}  // namespace kvtier::kernels::internal
