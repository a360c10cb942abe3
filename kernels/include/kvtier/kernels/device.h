// What the process can see of CUDA: whether kvtier was built with it and how many devices exist.
// Thread-safe. No CUDA type appears here; callers without a GPU link the same symbols.
#ifndef KVTIER_KERNELS_DEVICE_H_
#define KVTIER_KERNELS_DEVICE_H_

#include <string>

namespace kvtier::kernels {

// True when this build contains CUDA kernels.
bool CudaBuilt();

// Number of visible CUDA devices; 0 when built without CUDA, when no driver is loaded or no device
// is visible (errors are not reported: "no GPU" is a normal state for kvtier).
int CudaDeviceCount();

// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)"; empty when `device` does not exist.
std::string CudaDeviceDescription(int device);

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_DEVICE_H_
