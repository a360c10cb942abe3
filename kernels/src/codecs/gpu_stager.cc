// GpuStager (kvtier/kernels/gpu_stager.h): a pool of slots, each with a non-blocking stream,
// device buffers and a page-locked staging buffer, around the codec kernels. Built with and
// without CUDA; without it Create() refuses.
//
// Why this shape: with pageable host memory every copy is staged by the driver and blocks the
// calling thread, and the public Encode / Decode of device memory allocate per call and
// synchronize the whole device, so concurrent callers serialize. Here a slot's copies, memset
// and kernels (raw, fp8, kivi and turboquant) are queued on its own stream and only that stream
// is waited for.
#include "kvtier/kernels/gpu_stager.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "codec_impl.h"
#include "codecs/device_memory.h"
#include "codecs/format.h"
#include "codecs/geometry.h"
#include "codecs/stream_shape.h"
#include "kvtier/common/crc32c.h"
#include "kvtier/common/logging.h"
#include "kvtier/common/status.h"
#include "kvtier/kernels/device.h"
#ifdef KVTIER_HAVE_CUDA
#include "codecs/codec_cuda.h"
#endif

namespace kvtier::kernels {

namespace {

using internal::ChunkShape;
using internal::CodecImpl;

constexpr size_t kMinStagingBytes = size_t{64} << 10;
constexpr size_t kStagingGranule = size_t{64} << 10;  // staging halves grow in these steps

// One staging slot. Its members are used only by the call holding the slot.
struct Slot {
  bool busy = false;                // guarded by Impl::mu_
  internal::DeviceBuffer tensor;    // encode input / decode output (canonical layout)
  internal::DeviceBuffer body;      // encode output / decode input (payload body)
  internal::DeviceBuffer table;     // layer bases of the decode target over `tensor`
  const void* table_base = nullptr;  // what `table` holds: bases of table_base ...
  uint32_t table_layers = 0;         // ... for this many layers ...
  uint64_t table_layer_bytes = 0;    // ... this far apart
  internal::PinnedBuffer pinned;    // two halves of `half` bytes
  size_t half = 0;
  internal::DeviceStream stream;
  internal::DeviceEvent done[2];    // the DMA through half i has finished
};

// Grows `*buf` to at least `bytes`, freeing first (the device may not hold both).
absl::Status Reserve(internal::DeviceBuffer* buf, size_t bytes) {
  if (buf->size() >= bytes) return absl::OkStatus();
  *buf = internal::DeviceBuffer();
  KVTIER_ASSIGN_OR_RETURN(*buf, internal::DeviceBuffer::Allocate(bytes));
  return absl::OkStatus();
}

// Raw, fp8 and kivi kernels launch on the slot's stream (codec_cuda.h); other codecs go through
// CodecImpl's stream forms (turboquant) or, where a codec has none, its synchronizing forms on
// the legacy default stream.
bool HasStreamLaunchers(CodecId id) {
  return id == CodecId::kRaw || id == CodecId::kFp8 || id == CodecId::kKivi;
}

absl::Status LaunchEncodeOnStream(const CodecParams& p, const ChunkShape& shape,
                                  const void* device_input, void* device_body, void* stream) {
#ifdef KVTIER_HAVE_CUDA
  namespace cuda = internal::cuda;
  const internal::StreamShape s = internal::MakeStreamShape(shape);
  const uint8_t dtype = internal::DTypeCode(shape.layout.dtype);
  switch (p.id) {
    case CodecId::kRaw:
      return internal::CheckLaunch(
          cuda::LaunchRawEncode(s, device_input, 0, device_body, 0, 1, stream), "raw encode");
    case CodecId::kFp8:
      return internal::CheckLaunch(
          cuda::LaunchFp8Encode(dtype, s, device_input, 0, device_body, 0, 1, stream),
          "fp8 encode");
    case CodecId::kKivi:
      return internal::CheckLaunch(
          cuda::LaunchKiviEncode(dtype,
                                 internal::KiviGeometry::Make(s, p.bits, p.group_size,
                                                              shape.first_position,
                                                              shape.ends_sequence, p.sink_tokens,
                                                              p.tail_tokens),
                                 device_input, 0, device_body, 0, 1, stream),
          "kivi encode");
    default:
      break;
  }
#else
  (void)p, (void)shape, (void)device_input, (void)device_body, (void)stream;
#endif
  return absl::InternalError("GPU staging: no stream launcher for this codec");
}

absl::Status LaunchDecodeOnStream(const CodecParams& p, const ChunkShape& shape,
                                  const void* device_body, const internal::TargetView& target,
                                  void* stream) {
#ifdef KVTIER_HAVE_CUDA
  namespace cuda = internal::cuda;
  const internal::StreamShape s = internal::MakeStreamShape(shape);
  const uint8_t dtype = internal::DTypeCode(shape.layout.dtype);
  switch (p.id) {
    case CodecId::kRaw:
      return internal::CheckLaunch(cuda::LaunchRawDecode(s, device_body, 0, target, 1, stream),
                                   "raw decode");
    case CodecId::kFp8:
      return internal::CheckLaunch(
          cuda::LaunchFp8Decode(dtype, s, device_body, 0, target, 1, stream), "fp8 decode");
    case CodecId::kKivi:
      return internal::CheckLaunch(
          cuda::LaunchKiviDecode(dtype,
                                 internal::KiviGeometry::Make(s, p.bits, p.group_size,
                                                              shape.first_position,
                                                              shape.ends_sequence, p.sink_tokens,
                                                              p.tail_tokens),
                                 device_body, 0, target, 1, stream),
          "kivi decode");
    default:
      break;
  }
#else
  (void)p, (void)shape, (void)device_body, (void)target, (void)stream;
#endif
  return absl::InternalError("GPU staging: no stream launcher for this codec");
}

}  // namespace

class GpuStager::Impl {
 public:
  explicit Impl(const Options& options) : options_(options), slots_(options.slots) {}

