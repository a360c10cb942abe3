// selection_speed: SnapKV and PyramidKV selection on the GPU, as a ratio to reading the
// context's K once at device copy bandwidth measured in the same run.
//
// Context (defaults: Llama-3.1-8B-like): L = 32 layers, H_q = 32 query heads, H_kv = 8 KV heads,
// D = 128, T = 32768 tokens, fp16; W = 32 window queries per query head; C = 2048.
// K and the window queries are filled on the device with a seeded hash (never zeros).
// Timings: CUDA events after warm-up, medians over repeats:
//   copy      cudaMemcpy device-to-device of K's size; copy bandwidth = (read + write) / time;
//   read_k    K bytes / copy bandwidth (= copy time / 2): the reference for the ratio;
//   select    the selection pipeline from the first kernel to the kept positions on the host
//             (row stats, column mass, pooling + top-k, copy of the positions), for several
//             settings: (layer, KV head) pairs per attention launch ([lh=...]), both ways the
//             attention kernels' warps synchronise on K tiles ([sync=block] / [sync=halves]),
//             and pass 2 in 1 to 4 launches, each followed by its pairs' top-k and copy-out
//             ([groups=...]);
//   api       a whole SelectSnapKv() call (host clock), scratch allocation included (the
//             default settings; [sync=...] with the other attention sync setting).
// Usage: selection_speed [--json PATH] [--tokens T] [--layers L] [--repeats N]
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "kvtier/kernels/device.h"
#include "kvtier/kernels/selection.h"
#include "selection/selection_timing.h"
#include "cuda_bench.h"

namespace {


using kvtier::kernels::SelectionInput;
using kvtier::kernels::SnapKvOptions;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Roughly N(0, scale) from a hash (sum of 4 uniforms, centred).
__global__ void FillHalf(__half* p, size_t n, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed ^ static_cast<uint32_t>(i >> 32);
    float s = 0.0f;
    for (int k = 0; k < 4; ++k) {
      h ^= h >> 15;
      h *= 0x2c1b3c6du;
      h ^= h >> 12;
      h *= 0x297a2d39u;
      h ^= h >> 15;
      s += (h & 0xFFFFFF) / float(0x1000000);
    }
    p[i] = __float2half((s - 2.0f) * 1.7320508f * scale);
  }
}

struct Row {
  std::string name;
  double seconds;
  double ratio;  // to read_k
};

}  // namespace

