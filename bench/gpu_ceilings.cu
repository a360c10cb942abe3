// gpu_ceilings: the hardware ceilings every kvtier GPU benchmark is measured against.
//
// Measures, with CUDA events after warm-up (median of repeats):
//   - device-to-device cudaMemcpy bandwidth (reported as bytes read + written per second, the
//     way codec benchmarks count their own traffic, and as bytes copied per second);
//   - pinned host-to-device and device-to-host bandwidth;
//   - NCCL send/recv bandwidth between GPU 0 and GPU 1 when two GPUs are visible.
// Usage: gpu_ceilings [--json PATH] [--mib N]   (default N = 256)
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>
#include "cuda_bench.h"

namespace {


#define NCCL_OK(expr)                                                                   \
  do {                                                                                  \
    ncclResult_t r_ = (expr);                                                           \
    if (r_ != ncclSuccess) {                                                            \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr,                \
                   ncclGetErrorString(r_));                                             \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

constexpr int kWarmup = 3;
constexpr int kRepeats = 15;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Times `op` (which enqueues work on `stream`) with events; returns the median in seconds.
template <typename Op>
double TimeOnStream(cudaStream_t stream, Op op) {
  cudaEvent_t start, stop;
  CUDA_OK(cudaEventCreate(&start));
  CUDA_OK(cudaEventCreate(&stop));
  for (int i = 0; i < kWarmup; ++i) op();
  CUDA_OK(cudaStreamSynchronize(stream));
  std::vector<double> t;
  for (int i = 0; i < kRepeats; ++i) {
    CUDA_OK(cudaEventRecord(start, stream));
    op();
    CUDA_OK(cudaEventRecord(stop, stream));
    CUDA_OK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
    t.push_back(ms * 1e-3);
  }
  CUDA_OK(cudaEventDestroy(start));
  CUDA_OK(cudaEventDestroy(stop));
  return Median(t);
}

__global__ void FillPattern(uint32_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    p[i] = static_cast<uint32_t>(i) * 2654435761u ^ seed;
  }
}

struct Result {
  std::string name;
  double bytes;    // bytes moved per operation, as counted for the figure
  double seconds;  // median
  double GBps() const { return bytes / seconds / 1e9; }
};

}  // namespace

