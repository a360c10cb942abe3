// CUDA token selection against the CPU reference: SnapKV/H2O scores, SnapKV/PyramidKV/H2O kept
// sets (identical except where two CPU scores are within a stated tolerance of the cut), the
// tie rule, odd shapes and unsupported head dims. Seeded random inputs, never zeros.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kvtier/kernels/selection.h"
#include "selection/selection_timing.h"
#include "selection_test_data.h"

namespace kvtier::kernels {
namespace {

using ::testing::HasSubstr;

// Relative tolerance for GPU vs CPU scores (fp32, different summation order, exp2f).
constexpr double kScoreRelTol = 1e-4;

class DeviceBytes {
 public:
  explicit DeviceBytes(const std::vector<uint8_t>& host) : size_(host.size()) {
    EXPECT_EQ(cudaMalloc(&ptr_, size_), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(ptr_, host.data(), size_, cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceBytes() { cudaFree(ptr_); }
  const void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  size_t size_;
};

struct Case {
  testing::AttentionData data;
  DType dtype;
  std::vector<uint8_t> k, q;
  SelectionInput host;
};

Case MakeCase(uint32_t L, uint32_t H_kv, uint32_t H_q, uint32_t D, uint32_t T, uint32_t Wq,
              DType dtype, uint32_t seed) {
  Case c{testing::MakeAttentionData(L, H_kv, H_q, D, T, Wq, seed), dtype, {}, {}, {}};
  c.k = testing::Encode(c.data.keys, dtype);
  c.q = testing::Encode(c.data.queries, dtype);
  c.host.keys = c.k.data();
  c.host.queries = c.q.data();
  c.host.dtype = dtype;
  c.host.num_layers = L;
  c.host.num_kv_heads = H_kv;
  c.host.num_query_heads = H_q;
  c.host.head_dim = D;
  c.host.num_tokens = T;
  c.host.num_queries = Wq;
  return c;
}

void ExpectScoresClose(const std::vector<float>& cpu, const std::vector<float>& gpu) {
  ASSERT_EQ(cpu.size(), gpu.size());
  size_t bad = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    const double tol = kScoreRelTol * std::abs(cpu[i]) + 1e-7;
    if (!(std::abs(double(cpu[i]) - gpu[i]) <= tol)) {
      if (++bad < 5) ADD_FAILURE() << "score " << i << ": cpu " << cpu[i] << " gpu " << gpu[i];
    }
  }
  EXPECT_EQ(bad, 0u);
}

std::vector<float> Pool(const std::vector<float>& s, size_t off, uint32_t n, Pooling pooling,
                        uint32_t kernel) {
  std::vector<float> out(n);
  const int half = kernel / 2;
  for (int t = 0; t < int(n); ++t) {
    const int lo = std::max(0, t - half), hi = std::min(int(n) - 1, t + half);
    float v = pooling == Pooling::kMax ? s[off + lo] : 0.0f;
    for (int j = lo; j <= hi; ++j) {
      v = pooling == Pooling::kMax ? std::max(v, s[off + j]) : v + s[off + j];
    }
    out[t] = pooling == Pooling::kMax ? v : v / float(kernel);
  }
  return out;
}

// Same counts; the kept sets of each (layer, head) equal, except positions whose CPU (pooled)
// score lies within kScoreRelTol of that head's cut score (the cap-th largest).
void ExpectSameKeptSets(const Selection& cpu, const Selection& gpu,
                        const std::vector<float>& cpu_scores, size_t stride, uint32_t num_scored,
                        Pooling pooling, uint32_t kernel, int* near_tie_swaps) {
  ASSERT_TRUE(gpu.Validate().ok()) << gpu.Validate();
  ASSERT_EQ(cpu.kept_per_layer, gpu.kept_per_layer);
  const uint32_t tail = cpu.num_tokens - num_scored;
  for (uint32_t l = 0; l < cpu.num_layers; ++l) {
    for (uint32_t h = 0; h < cpu.num_kv_heads; ++h) {
      auto a = cpu.Kept(l, h), b = gpu.Kept(l, h);
      if (std::equal(a.begin(), a.end(), b.begin(), b.end())) continue;
      auto pooled = Pool(cpu_scores, (size_t(l) * cpu.num_kv_heads + h) * stride, num_scored,
                         pooling, kernel);
      const uint32_t cap = cpu.kept_per_layer[l] - tail;
      std::vector<float> sorted = pooled;
      std::sort(sorted.begin(), sorted.end(), std::greater<float>());
      const float cut = sorted[cap - 1];
      std::vector<uint32_t> diff;
      std::set_symmetric_difference(a.begin(), a.end(), b.begin(), b.end(),
                                    std::back_inserter(diff));
      for (uint32_t t : diff) {
        ASSERT_LT(t, num_scored) << "window/recent token differs";
        EXPECT_LE(std::abs(double(pooled[t]) - cut), kScoreRelTol * cut + 1e-7)
            << "layer " << l << " head " << h << " position " << t << " score " << pooled[t]
            << " cut " << cut;
      }
      *near_tie_swaps += int(diff.size() / 2);
    }
  }
}

// A case's keys and queries copied to the device, and the input that points at them.
struct OnDevice {
  explicit OnDevice(const Case& c) : k(c.k), q(c.q), input(c.host) {
    input.keys = k.get();
    input.queries = q.get();
    input.space = MemorySpace::kDevice;
  }
  DeviceBytes k, q;
  SelectionInput input;
};

TEST(SelectionGpuTest, SnapKvAndPyramidKvMatchCpu) {
  struct Shape {
    uint32_t L, H_kv, H_q, D, T, W;
    DType dtype;
  };
  const Shape shapes[] = {
      {2, 2, 8, 128, 1000, 32, DType::kFloat16},   // 128 rows: one full chunk; T % 64 != 0
      {2, 2, 8, 128, 777, 32, DType::kBFloat16},
      {1, 2, 16, 64, 600, 7, DType::kFloat16},     // 56 rows: padded chunk; head_dim 64
      {1, 1, 4, 128, 500, 40, DType::kFloat16},    // 160 rows: two chunks
      {2, 2, 4, 128, 300, 16, DType::kFloat32},    // scalar fp32 path
  };
  int swaps = 0;
  for (const Shape& s : shapes) {
    SCOPED_TRACE(::testing::Message() << "T=" << s.T << " D=" << s.D << " W=" << s.W
                                      << " dtype=" << DTypeName(s.dtype));
    Case c = MakeCase(s.L, s.H_kv, s.H_q, s.D, s.T, s.W, s.dtype, 100 + s.T);
    const OnDevice on_device(c);
    const SelectionInput& dev = on_device.input;
    for (Pooling pooling : {Pooling::kMax, Pooling::kAvg}) {
      for (LayerBudgets lb : {LayerBudgets::kUniform, LayerBudgets::kPyramid}) {
        SnapKvOptions o;
        o.window = s.W;
        o.budget = s.W + 100;
        o.pooling = pooling;
        o.pool_kernel = pooling == Pooling::kMax ? 7 : 5;
        o.layer_budgets = lb;
        auto cpu_scores = SnapKvScores(o, c.host);
        auto gpu_scores = SnapKvScores(o, dev);
        ASSERT_TRUE(cpu_scores.ok()) << cpu_scores.status();
        ASSERT_TRUE(gpu_scores.ok()) << gpu_scores.status();
        ExpectScoresClose(*cpu_scores, *gpu_scores);
        auto cpu = SelectSnapKv(o, c.host);
        auto gpu = SelectSnapKv(o, dev);
        ASSERT_TRUE(cpu.ok()) << cpu.status();
        ASSERT_TRUE(gpu.ok()) << gpu.status();
        ExpectSameKeptSets(*cpu, *gpu, *cpu_scores, s.T - s.W, s.T - s.W, pooling, o.pool_kernel,
                           &swaps);
      }
    }
  }
  std::printf("near-tie swaps across all cases: %d\n", swaps);
}

TEST(SelectionGpuTest, BatchedLaunchesMatchCpu) {
  // Both attention passes per batch of (layer, KV head) pairs: 1, 3 (ragged) and all.
  Case c = MakeCase(3, 2, 8, 128, 900, 32, DType::kFloat16, 41);
  const OnDevice on_device(c);
  const SelectionInput& dev = on_device.input;
  SnapKvOptions o = SnapKvOptions::PyramidKv();
  o.window = 32;
  o.budget = 160;
  auto caps = PyramidKvCaps(3, 900, 32, 160);
  ASSERT_TRUE(caps.ok());
  auto cpu_scores = SnapKvScores(o, c.host);
  auto cpu = SelectSnapKv(o, c.host);
  ASSERT_TRUE(cpu.ok() && cpu_scores.ok());
  int swaps = 0;
  for (uint32_t batch : {1u, 3u, 0u}) {
    auto gpu = internal::SnapKvSelectDeviceTimed(o, dev, *caps, nullptr, batch);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    ExpectSameKeptSets(*cpu, *gpu, *cpu_scores, 900 - 32, 900 - 32, o.pooling, o.pool_kernel,
                       &swaps);
  }
  // One launch batch, pass 2 (each launch followed by its pairs' top-k and copy-out) in 1 to 8
  // launches over the 6 pairs.
  for (uint32_t groups : {1u, 2u, 4u, 8u}) {
    SCOPED_TRACE(::testing::Message() << "mass groups " << groups);
    ASSERT_TRUE(internal::SetMassGroupsForBench(groups).ok());
    auto gpu = internal::SnapKvSelectDeviceTimed(o, dev, *caps, nullptr, 0);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    ExpectSameKeptSets(*cpu, *gpu, *cpu_scores, 900 - 32, 900 - 32, o.pooling, o.pool_kernel,
                       &swaps);
  }
  ASSERT_TRUE(internal::SetMassGroupsForBench(internal::DefaultMassGroups()).ok());
  EXPECT_FALSE(internal::SetMassGroupsForBench(0).ok());
  std::printf("near-tie swaps: %d\n", swaps);
}

TEST(SelectionGpuTest, ManyLayersMatchCpu) {
  // More layers than the top-k kernel takes caps in its parameters (128): caps from device
  // memory; each block finds its output offset from the caps of the layers before it.
  Case c = MakeCase(130, 2, 4, 64, 300, 8, DType::kFloat16, 57);
  const OnDevice on_device(c);
  const SelectionInput& dev = on_device.input;
  SnapKvOptions o;
  o.window = 8;
  o.budget = 48;
  auto cpu_scores = SnapKvScores(o, c.host);
  auto cpu = SelectSnapKv(o, c.host);
  auto gpu = SelectSnapKv(o, dev);
  ASSERT_TRUE(cpu_scores.ok() && cpu.ok());
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  int swaps = 0;
  ExpectSameKeptSets(*cpu, *gpu, *cpu_scores, 300 - 8, 300 - 8, o.pooling, o.pool_kernel, &swaps);
  std::printf("near-tie swaps: %d\n", swaps);
}

TEST(SelectionGpuTest, BothAttentionSyncSettingsMatchCpu) {
  // The fp16/bf16 attention kernels synchronise K tiles with a block barrier (1) or one barrier
  // per key half (2); ragged shapes (T = 1000: a partial last tile, T = 600 / head_dim 64,
  // W = 40: two row chunks that take block barriers inside the key loop, H2O: causal masking
  // in pass 2).
  struct Shape {
    uint32_t L, H_kv, H_q, D, T, W;
    DType dtype;
  };
  const Shape shapes[] = {
      {2, 2, 8, 128, 1000, 32, DType::kFloat16},
      {1, 2, 16, 64, 600, 7, DType::kBFloat16},
      {1, 1, 4, 128, 500, 40, DType::kFloat16},
  };
  int swaps = 0;
  for (int sync : {1, 2}) {
    ASSERT_TRUE(internal::SetAttentionSyncForBench(sync).ok());
    for (const Shape& s : shapes) {
      SCOPED_TRACE(::testing::Message() << "attention sync " << sync << " T=" << s.T
                                        << " D=" << s.D << " W=" << s.W);
      Case c = MakeCase(s.L, s.H_kv, s.H_q, s.D, s.T, s.W, s.dtype, 300 + s.T);
      const OnDevice on_device(c);
      const SelectionInput& dev = on_device.input;
      SnapKvOptions o;
      o.window = s.W;
      o.budget = s.W + 100;
      auto cpu_scores = SnapKvScores(o, c.host);
      auto gpu_scores = SnapKvScores(o, dev);
      ASSERT_TRUE(cpu_scores.ok() && gpu_scores.ok());
      ExpectScoresClose(*cpu_scores, *gpu_scores);
      auto cpu = SelectSnapKv(o, c.host);
      auto gpu = SelectSnapKv(o, dev);
      ASSERT_TRUE(cpu.ok() && gpu.ok());
      ExpectSameKeptSets(*cpu, *gpu, *cpu_scores, s.T - s.W, s.T - s.W, o.pooling, o.pool_kernel,
                         &swaps);
    }
    // H2O from all 300 queries: 1200 rows in 10 chunks, causal masking in pass 2.
    Case c = MakeCase(1, 1, 4, 128, 300, 300, DType::kFloat16, 91);
    const OnDevice on_device(c);
    const SelectionInput& dev = on_device.input;
    auto cpu_cols = H2oColumnScores(c.host);
    auto gpu_cols = H2oColumnScores(dev);
    ASSERT_TRUE(cpu_cols.ok() && gpu_cols.ok());
    ExpectScoresClose(*cpu_cols, *gpu_cols);
  }
  ASSERT_TRUE(internal::SetAttentionSyncForBench(internal::DefaultAttentionSync()).ok());
  EXPECT_FALSE(internal::SetAttentionSyncForBench(3).ok());
  std::printf("near-tie swaps: %d\n", swaps);
}

TEST(SelectionGpuTest, EqualScoresKeepLowerPositionsOnTheDevice) {
  const uint32_t T = 300, D = 64, W = 8;
  std::vector<float> k(size_t(T) * D, 0.25f), q(size_t(W) * D, 0.5f);
  auto kb = testing::Encode(k, DType::kFloat16), qb = testing::Encode(q, DType::kFloat16);
  DeviceBytes dk(kb), dq(qb);
  SelectionInput in;
  in.keys = dk.get();
  in.queries = dq.get();
  in.space = MemorySpace::kDevice;
  in.num_layers = in.num_kv_heads = in.num_query_heads = 1;
  in.head_dim = D;
  in.num_tokens = T;
  in.num_queries = W;
  SnapKvOptions o;
  o.window = W;
  o.budget = W + 70;
  o.pool_kernel = 1;
  auto sel = SelectSnapKv(o, in);
  ASSERT_TRUE(sel.ok()) << sel.status();
  std::vector<uint32_t> want;
  for (uint32_t t = 0; t < 70; ++t) want.push_back(t);
  for (uint32_t t = T - W; t < T; ++t) want.push_back(t);
  EXPECT_THAT(sel->Kept(0, 0), ::testing::ElementsAreArray(want));
}

// SelectH2o on engine-supplied scores [L][score_heads][T], from the host and from the device:
// the group mean (if any) is computed identically, so the kept sets must be equal exactly.
void ExpectH2oScoresSelectionsEqual(const std::vector<float>& scores, uint32_t L,
                                    uint32_t score_heads, uint32_t kv_heads, uint32_t q_heads,
                                    uint32_t T, const H2oOptions& o) {
  std::vector<uint8_t> bytes(scores.size() * 4);
  std::memcpy(bytes.data(), scores.data(), bytes.size());
  DeviceBytes ds(bytes);
  H2oScoresInput in;
  in.scores = scores.data();
  in.num_layers = L;
  in.num_score_heads = score_heads;
  in.num_kv_heads = kv_heads;
  in.num_query_heads = q_heads;
  in.num_tokens = T;
  auto cpu = SelectH2o(o, in);
  H2oScoresInput dev_in = in;
  dev_in.scores = static_cast<const float*>(ds.get());
  dev_in.space = MemorySpace::kDevice;
  auto gpu = SelectH2o(o, dev_in);
  ASSERT_TRUE(cpu.ok());
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ(cpu->kept_per_layer, gpu->kept_per_layer);
  EXPECT_EQ(cpu->positions, gpu->positions);
  EXPECT_TRUE(gpu->Validate().ok());
}

TEST(SelectionGpuTest, H2oMatchesCpu) {
  int swaps = 0;
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    // All 400 queries of 4 query heads per KV head: 1600 rows, 13 chunks, causal tiles skipped.
    Case c = MakeCase(2, 2, 8, 128, 400, 400, dtype, 77);
    const OnDevice on_device(c);
    const SelectionInput& dev = on_device.input;
    auto cpu_cols = H2oColumnScores(c.host);
    auto gpu_cols = H2oColumnScores(dev);
    ASSERT_TRUE(cpu_cols.ok());
    ASSERT_TRUE(gpu_cols.ok()) << gpu_cols.status();
    ExpectScoresClose(*cpu_cols, *gpu_cols);
    H2oOptions o = H2oOptions::Fraction(400);
    auto cpu = SelectH2oFromQueries(o, c.host);
    auto gpu = SelectH2oFromQueries(o, dev);
    ASSERT_TRUE(cpu.ok());
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    ExpectSameKeptSets(*cpu, *gpu, *cpu_cols, 400, 400 - o.recent_budget, Pooling::kMax, 1,
                       &swaps);
  }
  std::printf("near-tie swaps: %d\n", swaps);

  // Engine-supplied scores per query head, then per KV head (the first L * Hkv * T of them).
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.0f, 10.0f);
  const uint32_t L = 3, Hq = 8, Hkv = 2, T = 513;
  std::vector<float> scores(size_t(L) * Hq * T);
  for (float& x : scores) x = std::floor(u(rng) * 4) / 4;  // many exact ties
  H2oOptions o;
  o.heavy_budget = 60;
  o.recent_budget = 40;
  ExpectH2oScoresSelectionsEqual(scores, L, Hq, Hkv, Hq, T, o);
  ExpectH2oScoresSelectionsEqual(scores, L, Hkv, Hkv, Hq, T, o);
}

TEST(SelectionGpuTest, LongTopKMatchesCpuExactly) {
  // Top-k over tens of thousands of scores (keys in shared memory, then past its limit in global
  // memory; the radix rounds see crowded bins) with many exact ties, a heavy budget that cuts
  // through a run of equal scores, and odd lengths.
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (uint32_t T : {33000u, 70001u}) {
    SCOPED_TRACE(::testing::Message() << "T=" << T);
    const uint32_t L = 2, H = 2;
    std::vector<float> scores(size_t(L) * H * T);
    for (float& x : scores) x = std::floor(u(rng) * 64) / 64 * 1e-3f + 1e-6f;
    H2oOptions o;
    o.heavy_budget = 2016;
    o.recent_budget = 32;
    ExpectH2oScoresSelectionsEqual(scores, L, H, H, H, T, o);
  }
}

TEST(SelectionGpuTest, UnsupportedHeadDimIsAClearError) {
  Case c = MakeCase(1, 1, 2, 96, 100, 8, DType::kFloat16, 3);
  const OnDevice on_device(c);
  const SelectionInput& dev = on_device.input;
  SnapKvOptions o;
  o.window = 8;
  o.budget = 40;
  auto r = SelectSnapKv(o, dev);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(r.status().message(), HasSubstr("unsupported head_dim: 96"));
  // Shape errors are found before any device work.
  o.budget = 101;
  EXPECT_EQ(SelectSnapKv(o, dev).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::kernels
