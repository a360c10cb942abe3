// CUDA implementation of device_memory.h.
#include <cuda_runtime_api.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "codecs/codec_cuda.h"
#include "codecs/device_memory.h"

namespace kvtier::kernels::internal {
namespace {

absl::Status CudaError(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  cudaGetLastError();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

}  // namespace

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ != nullptr) cudaFree(ptr_);
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = o.ptr_;
    size_ = o.size_;
    o.ptr_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes) {
  DeviceBuffer b;
  if (bytes == 0) return b;
  cudaError_t e = cudaMalloc(&b.ptr_, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(
        absl::StrCat("cudaMalloc(", bytes, "): ", cudaGetErrorString(e)));
  }
  b.size_ = bytes;
  return b;
}

PinnedBuffer::~PinnedBuffer() {
  if (ptr_ != nullptr) cudaFreeHost(ptr_);
}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_ != nullptr) cudaFreeHost(ptr_);
    ptr_ = o.ptr_;
    size_ = o.size_;
    o.ptr_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

absl::StatusOr<PinnedBuffer> PinnedBuffer::Allocate(size_t bytes) {
  PinnedBuffer b;
  if (bytes == 0) return b;
  cudaError_t e = cudaHostAlloc(&b.ptr_, bytes, cudaHostAllocDefault);
  if (e != cudaSuccess) {
    cudaGetLastError();
    b.ptr_ = nullptr;
    return absl::ResourceExhaustedError(
        absl::StrCat("cudaHostAlloc(", bytes, "): ", cudaGetErrorString(e)));
  }
  b.size_ = bytes;
  return b;
}

DeviceStream::~DeviceStream() {
  if (stream_ != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
}

DeviceStream& DeviceStream::operator=(DeviceStream&& o) noexcept {
  if (this != &o) {
    if (stream_ != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
    stream_ = o.stream_;
    o.stream_ = nullptr;
  }
  return *this;
}

absl::StatusOr<DeviceStream> DeviceStream::Create() {
  cudaStream_t s = nullptr;
  if (absl::Status st = CudaError(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking),
                                  "cudaStreamCreateWithFlags");
      !st.ok()) {
    return st;
  }
  DeviceStream d;
  d.stream_ = s;
  return d;
}

DeviceEvent::~DeviceEvent() {
  if (event_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
}

DeviceEvent& DeviceEvent::operator=(DeviceEvent&& o) noexcept {
  if (this != &o) {
    if (event_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
    event_ = o.event_;
    o.event_ = nullptr;
  }
  return *this;
}

absl::StatusOr<DeviceEvent> DeviceEvent::Create() {
  cudaEvent_t e = nullptr;
  if (absl::Status st = CudaError(cudaEventCreateWithFlags(&e, cudaEventDisableTiming),
                                  "cudaEventCreateWithFlags");
      !st.ok()) {
    return st;
  }
  DeviceEvent d;
  d.event_ = e;
  return d;
}

absl::Status DeviceEvent::Record(void* stream) {
  return CudaError(
      cudaEventRecord(static_cast<cudaEvent_t>(event_), static_cast<cudaStream_t>(stream)),
      "cudaEventRecord");
}

absl::Status DeviceEvent::Wait() {
  return CudaError(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)), "cudaEventSynchronize");
}

absl::Status CopyToHostAsync(void* host_dst, const void* device_src, size_t bytes, void* stream) {
  if (bytes == 0) return absl::OkStatus();
  return CudaError(cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost,
                                   static_cast<cudaStream_t>(stream)),
                   "cudaMemcpyAsync device to host");
}

absl::Status CopyToDeviceAsync(void* device_dst, const void* host_src, size_t bytes,
                               void* stream) {
  if (bytes == 0) return absl::OkStatus();
  return CudaError(cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice,
                                   static_cast<cudaStream_t>(stream)),
                   "cudaMemcpyAsync host to device");
}

absl::Status DeviceZeroAsync(void* device_dst, size_t bytes, void* stream) {
  if (bytes == 0) return absl::OkStatus();
  return CudaError(cudaMemsetAsync(device_dst, 0, bytes, static_cast<cudaStream_t>(stream)),
                   "cudaMemsetAsync");
}

absl::Status SyncStream(void* stream) {
  return CudaError(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)),
                   "cudaStreamSynchronize");
}

absl::Status CheckLaunch(int launch_code, const char* what) {
  if (launch_code == 0) return absl::OkStatus();
  cudaGetLastError();
  return absl::InternalError(
      absl::StrCat(what, ": launch failed: ", cuda::ErrorString(launch_code)));
}

absl::Status CopyToHost(void* host_dst, const void* device_src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return CudaError(cudaMemcpy(host_dst, device_src, bytes, cudaMemcpyDeviceToHost),
                   "cudaMemcpy device to host");
}

absl::Status CopyToDevice(void* device_dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return CudaError(cudaMemcpy(device_dst, host_src, bytes, cudaMemcpyHostToDevice),
                   "cudaMemcpy host to device");
}

absl::Status DeviceZero(void* device_dst, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return CudaError(cudaMemset(device_dst, 0, bytes), "cudaMemset");
}

absl::Status FinishLaunch(int launch_code, const char* what) {
  if (launch_code != 0) {
    cudaGetLastError();
    return absl::InternalError(
        absl::StrCat(what, ": launch failed: ", cuda::ErrorString(launch_code)));
  }
  return CudaError(cudaDeviceSynchronize(), what);
}

absl::StatusOr<DeviceTarget> UploadTarget(const DecodeTarget& target, uint32_t num_tokens) {
  DeviceTarget dt;
  const size_t layers = target.layer_base.size();
  const size_t blocks =
      target.block_table != nullptr ? (num_tokens + target.block_size - 1) / target.block_size : 0;
  const size_t bytes = layers * sizeof(void*) + blocks * sizeof(int32_t);
  std::vector<uint8_t> host(bytes);
  std::memcpy(host.data(), target.layer_base.data(), layers * sizeof(void*));
  if (blocks) {
    std::memcpy(host.data() + layers * sizeof(void*), target.block_table, blocks * sizeof(int32_t));
  }
  auto buf = DeviceBuffer::Allocate(bytes);
  if (!buf.ok()) return buf.status();
  dt.storage = std::move(buf).value();
  if (absl::Status s = CopyToDevice(dt.storage.get(), host.data(), bytes); !s.ok()) return s;
  dt.view = HostTargetView(target);
  char* base = static_cast<char*>(dt.storage.get());
  dt.view.layer_base = reinterpret_cast<char* const*>(base);
  dt.view.block_table =
      blocks ? reinterpret_cast<const int32_t*>(base + layers * sizeof(void*)) : nullptr;
  return dt;
}

}  // namespace kvtier::kernels::internal
