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

// Page-locked host memory (cudaHostAlloc / cudaFreeHost). Copies between it and the device run
// as DMA at the link's speed and can be asynchronous, unlike copies from pageable memory, which
// the driver stages through its own buffers. Allocation is slow (pages are locked): keep and
// reuse these. Move-only.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& o) noexcept : ptr_(o.ptr_), size_(o.size_) {
    o.ptr_ = nullptr;
    o.size_ = 0;
  }
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  static absl::StatusOr<PinnedBuffer> Allocate(size_t bytes);
  uint8_t* get() const { return static_cast<uint8_t*>(ptr_); }
  size_t size() const { return size_; }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

// A CUDA stream of the current device created with cudaStreamNonBlocking: its work neither waits
// for nor holds up the legacy default stream, so callers on different streams overlap. get() is
// the cudaStream_t as void* (nullptr when empty). Move-only.
class DeviceStream {
 public:
  DeviceStream() = default;
  ~DeviceStream();
  DeviceStream(DeviceStream&& o) noexcept : stream_(o.stream_) { o.stream_ = nullptr; }
  DeviceStream& operator=(DeviceStream&& o) noexcept;
  DeviceStream(const DeviceStream&) = delete;
  DeviceStream& operator=(const DeviceStream&) = delete;

  static absl::StatusOr<DeviceStream> Create();
  void* get() const { return stream_; }

 private:
  void* stream_ = nullptr;
};

// A CUDA event without timing (cudaEventDisableTiming): marks a point in a stream that the host
// can wait for. Waiting on an event never recorded returns at once. Move-only.
class DeviceEvent {
 public:
  DeviceEvent() = default;
  ~DeviceEvent();
  DeviceEvent(DeviceEvent&& o) noexcept : event_(o.event_) { o.event_ = nullptr; }
  DeviceEvent& operator=(DeviceEvent&& o) noexcept;
  DeviceEvent(const DeviceEvent&) = delete;
  DeviceEvent& operator=(const DeviceEvent&) = delete;

  static absl::StatusOr<DeviceEvent> Create();
  absl::Status Record(void* stream);  // after the work queued on `stream` so far
  absl::Status Wait();                // blocks the host until that work is done

 private:
  void* event_ = nullptr;
};

// Stream-ordered variants (cudaMemcpyAsync / cudaMemsetAsync on `stream`, a cudaStream_t; nullptr
// = legacy default stream). They return once queued; the host memory of a copy must be pinned
// for the copy to be truly asynchronous, and must stay valid until the stream passes it.
absl::Status CopyToHostAsync(void* host_dst, const void* device_src, size_t bytes, void* stream);
absl::Status CopyToDeviceAsync(void* device_dst, const void* host_src, size_t bytes,
                               void* stream);
absl::Status DeviceZeroAsync(void* device_dst, size_t bytes, void* stream);
absl::Status SyncStream(void* stream);
// Turns a launcher's return code (codec_cuda.h) into a Status without synchronizing anything
// (unlike FinishLaunch).
absl::Status CheckLaunch(int launch_code, const char* what);

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
