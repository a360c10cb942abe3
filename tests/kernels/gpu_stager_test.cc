// GpuStager without a GPU (as in CI): option validation, and Create() refusing with a clear
// status instead of failing later. With a GPU visible the refusal case is skipped; the GPU
// behaviour itself is kernels_gpu_stager_gpu_test.
#include <gtest/gtest.h>

#include "kvtier/kernels/device.h"
#include "kvtier/kernels/gpu_stager.h"

namespace kvtier::kernels {
namespace {

TEST(GpuStagerTest, OptionsAreValidated) {
  GpuStager::Options o;
  EXPECT_TRUE(o.Validate().ok());
  o.slots = 0;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o.slots = 65;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o.slots = 4;
  o.staging_bytes = (size_t{64} << 10) - 1;  // below the 64 KiB minimum
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o.staging_bytes = size_t{64} << 10;
  EXPECT_TRUE(o.Validate().ok());
  o.max_tensor_bytes = 0;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GpuStager::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GpuStagerTest, CreateRefusesWithoutGpu) {
  if (CudaBuilt() && CudaDeviceCount() > 0) GTEST_SKIP() << "a GPU is visible";
  auto s = GpuStager::Create(GpuStager::Options{});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find(CudaBuilt() ? "no GPU" : "without CUDA"),
            absl::string_view::npos)
      << s.status();
}

}  // namespace
}  // namespace kvtier::kernels
