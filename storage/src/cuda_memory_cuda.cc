// CUDA builds: pinned host memory and device arenas through the CUDA runtime.
#include <cuda_runtime_api.h>

#include "cuda_memory.h"

namespace kvtier::storage::internal {
namespace {
std::string ErrorText(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}
}  // namespace

bool CudaBuiltIn() { return true; }

int CudaDevices() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // Clear the sticky "no driver" error.
    return 0;
  }
  return n;
}

void* AllocPinnedHost(uint64_t size, std::string* error) {
  if (CudaDevices() == 0) {
    *error = "no CUDA device";
    return nullptr;
  }
  void* p = nullptr;
  cudaError_t e = cudaHostAlloc(&p, size, cudaHostAllocPortable);
  if (e != cudaSuccess) {
    cudaGetLastError();
    *error = ErrorText(e);
    return nullptr;
  }
  return p;
}

void FreePinnedHost(void* p) {
  if (p != nullptr) cudaFreeHost(p);
}

void* AllocDevice(int device, uint64_t size, std::string* error) {
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess) {
    cudaGetLastError();
    *error = ErrorText(e);
    return nullptr;
  }
  void* p = nullptr;
  if (cudaError_t e = cudaMalloc(&p, size); e != cudaSuccess) {
    cudaGetLastError();
    *error = ErrorText(e);
    return nullptr;
  }
  return p;
}

void FreeDevice(int device, void* p) {
  if (p == nullptr) return;
  cudaSetDevice(device);
  cudaFree(p);
}

absl::Status CopyHostToDevice(int device, void* dst, const void* src, uint64_t n) {
  cudaSetDevice(device);
  if (cudaError_t e = cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice); e != cudaSuccess) {
    cudaGetLastError();
    return absl::InternalError("cudaMemcpy H2D: " + ErrorText(e));
  }
  return absl::OkStatus();
}

absl::Status CopyDeviceToHost(int device, void* dst, const void* src, uint64_t n) {
  cudaSetDevice(device);
  if (cudaError_t e = cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost); e != cudaSuccess) {
    cudaGetLastError();
    return absl::InternalError("cudaMemcpy D2H: " + ErrorText(e));
  }
  return absl::OkStatus();
}

}  // namespace kvtier::storage::internal
