// device_memory.h for builds without CUDA: every device service is Unimplemented.
#include "codecs/device_memory.h"

namespace kvtier::kernels::internal {
namespace {
absl::Status NoCuda() { return absl::UnimplementedError("kvtier was built without CUDA"); }
}  // namespace

DeviceBuffer::~DeviceBuffer() = default;
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  ptr_ = o.ptr_;
  size_ = o.size_;
  o.ptr_ = nullptr;
  o.size_ = 0;
  return *this;
}
absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t) { return NoCuda(); }
absl::Status CopyToHost(void*, const void*, size_t) { return NoCuda(); }
absl::Status CopyToDevice(void*, const void*, size_t) { return NoCuda(); }
absl::Status DeviceZero(void*, size_t) { return NoCuda(); }
absl::Status FinishLaunch(int, const char*) { return NoCuda(); }
absl::StatusOr<DeviceTarget> UploadTarget(const DecodeTarget&, uint32_t) { return NoCuda(); }

}  // namespace kvtier::kernels::internal
