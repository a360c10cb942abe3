// GpuStager: runs the codec kernels on chunks that live in host memory, by staging them through
// device memory. It is for a process that receives tensors over the network on a GPU node
// (kvtierd's ingest and fetch): encode and decode run on the GPU, give the same payload bytes as
// the CPU reference (docs/FORMAT.md), and leave the CPU to the network.
//
// Each call copies its input to the device, runs the kernels on the current CUDA device and
// copies the result back before returning. Each slot owns a non-blocking CUDA stream, device
// buffers that grow to the largest chunk seen (up to Options::max_tensor_bytes) and a page-locked
// host staging buffer (up to Options::staging_bytes) split in two halves: a transfer moves in
// half-sized pieces, the calling thread copying one piece between the caller's memory and the
// staging buffer while the DMA engine moves the other, so calls on different slots overlap
// (raw, fp8, kivi and TurboQuant kernels run on the slot's stream).
//
// Thread-safety: thread-safe. At most Options::slots calls stage at once; others wait for a slot.
#ifndef KVTIER_KERNELS_GPU_STAGER_H_
#define KVTIER_KERNELS_GPU_STAGER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvtier/kernels/codec.h"

namespace kvtier::kernels {

class GpuStager {
 public:
  struct Options {
    int slots = 2;                           // concurrent staging calls, each with its buffers
    size_t max_tensor_bytes = size_t{256} << 20;  // larger chunks are refused (ResourceExhausted)
    // Page-locked host memory per slot (allocated on first use, sized to the transfers seen up to
    // this cap, >= 64 KiB). Transfers larger than half of it move in pieces.
    size_t staging_bytes = size_t{4} << 20;
    // true: the path before per-slot streams and pinned staging (pageable copies and the public
    // Encode / Decode of device memory, on the legacy default stream), kept to measure the two
    // side by side (bench/daemon_codec_device.sh). Create() also sets it when the environment
    // has KVTIER_GPU_STAGING=legacy. Same bytes either way.
    bool legacy_staging = false;
    absl::Status Validate() const;
  };

  // FailedPrecondition when the build has no CUDA or no GPU is visible.
  static absl::StatusOr<std::unique_ptr<GpuStager>> Create(const Options& options);
  ~GpuStager();
  GpuStager(const GpuStager&) = delete;
  GpuStager& operator=(const GpuStager&) = delete;

  // kernels::Encode of a host-memory `input`, computed by the GPU kernels. Same payload bytes as
  // the CPU reference. Unimplemented for codecs or layouts without GPU kernels.
  absl::Status Encode(const CodecParams& params, const ChunkInput& input,
                      std::vector<uint8_t>* payload);

  // Decodes a host-memory payload on the GPU into `out`: the canonical contiguous layout in host
  // memory, exactly PayloadInfo::DecodedBytes() long. Validates the payload first (as
  // kernels::Decode); on error `out` is untouched.
  absl::Status DecodeContiguous(absl::Span<const uint8_t> payload, absl::Span<uint8_t> out);

  // Calls that ran on the GPU (successful or not), for metrics and tests.
  uint64_t encodes() const;
  uint64_t decodes() const;

 private:
  class Impl;
  explicit GpuStager(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_GPU_STAGER_H_
