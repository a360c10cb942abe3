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

PinnedBuffer::~PinnedBuffer() = default;
PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  ptr_ = o.ptr_;
  size_ = o.size_;
  o.ptr_ = nullptr;
  o.size_ = 0;
  return *this;
}
absl::StatusOr<PinnedBuffer> PinnedBuffer::Allocate(size_t) { return NoCuda(); }
DeviceStream::~DeviceStream() = default;
DeviceStream& DeviceStream::operator=(DeviceStream&& o) noexcept {
  stream_ = o.stream_;
  o.stream_ = nullptr;
  return *this;
}
absl::StatusOr<DeviceStream> DeviceStream::Create() { return NoCuda(); }
DeviceEvent::~DeviceEvent() = default;
DeviceEvent& DeviceEvent::operator=(DeviceEvent&& o) noexcept {
  event_ = o.event_;
  o.event_ = nullptr;
  return *this;
}
absl::StatusOr<DeviceEvent> DeviceEvent::Create() { return NoCuda(); }
absl::Status DeviceEvent::Record(void*) { return NoCuda(); }
absl::Status DeviceEvent::Wait() { return NoCuda(); }
absl::Status CopyToHostAsync(void*, const void*, size_t, void*) { return NoCuda(); }
absl::Status CopyToDeviceAsync(void*, const void*, size_t, void*) { return NoCuda(); }
absl::Status DeviceZeroAsync(void*, size_t, void*) { return NoCuda(); }
absl::Status SyncStream(void*) { return NoCuda(); }
absl::Status CheckLaunch(int, const char*) { return NoCuda(); }
absl::Status CopyToHost(void*, const void*, size_t) { return NoCuda(); }
absl::Status CopyToDevice(void*, const void*, size_t) { return NoCuda(); }
absl::Status DeviceZero(void*, size_t) { return NoCuda(); }
absl::Status FinishLaunch(int, const char*) { return NoCuda(); }
absl::StatusOr<DeviceTarget> UploadTarget(const DecodeTarget&, uint32_t) { return NoCuda(); }

}  // namespace kvtier::kernels::internal
