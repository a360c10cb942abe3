// main() for GPU test binaries: exits 77 (ctest's "Skipped") with a reason when no CUDA device is
// visible, so GPU tests skip cleanly on CI machines; runs every test otherwise.
#include <cstdio>

#include <gtest/gtest.h>

#include "kvtier/kernels/device.h"

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  const int devices = kvtier::kernels::CudaDeviceCount();
  if (devices <= 0) {
    std::printf("SKIPPED: no CUDA device visible (%s)\n",
                kvtier::kernels::CudaBuilt() ? "built with CUDA" : "built without CUDA");
    return 77;
  }
  return RUN_ALL_TESTS();
}
