// The only place storage touches the CUDA runtime: pinned host memory, one device allocation per
// GPU tier, and copies. cuda_memory_cuda.cc implements it in CUDA builds, cuda_memory_none.cc
// (every allocation fails) otherwise, so no other storage source needs an #ifdef.
//
// Thread-safety: all functions are thread-safe (the CUDA runtime is).
#ifndef KVTIER_STORAGE_SRC_CUDA_MEMORY_H_
#define KVTIER_STORAGE_SRC_CUDA_MEMORY_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace kvtier::storage::internal {

bool CudaBuiltIn();
int CudaDevices();  // 0 without CUDA or without a visible device.

void* AllocPinnedHost(uint64_t size, std::string* error);  // nullptr + error on failure.
void FreePinnedHost(void* p);

void* AllocDevice(int device, uint64_t size, std::string* error);
void FreeDevice(int device, void* p);
absl::Status CopyHostToDevice(int device, void* dst, const void* src, uint64_t n);
absl::Status CopyDeviceToHost(int device, void* dst, const void* src, uint64_t n);

}  // namespace kvtier::storage::internal

#endif  // KVTIER_STORAGE_SRC_CUDA_MEMORY_H_