int main(int argc, char** argv) {
  const char* json_path = nullptr;
  size_t mib = 256;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--mib") && i + 1 < argc) mib = std::strtoul(argv[++i], 0, 10);
    else {
      std::fprintf(stderr, "usage: %s [--json PATH] [--mib N]\n", argv[0]);
      return 2;
    }
  }
  int ndev = 0;
  CUDA_OK(cudaGetDeviceCount(&ndev));
  if (ndev == 0) {
    std::fprintf(stderr, "no CUDA device visible\n");
    return 1;
  }
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  int driver = 0, runtime = 0;
  CUDA_OK(cudaDriverGetVersion(&driver));
  CUDA_OK(cudaRuntimeGetVersion(&runtime));
  const size_t bytes = mib << 20;
  std::vector<Result> results;

  CUDA_OK(cudaSetDevice(0));
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  void *a, *b, *h;
  CUDA_OK(cudaMalloc(&a, bytes));
  CUDA_OK(cudaMalloc(&b, bytes));
  CUDA_OK(cudaMallocHost(&h, bytes));
  FillPattern<<<1024, 256, 0, s>>>(static_cast<uint32_t*>(a), bytes / 4, 7);
  CUDA_OK(cudaGetLastError());

  // Device-to-device at several sizes: small copies show launch overhead, large ones DRAM.
  for (size_t sz : {size_t(16) << 20, size_t(64) << 20, bytes}) {
    if (sz > bytes) continue;
    double t = TimeOnStream(s, [&] { CUDA_OK(cudaMemcpyAsync(b, a, sz, cudaMemcpyDeviceToDevice, s)); });
    results.push_back({"d2d_copy_rw_" + std::to_string(sz >> 20) + "MiB", 2.0 * sz, t});
  }
  // Check the copy really happened (a silently failing copy would make a fast ceiling).
  {
    std::vector<uint32_t> x(1024), y(1024);
    CUDA_OK(cudaMemcpy(x.data(), a, 4096, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(y.data(), b, 4096, cudaMemcpyDeviceToHost));
    if (x != y || x[1] == 0) {
      std::fprintf(stderr, "device copy check failed\n");
      return 1;
    }
  }
  double t_h2d = TimeOnStream(s, [&] { CUDA_OK(cudaMemcpyAsync(a, h, bytes, cudaMemcpyHostToDevice, s)); });
  results.push_back({"h2d_pinned", double(bytes), t_h2d});
  double t_d2h = TimeOnStream(s, [&] { CUDA_OK(cudaMemcpyAsync(h, b, bytes, cudaMemcpyDeviceToHost, s)); });
  results.push_back({"d2h_pinned", double(bytes), t_d2h});

  // NCCL send/recv GPU0 -> GPU1 (one process driving both devices).
  if (ndev >= 2) {
    ncclComm_t comms[2];
    int devs[2] = {0, 1};
    NCCL_OK(ncclCommInitAll(comms, 2, devs));
    void* buf[2];
    cudaStream_t st[2];
    for (int d = 0; d < 2; ++d) {
      CUDA_OK(cudaSetDevice(d));
      CUDA_OK(cudaMalloc(&buf[d], bytes));
      CUDA_OK(cudaStreamCreateWithFlags(&st[d], cudaStreamNonBlocking));
    }
    CUDA_OK(cudaSetDevice(0));
    FillPattern<<<1024, 256, 0, st[0]>>>(static_cast<uint32_t*>(buf[0]), bytes / 4, 11);
    CUDA_OK(cudaStreamSynchronize(st[0]));
    auto sendrecv = [&] {
      NCCL_OK(ncclGroupStart());
      NCCL_OK(ncclSend(buf[0], bytes, ncclUint8, 1, comms[0], st[0]));
      NCCL_OK(ncclRecv(buf[1], bytes, ncclUint8, 0, comms[1], st[1]));
      NCCL_OK(ncclGroupEnd());
    };
    for (int i = 0; i < kWarmup; ++i) sendrecv();
    std::vector<double> t;
    cudaEvent_t e0, e1;
    CUDA_OK(cudaSetDevice(1));
    CUDA_OK(cudaEventCreate(&e0));
    CUDA_OK(cudaEventCreate(&e1));
    for (int i = 0; i < kRepeats; ++i) {
      for (int d = 0; d < 2; ++d) { CUDA_OK(cudaSetDevice(d)); CUDA_OK(cudaStreamSynchronize(st[d])); }
      CUDA_OK(cudaSetDevice(1));
      CUDA_OK(cudaEventRecord(e0, st[1]));
      sendrecv();
      CUDA_OK(cudaSetDevice(1));
      CUDA_OK(cudaEventRecord(e1, st[1]));
      CUDA_OK(cudaEventSynchronize(e1));
      float ms;
      CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
      t.push_back(ms * 1e-3);
    }
    // Verify the receiver's bytes.
    std::vector<uint32_t> x(1024), y(1024);
    CUDA_OK(cudaSetDevice(0));
    CUDA_OK(cudaMemcpy(x.data(), buf[0], 4096, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaSetDevice(1));
    CUDA_OK(cudaMemcpy(y.data(), buf[1], 4096, cudaMemcpyDeviceToHost));
    if (x != y) {
      std::fprintf(stderr, "NCCL send/recv check failed\n");
      return 1;
    }
    results.push_back({"nccl_sendrecv_0to1", double(bytes), Median(t)});
    for (int d = 0; d < 2; ++d) {
      CUDA_OK(cudaSetDevice(d));
      CUDA_OK(cudaFree(buf[d]));
      ncclCommDestroy(comms[d]);
    }
    CUDA_OK(cudaSetDevice(0));
  }

  char date[32];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  std::printf("gpu_ceilings  card: %s (sm_%d%d, %d SMs)  devices: %d  driver %d runtime %d  %s\n",
              prop.name, prop.major, prop.minor, prop.multiProcessorCount, ndev, driver, runtime,
              date);
  std::printf("%-26s %12s %12s\n", "measure", "GB/s", "median_us");
  for (const auto& r : results) std::printf("%-26s %12.1f %12.1f\n", r.name.c_str(), r.GBps(), r.seconds * 1e6);
  if (json_path) {
    FILE* f = std::fopen(json_path, "w");
    if (!f) { std::perror(json_path); return 1; }
    std::fprintf(f, "{\n  \"tool\": \"gpu_ceilings\",\n  \"date\": \"%s\",\n  \"card\": \"%s\",\n"
                 "  \"devices\": %d,\n  \"sm_count\": %d,\n  \"driver\": %d,\n  \"runtime\": %d,\n"
                 "  \"buffer_mib\": %zu,\n  \"results\": [\n", date, prop.name, ndev,
                 prop.multiProcessorCount, driver, runtime, mib);
    for (size_t i = 0; i < results.size(); ++i) {
      std::fprintf(f, "    {\"name\": \"%s\", \"bytes\": %.0f, \"median_s\": %.9g, \"GBps\": %.2f}%s\n",
                   results[i].name.c_str(), results[i].bytes, results[i].seconds, results[i].GBps(),
                   i + 1 < results.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
    std::fclose(f);
  }
  CUDA_OK(cudaFree(a));
  CUDA_OK(cudaFree(b));
  CUDA_OK(cudaFreeHost(h));
  return 0;
}
