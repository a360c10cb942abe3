// GpuStager (kvtier/kernels/gpu_stager.h): a pool of device staging buffers around the public
// Encode / Decode of device memory. Built with and without CUDA; without it Create() refuses.
#include "kvtier/kernels/gpu_stager.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "codecs/device_memory.h"
#include "kvtier/common/status.h"
#include "kvtier/kernels/device.h"

namespace kvtier::kernels {

namespace {

// One staging slot: a device buffer for tensors (encode input, decode output). Grows on demand.
struct Slot {
  internal::DeviceBuffer tensor;
  bool busy = false;
};

}  // namespace

class GpuStager::Impl {
 public:
  explicit Impl(const Options& options) : options_(options), slots_(options.slots) {}

  // Borrows a free slot whose buffer holds at least `bytes`; released by SlotLease's destructor.
  class SlotLease {
   public:
    SlotLease(Impl* impl, Slot* slot) : impl_(impl), slot_(slot) {}
    ~SlotLease() {
      {
        std::lock_guard<std::mutex> lock(impl_->mu_);
        slot_->busy = false;
      }
      impl_->cv_.notify_one();
    }
    SlotLease(const SlotLease&) = delete;
    SlotLease& operator=(const SlotLease&) = delete;
    Slot* slot() const { return slot_; }

   private:
    Impl* impl_;
    Slot* slot_;
  };

  absl::StatusOr<std::unique_ptr<SlotLease>> Acquire(size_t bytes) {
    if (bytes > options_.max_tensor_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("GPU staging: chunk of ", bytes, " bytes exceeds max_tensor_bytes ",
                       options_.max_tensor_bytes));
    }
    Slot* slot = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        for (Slot& s : slots_) {
          if (!s.busy) {
            slot = &s;
            return true;
          }
        }
        return false;
      });
      slot->busy = true;
    }
    auto lease = std::make_unique<SlotLease>(this, slot);
    if (slot->tensor.size() < bytes) {
      slot->tensor = internal::DeviceBuffer();  // free first: the device may not hold both
      KVTIER_ASSIGN_OR_RETURN(slot->tensor, internal::DeviceBuffer::Allocate(bytes));
    }
    return lease;
  }

  const Options options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Slot> slots_;  // Guarded by mu_ (busy flags); a slot's buffer by its lease.
  std::atomic<uint64_t> encodes_{0};
  std::atomic<uint64_t> decodes_{0};
};

absl::Status GpuStager::Options::Validate() const {
  if (slots < 1 || slots > 64) {
    return absl::InvalidArgumentError(absl::StrCat("GPU staging: slots = ", slots,
                                                   ", must be in [1, 64]"));
  }
  if (max_tensor_bytes == 0) {
    return absl::InvalidArgumentError("GPU staging: max_tensor_bytes must be > 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GpuStager>> GpuStager::Create(const Options& options) {
  KVTIER_RETURN_IF_ERROR(options.Validate());
  if (!CudaBuilt()) {
    return absl::FailedPreconditionError("GPU codecs requested, but kvtier was built without CUDA");
  }
  if (CudaDeviceCount() == 0) {
    return absl::FailedPreconditionError("GPU codecs requested, but no GPU is visible");
  }
  return std::unique_ptr<GpuStager>(new GpuStager(std::make_unique<Impl>(options)));
}

GpuStager::GpuStager(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GpuStager::~GpuStager() = default;

absl::Status GpuStager::Encode(const CodecParams& params, const ChunkInput& input,
                               std::vector<uint8_t>* payload) {
  if (input.space != MemorySpace::kHost) {
    return absl::InvalidArgumentError("GpuStager::Encode: input must be in host memory");
  }
  if (input.data == nullptr) return absl::InvalidArgumentError("GpuStager::Encode: no input");
  const size_t bytes = input.layout.ChunkBytes(input.num_tokens);
  if (bytes == 0) return absl::InvalidArgumentError("GpuStager::Encode: empty chunk");
  impl_->encodes_.fetch_add(1, std::memory_order_relaxed);
  KVTIER_ASSIGN_OR_RETURN(auto lease, impl_->Acquire(bytes));
  KVTIER_RETURN_IF_ERROR(internal::CopyToDevice(lease->slot()->tensor.get(), input.data, bytes));
  ChunkInput on_device = input;
  on_device.data = lease->slot()->tensor.get();
  on_device.space = MemorySpace::kDevice;
  return kernels::Encode(params, on_device, payload);
}

absl::Status GpuStager::DecodeContiguous(absl::Span<const uint8_t> payload,
                                         absl::Span<uint8_t> out) {
  KVTIER_ASSIGN_OR_RETURN(PayloadInfo info, InspectPayload(payload));
  const size_t bytes = info.DecodedBytes();
  if (out.size() != bytes) {
    return absl::InvalidArgumentError(absl::StrCat("GpuStager::DecodeContiguous: out has ",
                                                   out.size(), " bytes, the chunk needs ",
                                                   bytes));
  }
  impl_->decodes_.fetch_add(1, std::memory_order_relaxed);
  KVTIER_ASSIGN_OR_RETURN(auto lease, impl_->Acquire(bytes));
  void* device = lease->slot()->tensor.get();
  KVTIER_RETURN_IF_ERROR(kernels::Decode(
      payload, DecodeTarget::Contiguous(device, info.layout, info.num_tokens, MemorySpace::kDevice)));
  return internal::CopyToHost(out.data(), device, bytes);
}

uint64_t GpuStager::encodes() const { return impl_->encodes_.load(std::memory_order_relaxed); }
uint64_t GpuStager::decodes() const { return impl_->decodes_.load(std::memory_order_relaxed); }

}  // namespace kvtier::kernels
