#include "kvtier/kernels/device.h"

#include <gtest/gtest.h>

namespace kvtier::kernels {
namespace {

TEST(DeviceGpuTest, SeesADeviceAndDescribesIt) {
  ASSERT_TRUE(CudaBuilt());
  ASSERT_GE(CudaDeviceCount(), 1);
  const std::string d = CudaDeviceDescription(0);
  EXPECT_NE(d.find("sm_"), std::string::npos) << d;
  EXPECT_TRUE(CudaDeviceDescription(CudaDeviceCount()).empty());
}

}  // namespace
}  // namespace kvtier::kernels
