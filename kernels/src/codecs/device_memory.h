// Internal: the few CUDA runtime services the codec dispatcher needs (device buffers, copies,
// synchronization, target upload), behind plain types. Without CUDA every call returns
// Unimplemented. Not a public header. Thread-safe (each call is independent).
#ifndef KVTIER_KERNELS_SRC_CODECS_DEVICE_MEMORY_H_
#define KVTIER_KERNELS_SRC_CODECS_DEVICE_MEMORY_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "codecs/geometry.h"
#include "kvtier/kernels/codec.h"

namespace kvtier::kernels::internal {

// Owns a device allocation (cudaMalloc / cudaFree). Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), size_(o.size_) {
    o.ptr_ = nullptr;
    o.size_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  static absl::StatusOr<DeviceBuffer> Allocate(size_t bytes);
  void* get() const { return ptr_; }
  size_t size() const { return size_; }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

absl::Status CopyToHost(void* host_dst, const void* device_src, size_t bytes);
absl::Status CopyToDevice(void* device_dst, const void* host_src, size_t bytes);
absl::Status DeviceZero(void* device_dst, size_t bytes);
// Synchronizes the default stream and turns a launcher's return code into a Status.
absl::Status FinishLaunch(int launch_code, const char* what);

// A DecodeTarget with its layer_base array and block table copied to the device.
struct DeviceTarget {
  DeviceBuffer storage;
  TargetView view;
};
absl::StatusOr<DeviceTarget> UploadTarget(const DecodeTarget& target, uint32_t num_tokens);

// TargetView over a host DecodeTarget (no copies; valid while `target` lives).
TargetView HostTargetView(const DecodeTarget& target);

}  // namespace kvtier::kernels::internal

#endif  // KVTIER_KERNELS_SRC_CODECS_DEVICE_MEMORY_H_
