#include <cuda_runtime_api.h>

#include <cstdio>

#include "kvtier/kernels/device.h"

namespace kvtier::kernels {

bool CudaBuilt() { return true; }

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // Clear the sticky "no driver" error.
    return 0;
  }
  return n;
}

std::string CudaDeviceDescription(int device) {
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) {
    cudaGetLastError();
    return {};
  }
  char buf[320];
  std::snprintf(buf, sizeof(buf), "%s (sm_%d%d, %d SMs, %.1f GiB)", p.name, p.major, p.minor,
                p.multiProcessorCount, p.totalGlobalMem / double(1ull << 30));
  return buf;
}

}  // namespace kvtier::kernels