int main(int argc, char** argv) {
  const char* json_path = nullptr;
  uint32_t T = 32768, L = 32, repeats = 10;
  const uint32_t Hq = 32, Hkv = 8, D = 128, W = 32, C = 2048;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--tokens") && i + 1 < argc) T = std::strtoul(argv[++i], 0, 10);
    else if (!std::strcmp(argv[i], "--layers") && i + 1 < argc) L = std::strtoul(argv[++i], 0, 10);
    else if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = std::strtoul(argv[++i], 0, 10);
    else {
      std::fprintf(stderr, "usage: %s [--json PATH] [--tokens T] [--layers L] [--repeats N]\n",
                   argv[0]);
      return 2;
    }
  }
  if (kvtier::kernels::CudaDeviceCount() == 0) {
    std::fprintf(stderr, "no CUDA device visible\n");
    return 1;
  }
  const std::string card = kvtier::kernels::CudaDeviceDescription(0);
  // Keep freed scratch in the stream-ordered pool between calls (the application's choice; the
  // selection functions allocate their scratch with cudaMallocAsync).
  cudaMemPool_t pool;
  CUDA_OK(cudaDeviceGetDefaultMemPool(&pool, 0));
  uint64_t threshold = UINT64_MAX;
  CUDA_OK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));

  const size_t k_elems = size_t(L) * Hkv * T * D, q_elems = size_t(L) * Hq * W * D;
  const size_t k_bytes = k_elems * 2;
  __half *k, *q, *copy_dst;
  CUDA_OK(cudaMalloc(&k, k_bytes));
  CUDA_OK(cudaMalloc(&q, q_elems * 2));
  CUDA_OK(cudaMalloc(&copy_dst, k_bytes));
  FillHalf<<<2048, 256>>>(k, k_elems, 17, 1.0f);
  FillHalf<<<256, 256>>>(q, q_elems, 29, 1.0f);
  CUDA_OK(cudaGetLastError());
  CUDA_OK(cudaDeviceSynchronize());

  cudaEvent_t a, b;
  CUDA_OK(cudaEventCreate(&a));
  CUDA_OK(cudaEventCreate(&b));
  std::vector<double> copy_t;
  for (uint32_t i = 0; i < repeats + 3; ++i) {
    CUDA_OK(cudaEventRecord(a));
    CUDA_OK(cudaMemcpyAsync(copy_dst, k, k_bytes, cudaMemcpyDeviceToDevice));
    CUDA_OK(cudaEventRecord(b));
    CUDA_OK(cudaEventSynchronize(b));
    float ms;
    CUDA_OK(cudaEventElapsedTime(&ms, a, b));
    if (i >= 3) copy_t.push_back(ms * 1e-3);
  }
  const double t_copy = Median(copy_t);
  const double copy_gbps = 2.0 * k_bytes / t_copy / 1e9;
  const double t_read_k = k_bytes / (copy_gbps * 1e9);
  CUDA_OK(cudaFree(copy_dst));

  SelectionInput in;
  in.keys = k;
  in.queries = q + size_t(0);
  in.space = kvtier::kernels::MemorySpace::kDevice;
  in.dtype = kvtier::kernels::DType::kFloat16;
  in.num_layers = L;
  in.num_kv_heads = Hkv;
  in.num_query_heads = Hq;
  in.head_dim = D;
  in.num_tokens = T;
  in.num_queries = W;

  std::vector<Row> rows;
  std::vector<std::pair<std::string, double>> phase_rows;
  // Variants: (layer, KV head) pairs per attention launch ("all" = one launch per pass), so that
  // one run shows whether keeping a batch's K in L2 between the two passes pays off.
  const uint32_t default_batch = kvtier::kernels::internal::DefaultLhPerLaunch();
  for (bool pyramid : {false, true}) {
    SnapKvOptions o = pyramid ? SnapKvOptions::PyramidKv() : SnapKvOptions();
    o.window = W;
    o.budget = C;
    std::vector<uint32_t> caps;
    if (pyramid) {
      auto c = kvtier::kernels::PyramidKvCaps(L, T, W, C, o.pyramid_beta);
      if (!c.ok()) {
        std::fprintf(stderr, "%s\n", std::string(c.status().message()).c_str());
        return 1;
      }
      caps = *c;
    } else {
      caps.assign(L, C - W);
    }
    struct Variant {
      uint32_t batch;
      int sync;         // 1 = block barrier, 2 = one barrier per key half
      uint32_t groups;  // pass-2 launches, each followed by its pairs' top-k and copy-out
    };
    const int default_sync = kvtier::kernels::internal::DefaultAttentionSync();
    const uint32_t default_groups = kvtier::kernels::internal::DefaultMassGroups();
    const Variant variants[] = {{default_batch, default_sync, default_groups},
                                {default_batch, 3 - default_sync, default_groups},
                                {default_batch, default_sync, 1},
                                {default_batch, default_sync, 2},
                                {default_batch, default_sync, 4}};
    for (const Variant& v : variants) {
      const uint32_t batch = v.batch;
      if (&v != &variants[0] && v.groups == default_groups && v.sync == default_sync) {
        continue;  // the default again
      }
      if (!kvtier::kernels::internal::SetAttentionSyncForBench(v.sync).ok()) return 1;
      if (!kvtier::kernels::internal::SetMassGroupsForBench(v.groups).ok()) return 1;
      const bool is_default =
          batch == default_batch && v.sync == default_sync && v.groups == default_groups;
      const std::string settings =
          std::string("lh=") + (batch == 0 ? std::string("all") : std::to_string(batch)) +
          ",sync=" + (v.sync == 1 ? "block" : "halves") + ",groups=" + std::to_string(v.groups);
      const std::string name =
          std::string(pyramid ? "pyramidkv" : "snapkv") + "_select[" + settings + "]";
      std::vector<double> total_t, api_t;
      std::vector<std::vector<double>> phase_t;
      std::vector<std::string> phase_names;
      for (uint32_t i = 0; i < repeats + 2; ++i) {
        kvtier::kernels::internal::SelectionTimings timings;
        auto sel = kvtier::kernels::internal::SnapKvSelectDeviceTimed(o, in, caps, &timings, batch);
        if (!sel.ok() || !sel->Validate().ok()) {
          std::fprintf(stderr, "%s failed: %s\n", name.c_str(),
                       std::string(sel.ok() ? sel->Validate().message() : sel.status().message())
                           .c_str());
          return 1;
        }
        for (uint32_t l = 0; l < L; ++l) {
          if (sel->kept_per_layer[l] != caps[l] + W) {
            std::fprintf(stderr, "%s: layer %u keeps %u, want %u\n", name.c_str(), l,
                         sel->kept_per_layer[l], caps[l] + W);
            return 1;
          }
        }
        auto phases = timings.Phases();
        if (i < 2) continue;
        double total = 0;
        phase_t.resize(phases.size());
        phase_names.clear();
        for (size_t j = 0; j < phases.size(); ++j) {
          total += phases[j].second * 1e-3;
          phase_t[j].push_back(phases[j].second * 1e-3);
          phase_names.push_back(phases[j].first);
        }
        total_t.push_back(total);
        if (batch != default_batch || v.groups != default_groups) continue;  // both syncs
        const auto t0 = std::chrono::steady_clock::now();
        auto api = kvtier::kernels::SelectSnapKv(o, in);
        const auto t1 = std::chrono::steady_clock::now();
        if (!api.ok() || api->positions != sel->positions) {
          std::fprintf(stderr, "%s: API result differs from the timed pipeline\n", name.c_str());
          return 1;
        }
        api_t.push_back(std::chrono::duration<double>(t1 - t0).count());
      }
      const double t_sel = Median(total_t);
      rows.push_back({name, t_sel, t_sel / t_read_k});
      if (!api_t.empty()) {
        const double t_api = Median(api_t);
        rows.push_back({std::string(pyramid ? "pyramidkv" : "snapkv") + "_api" +
                            (is_default ? "" : "[" + settings + "]"),
                        t_api, t_api / t_read_k});
      }
      for (size_t j = 0; j < phase_names.size(); ++j) {
        phase_rows.push_back({name + "." + phase_names[j], Median(phase_t[j])});
      }
    }
    if (!kvtier::kernels::internal::SetAttentionSyncForBench(default_sync).ok()) return 1;
    if (!kvtier::kernels::internal::SetMassGroupsForBench(default_groups).ok()) return 1;
  }

  std::printf("card: %s\n", card.c_str());
  std::printf("context: L=%u H_q=%u H_kv=%u D=%u T=%u fp16, K = %.1f MiB; W=%u C=%u\n", L, Hq,
              Hkv, D, T, k_bytes / 1048576.0, W, C);
  std::printf("d2d copy of K: %.3f ms, %.0f GB/s (read+write); read K once: %.3f ms\n",
              t_copy * 1e3, copy_gbps, t_read_k * 1e3);
  std::printf("%-28s %10s %10s\n", "what", "ms", "x read_k");
  for (const Row& r : rows) std::printf("%-28s %10.3f %10.2f\n", r.name.c_str(), r.seconds * 1e3, r.ratio);
  for (const auto& p : phase_rows) std::printf("  %-44s %8.3f ms\n", p.first.c_str(), p.second * 1e3);

  if (json_path) {
    FILE* f = std::fopen(json_path, "w");
    if (!f) {
      std::perror(json_path);
      return 1;
    }
    char date[32];
    std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    std::fprintf(f, "{\n  \"tool\": \"selection_speed\",\n  \"date\": \"%s\",\n  \"card\": \"%s\",\n",
                 date, card.c_str());
    std::fprintf(f, "  \"context\": {\"layers\": %u, \"query_heads\": %u, \"kv_heads\": %u, "
                 "\"head_dim\": %u, \"tokens\": %u, \"dtype\": \"fp16\", \"window\": %u, "
                 "\"budget\": %u, \"k_bytes\": %zu},\n", L, Hq, Hkv, D, T, W, C, k_bytes);
    std::fprintf(f, "  \"repeats\": %u,\n  \"d2d_copy_s\": %.9g,\n  \"d2d_copy_GBps_rw\": %.2f,\n"
                 "  \"read_k_s\": %.9g,\n  \"results\": [\n", repeats, t_copy, copy_gbps, t_read_k);
    for (size_t i = 0; i < rows.size(); ++i) {
      std::fprintf(f, "    {\"name\": \"%s\", \"median_s\": %.9g, \"ratio_to_read_k\": %.3f}%s\n",
                   rows[i].name.c_str(), rows[i].seconds, rows[i].ratio,
                   i + 1 < rows.size() ? "," : "");
    }
    std::fprintf(f, "  ],\n  \"phases\": [\n");
    for (size_t i = 0; i < phase_rows.size(); ++i) {
      std::fprintf(f, "    {\"name\": \"%s\", \"median_s\": %.9g}%s\n", phase_rows[i].first.c_str(),
                   phase_rows[i].second, i + 1 < phase_rows.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
    std::fclose(f);
  }
  CUDA_OK(cudaFree(k));
  CUDA_OK(cudaFree(q));
  return 0;
}
