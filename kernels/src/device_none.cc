// Built when kvtier has no CUDA.
#include "kvtier/kernels/device.h"

namespace kvtier::kernels {
bool CudaBuilt() { return false; }
int CudaDeviceCount() { return 0; }
std::string CudaDeviceDescription(int) { return {}; }
}  // namespace kvtier::kernels