  // Creates each slot's stream and events (not for the legacy path, which uses neither).
  absl::Status Init() {
    if (options_.legacy_staging) return absl::OkStatus();
    for (Slot& s : slots_) {
      KVTIER_ASSIGN_OR_RETURN(s.stream, internal::DeviceStream::Create());
      for (internal::DeviceEvent& e : s.done) {
        KVTIER_ASSIGN_OR_RETURN(e, internal::DeviceEvent::Create());
      }
    }
    return absl::OkStatus();
  }

  // A borrowed slot, released by the destructor. A call that failed part-way may have copies in
  // flight that read or write the slot's buffers: the stream is drained before the slot is free.
  class SlotLease {
   public:
    SlotLease(Impl* impl, Slot* slot) : impl_(impl), slot_(slot) {}
    ~SlotLease() {
      if (slot_->stream.get() != nullptr) (void)internal::SyncStream(slot_->stream.get());
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

  // Borrows a free slot whose tensor buffer holds at least `tensor_bytes`.
  absl::StatusOr<std::unique_ptr<SlotLease>> Acquire(size_t tensor_bytes) {
    if (tensor_bytes > options_.max_tensor_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("GPU staging: chunk of ", tensor_bytes, " bytes exceeds max_tensor_bytes ",
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
    KVTIER_RETURN_IF_ERROR(Reserve(&slot->tensor, tensor_bytes));
    return lease;
  }

  // Grows the slot's staging buffer for a transfer of `bytes` (halves up to staging_bytes / 2).
  absl::Status ReserveStaging(Slot* s, size_t bytes) const {
    const size_t cap = options_.staging_bytes / 2;
    const size_t want =
        std::min(cap, (bytes + kStagingGranule - 1) / kStagingGranule * kStagingGranule);
    if (s->half >= want) return absl::OkStatus();
    // Copies queued earlier in this call may still use the old buffer: let them finish first.
    for (internal::DeviceEvent& e : s->done) KVTIER_RETURN_IF_ERROR(e.Wait());
    s->pinned = internal::PinnedBuffer();
    s->half = 0;
    KVTIER_ASSIGN_OR_RETURN(s->pinned, internal::PinnedBuffer::Allocate(2 * want));
    s->half = want;
    return absl::OkStatus();
  }

  // Host memory -> device, through the staging halves in turn: the host fills one half while the
  // DMA engine empties the other. Returns once the last piece is queued on the slot's stream;
  // work queued after it on that stream sees the data.
  absl::Status Upload(Slot* s, void* device_dst, const void* host_src, size_t bytes) const {
    KVTIER_RETURN_IF_ERROR(ReserveStaging(s, bytes));
    const auto* src = static_cast<const uint8_t*>(host_src);
    auto* dst = static_cast<uint8_t*>(device_dst);
    for (size_t off = 0, i = 0; off < bytes; off += s->half, ++i) {
      const size_t n = std::min(s->half, bytes - off);
      uint8_t* stage = s->pinned.get() + (i % 2) * s->half;
      KVTIER_RETURN_IF_ERROR(s->done[i % 2].Wait());  // the half's previous DMA has finished
      std::memcpy(stage, src + off, n);
      KVTIER_RETURN_IF_ERROR(internal::CopyToDeviceAsync(dst + off, stage, n, s->stream.get()));
      KVTIER_RETURN_IF_ERROR(s->done[i % 2].Record(s->stream.get()));
    }
    return absl::OkStatus();
  }

  // Device -> host memory, after everything queued on the slot's stream so far: the DMA engine
  // fills one half while the host empties the other. Returns when all bytes are in `host_dst`.
  // Nothing is written to `host_dst` before the first piece (queued after the kernels) is done,
  // so a failed kernel leaves it untouched.
  absl::Status Download(Slot* s, void* host_dst, const void* device_src, size_t bytes) const {
    KVTIER_RETURN_IF_ERROR(ReserveStaging(s, bytes));
    const auto* src = static_cast<const uint8_t*>(device_src);
    auto* dst = static_cast<uint8_t*>(host_dst);
    const size_t h = s->half;
    const size_t pieces = (bytes + h - 1) / h;
    auto issue = [&](size_t i) -> absl::Status {
      const size_t off = i * h;
      KVTIER_RETURN_IF_ERROR(internal::CopyToHostAsync(
          s->pinned.get() + (i % 2) * h, src + off, std::min(h, bytes - off), s->stream.get()));
      return s->done[i % 2].Record(s->stream.get());
    };
    for (size_t i = 0; i < std::min<size_t>(2, pieces); ++i) KVTIER_RETURN_IF_ERROR(issue(i));
    for (size_t i = 0; i < pieces; ++i) {
      KVTIER_RETURN_IF_ERROR(s->done[i % 2].Wait());
      const size_t off = i * h;
      std::memcpy(dst + off, s->pinned.get() + (i % 2) * h, std::min(h, bytes - off));
      // The stream runs in order, so piece i + 2 (same half) cannot overtake piece i + 1.
      if (i + 2 < pieces) KVTIER_RETURN_IF_ERROR(issue(i + 2));
    }
    return absl::OkStatus();
  }

  // The slot's device table of layer bases for a contiguous target over its tensor buffer,
  // uploaded only when the buffer or the layout's layer stride changed.
  absl::StatusOr<const void*> LayerTable(Slot* s, const DecodeTarget& target) const {
    const uint32_t layers = static_cast<uint32_t>(target.layer_base.size());
    const uint64_t stride =
        layers > 1 ? static_cast<uint64_t>(static_cast<char*>(target.layer_base[1]) -
                                           static_cast<char*>(target.layer_base[0]))
                   : 0;
    if (s->table_base != s->tensor.get() || s->table_layers != layers ||
        s->table_layer_bytes != stride) {
      s->table_base = nullptr;
      const size_t bytes = layers * sizeof(void*);
      KVTIER_RETURN_IF_ERROR(Reserve(&s->table, bytes));
      // Rare (a new buffer or layout), so a plain synchronous copy of a few bytes will do.
      KVTIER_RETURN_IF_ERROR(
          internal::CopyToDevice(s->table.get(), target.layer_base.data(), bytes));
      s->table_base = s->tensor.get();
      s->table_layers = layers;
      s->table_layer_bytes = stride;
    }
    return static_cast<const void*>(s->table.get());
  }

  absl::Status EncodeStaged(const CodecParams& params, const ChunkInput& input, size_t bytes,
                            std::vector<uint8_t>* payload);
  absl::Status DecodeStaged(absl::Span<const uint8_t> payload, const PayloadInfo& info,
                            absl::Span<uint8_t> out);
  absl::Status EncodeLegacy(const CodecParams& params, const ChunkInput& input, size_t bytes,
                            std::vector<uint8_t>* payload);
  absl::Status DecodeLegacy(absl::Span<const uint8_t> payload, const PayloadInfo& info,
                            absl::Span<uint8_t> out);

  const Options options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Slot> slots_;  // Guarded by mu_ (busy flags); a slot's buffers by its lease.
  std::atomic<uint64_t> encodes_{0};
  std::atomic<uint64_t> decodes_{0};
};

absl::Status GpuStager::Impl::EncodeStaged(const CodecParams& params, const ChunkInput& input,
                                           size_t bytes, std::vector<uint8_t>* payload) {
  // The dispatcher's checks (params, shape, codec built, codec accepts the layout), then the
  // codec's own check for this exact shape.
  KVTIER_RETURN_IF_ERROR(MaxPayloadSize(params, input.layout, input.num_tokens).status());
  const ChunkShape shape{input.layout, input.num_tokens, input.first_position,
                         input.ends_sequence};
  KVTIER_ASSIGN_OR_RETURN(const CodecImpl* impl, internal::LookupCodec(params.id));
  KVTIER_RETURN_IF_ERROR(impl->CheckCompatible(params, shape));
  const size_t body_bytes = impl->BodySize(params, shape);

  KVTIER_ASSIGN_OR_RETURN(auto lease, Acquire(bytes));
  Slot* s = lease->slot();
  KVTIER_RETURN_IF_ERROR(Reserve(&s->body, body_bytes));
  KVTIER_RETURN_IF_ERROR(ReserveStaging(s, std::max(bytes, body_bytes)));
  void* stream = s->stream.get();
  // The kernels leave padding bytes unwritten: the body starts zeroed.
  KVTIER_RETURN_IF_ERROR(internal::DeviceZeroAsync(s->body.get(), body_bytes, stream));
  KVTIER_RETURN_IF_ERROR(Upload(s, s->tensor.get(), input.data, bytes));
  if (HasStreamLaunchers(params.id)) {
    KVTIER_RETURN_IF_ERROR(
        LaunchEncodeOnStream(params, shape, s->tensor.get(), s->body.get(), stream));
  } else {
    const absl::Status on = impl->EncodeDeviceOn(params, shape, s->tensor.get(), s->body.get(), stream);
    if (absl::IsUnimplemented(on)) {
      // Runs on the legacy default stream, which does not wait for this non-blocking stream.
      KVTIER_RETURN_IF_ERROR(internal::SyncStream(stream));
      KVTIER_RETURN_IF_ERROR(impl->EncodeDevice(params, shape, s->tensor.get(), s->body.get()));
    } else {
      KVTIER_RETURN_IF_ERROR(on);
    }
  }
  std::vector<uint8_t> out(internal::kHeaderSize + body_bytes);
  uint8_t* body = out.data() + internal::kHeaderSize;
  KVTIER_RETURN_IF_ERROR(Download(s, body, s->body.get(), body_bytes));
  internal::WriteChunkHeader(params, input, body_bytes, out.data());
  *payload = std::move(out);
  return absl::OkStatus();
}

absl::Status GpuStager::Impl::DecodeStaged(absl::Span<const uint8_t> payload,
                                           const PayloadInfo& info, absl::Span<uint8_t> out) {
  KVTIER_ASSIGN_OR_RETURN(const CodecImpl* impl, internal::LookupCodec(info.codec.id));
  const ChunkShape shape{info.layout, info.num_tokens, info.first_position, info.ends_sequence};
  KVTIER_ASSIGN_OR_RETURN(auto lease, Acquire(out.size()));
  Slot* s = lease->slot();
  KVTIER_RETURN_IF_ERROR(Reserve(&s->body, info.body_bytes));
  KVTIER_RETURN_IF_ERROR(ReserveStaging(s, std::max<size_t>(info.body_bytes, out.size())));
  void* stream = s->stream.get();
  KVTIER_RETURN_IF_ERROR(
      Upload(s, s->body.get(), payload.data() + info.header_bytes, info.body_bytes));
  const DecodeTarget target = DecodeTarget::Contiguous(s->tensor.get(), info.layout,
                                                       info.num_tokens, MemorySpace::kDevice);
  if (HasStreamLaunchers(info.codec.id)) {
    internal::TargetView view = internal::HostTargetView(target);
    KVTIER_ASSIGN_OR_RETURN(const void* table, LayerTable(s, target));
    view.layer_base = static_cast<char* const*>(table);
    view.block_table = nullptr;
    KVTIER_RETURN_IF_ERROR(LaunchDecodeOnStream(info.codec, shape, s->body.get(), view, stream));
  } else {
    const absl::Status on = impl->DecodeDeviceOn(info.codec, shape, s->body.get(), target, stream);
    if (absl::IsUnimplemented(on)) {
      KVTIER_RETURN_IF_ERROR(internal::SyncStream(stream));
      KVTIER_RETURN_IF_ERROR(impl->DecodeDevice(info.codec, shape, s->body.get(), target));
    } else {
      KVTIER_RETURN_IF_ERROR(on);
    }
  }
  return Download(s, out.data(), s->tensor.get(), out.size());
}

absl::Status GpuStager::Impl::EncodeLegacy(const CodecParams& params, const ChunkInput& input,
                                           size_t bytes, std::vector<uint8_t>* payload) {
  KVTIER_ASSIGN_OR_RETURN(auto lease, Acquire(bytes));
  KVTIER_RETURN_IF_ERROR(internal::CopyToDevice(lease->slot()->tensor.get(), input.data, bytes));
  ChunkInput on_device = input;
  on_device.data = lease->slot()->tensor.get();
  on_device.space = MemorySpace::kDevice;
  return kernels::Encode(params, on_device, payload);
}

absl::Status GpuStager::Impl::DecodeLegacy(absl::Span<const uint8_t> payload,
                                           const PayloadInfo& info, absl::Span<uint8_t> out) {
  KVTIER_ASSIGN_OR_RETURN(auto lease, Acquire(out.size()));
  void* device = lease->slot()->tensor.get();
  KVTIER_RETURN_IF_ERROR(kernels::Decode(
      payload, DecodeTarget::Contiguous(device, info.layout, info.num_tokens, MemorySpace::kDevice)));
  return internal::CopyToHost(out.data(), device, out.size());
}

absl::Status GpuStager::Options::Validate() const {
  if (slots < 1 || slots > 64) {
    return absl::InvalidArgumentError(absl::StrCat("GPU staging: slots = ", slots,
                                                   ", must be in [1, 64]"));
  }
  if (max_tensor_bytes == 0) {
    return absl::InvalidArgumentError("GPU staging: max_tensor_bytes must be > 0");
  }
  if (staging_bytes < kMinStagingBytes) {
    return absl::InvalidArgumentError(absl::StrCat("GPU staging: staging_bytes = ", staging_bytes,
                                                   ", must be >= ", kMinStagingBytes));
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
  Options o = options;
  if (const char* env = std::getenv("KVTIER_GPU_STAGING");
      env != nullptr && std::string(env) == "legacy" && !o.legacy_staging) {
    KVTIER_LOG(WARNING, "KVTIER_GPU_STAGING=legacy: GPU codecs use the legacy staging path");
    o.legacy_staging = true;
  }
  auto impl = std::make_unique<Impl>(o);
  KVTIER_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<GpuStager>(new GpuStager(std::move(impl)));
}

GpuStager::GpuStager(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GpuStager::~GpuStager() = default;

absl::Status GpuStager::Encode(const CodecParams& params, const ChunkInput& input,
                               std::vector<uint8_t>* payload) {
  if (payload == nullptr) return absl::InvalidArgumentError("GpuStager::Encode: payload is null");
  if (input.space != MemorySpace::kHost) {
    return absl::InvalidArgumentError("GpuStager::Encode: input must be in host memory");
  }
  if (input.data == nullptr) return absl::InvalidArgumentError("GpuStager::Encode: no input");
  const size_t bytes = input.layout.ChunkBytes(input.num_tokens);
  if (bytes == 0) return absl::InvalidArgumentError("GpuStager::Encode: empty chunk");
  impl_->encodes_.fetch_add(1, std::memory_order_relaxed);
  if (impl_->options_.legacy_staging) return impl_->EncodeLegacy(params, input, bytes, payload);
  payload->clear();
  return impl_->EncodeStaged(params, input, bytes, payload);
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
  if (impl_->options_.legacy_staging) return impl_->DecodeLegacy(payload, info, out);
  return impl_->DecodeStaged(payload, info, out);
}

uint64_t GpuStager::encodes() const { return impl_->encodes_.load(std::memory_order_relaxed); }
uint64_t GpuStager::decodes() const { return impl_->decodes_.load(std::memory_order_relaxed); }

}  // namespace kvtier::kernels
