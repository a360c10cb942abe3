// GPU bandwidth of the paged-layout helpers (kernels/paged.h): gather from and scatter into a
// vLLM-layout paged cache with a shuffled block table, against a device-to-device cudaMemcpy of
// the same bytes measured in the same run. Bytes are counted as read + written for both.
//
//   paged_bench [--json FILE] [--iters N]
// Times are CUDA-event medians after warm-up; each call includes the helper's block-table upload
// and its synchronization (what a caller of the public API pays).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kvtier/kernels/device.h"
#include "kvtier/kernels/paged.h"

namespace {

using kvtier::kernels::DType;
using kvtier::kernels::KvLayout;
using kvtier::kernels::MemorySpace;
using kvtier::kernels::PagedKvCache;

#define CHECK_CUDA(expr)                                                                  \
  do {                                                                                    \
    cudaError_t e_ = (expr);                                                              \
    if (e_ != cudaSuccess) {                                                              \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)

struct Case {
  const char* name;
  KvLayout layout;
  uint32_t block_size;
  uint32_t tokens;
  uint32_t tokens_per_chunk;
};

struct Result {
  std::string name;
  double bytes = 0;  // chunk bytes
  double gather_ms = 0, scatter_ms = 0, copy_ms = 0;
};

template <typename Fn>
double MedianMs(int iters, Fn&& fn) {
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) fn();  // warm-up (also warms the stream-ordered pool)
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<float> ms;
  for (int i = 0; i < iters; ++i) {
    CHECK_CUDA(cudaEventRecord(a));
    fn();
    CHECK_CUDA(cudaEventRecord(b));
    CHECK_CUDA(cudaEventSynchronize(b));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  CHECK_CUDA(cudaEventDestroy(a));
  CHECK_CUDA(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

Result Run(const Case& c, int iters) {
  const uint32_t blocks_needed = (c.tokens + c.block_size - 1) / c.block_size;
  const uint32_t num_blocks = blocks_needed * 2;  // the run uses half the cache, scattered
  PagedKvCache cache;
  cache.layout = c.layout;
  cache.num_blocks = num_blocks;
  cache.block_size = c.block_size;
  cache.space = MemorySpace::kDevice;
  cache.layer_base.resize(c.layout.num_layers);
  const size_t layer_bytes = [&] {
    PagedKvCache probe = cache;
    probe.layer_base.assign(c.layout.num_layers, reinterpret_cast<void*>(256));
    return probe.LayerBytes();
  }();
  for (auto& p : cache.layer_base) {
    CHECK_CUDA(cudaMalloc(&p, layer_bytes));
    CHECK_CUDA(cudaMemset(p, 0x3c, layer_bytes));
  }
  std::vector<int32_t> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(42));
  ids.resize(blocks_needed);
  const size_t bytes = c.layout.ChunkBytes(c.tokens);
  void *chunks = nullptr, *copy_dst = nullptr;
  CHECK_CUDA(cudaMalloc(&chunks, bytes));
  CHECK_CUDA(cudaMalloc(&copy_dst, bytes));
  CHECK_CUDA(cudaMemset(chunks, 0x11, bytes));
  const kvtier::kernels::PagedRun run{ids, 0, c.tokens};

  Result r;
  r.name = c.name;
  r.bytes = static_cast<double>(bytes);
  r.gather_ms = MedianMs(iters, [&] {
    auto st = kvtier::kernels::GatherChunks(cache, run, c.tokens_per_chunk, chunks);
    if (!st.ok()) { std::fprintf(stderr, "gather: %s\n", st.ToString().c_str()); std::exit(1); }
  });
  r.scatter_ms = MedianMs(iters, [&] {
    auto st = kvtier::kernels::ScatterChunks(chunks, c.tokens_per_chunk, cache, run);
    if (!st.ok()) { std::fprintf(stderr, "scatter: %s\n", st.ToString().c_str()); std::exit(1); }
  });
  r.copy_ms = MedianMs(iters, [&] {
    CHECK_CUDA(cudaMemcpy(copy_dst, chunks, bytes, cudaMemcpyDeviceToDevice));
  });
  for (auto p : cache.layer_base) CHECK_CUDA(cudaFree(p));
  CHECK_CUDA(cudaFree(chunks));
  CHECK_CUDA(cudaFree(copy_dst));
  return r;
}

double GBps(double bytes, double ms) { return 2.0 * bytes / (ms * 1e-3) / 1e9; }

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  int iters = 20;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) iters = std::atoi(argv[++i]);
  }
  if (kvtier::kernels::CudaDeviceCount() <= 0) {
    std::printf("SKIPPED: no CUDA device\n");
    return 77;
  }
  const std::string device = kvtier::kernels::CudaDeviceDescription(0);
  const std::vector<Case> cases = {
      {"llama8b_fp16_bs16_4096tok", KvLayout::Mha(32, 8, 32, 128), 16, 4096, 256},
      {"llama8b_fp16_bs16_256tok", KvLayout::Mha(32, 8, 32, 128), 16, 256, 256},
      {"gqa_hd64_bf16_bs16_4096tok", KvLayout::Mha(32, 8, 32, 64, DType::kBFloat16), 16, 4096, 256},
      {"mla_576_bs64_4096tok", KvLayout::Mla(61, 512, 64), 64, 4096, 512},
  };
  std::printf("device: %s\n", device.c_str());
  std::printf("%-30s %10s %10s %10s %10s %8s %8s\n", "case", "MiB", "gather", "scatter", "copy",
              "g/copy", "s/copy");
  std::string json = "{\"device\": \"" + device + "\", \"bytes_counted\": \"read+write\", \"results\": [";
  bool first = true;
  for (const Case& c : cases) {
    const Result r = Run(c, iters);
    const double g = GBps(r.bytes, r.gather_ms), s = GBps(r.bytes, r.scatter_ms),
                 cp = GBps(r.bytes, r.copy_ms);
    std::printf("%-30s %10.1f %7.0f GB/s %6.0f GB/s %6.0f GB/s %7.2f %8.2f\n", r.name.c_str(),
                r.bytes / (1 << 20), g, s, cp, g / cp, s / cp);
    char buf[512];
    std::snprintf(buf, sizeof(buf),
                  "%s{\"case\": \"%s\", \"bytes\": %.0f, \"gather_ms\": %.4f, \"scatter_ms\": %.4f, "
                  "\"copy_ms\": %.4f, \"gather_gbps\": %.1f, \"scatter_gbps\": %.1f, "
                  "\"copy_gbps\": %.1f, \"gather_vs_copy\": %.3f, \"scatter_vs_copy\": %.3f}",
                  first ? "" : ", ", r.name.c_str(), r.bytes, r.gather_ms, r.scatter_ms,
                  r.copy_ms, g, s, cp, g / cp, s / cp);
    json += buf;
    first = false;
  }
  json += "]}\n";
  if (!json_path.empty()) {
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (f) {
      std::fputs(json.c_str(), f);
      std::fclose(f);
    }
  }
  return 0;
}
