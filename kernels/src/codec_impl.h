// Internal: the interface each codec implements so that the one dispatcher in codec.cc can run
// it on the CPU or the GPU. Not a public header.
//
// A payload is header + body (docs/FORMAT.md). The dispatcher writes and verifies the header and
// checksums; a CodecImpl only sizes, fills and reads the body. Body bytes must be identical
// whether EncodeHost or EncodeDevice produced them (ties documented in docs/FORMAT.md).
#ifndef KVTIER_KERNELS_SRC_CODEC_IMPL_H_
#define KVTIER_KERNELS_SRC_CODEC_IMPL_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvtier/kernels/codec.h"

namespace kvtier::kernels::internal {

// Everything that determines a body's size and meaning apart from the data itself.
struct ChunkShape {
  KvLayout layout;
  uint32_t num_tokens = 0;
  uint64_t first_position = 0;
  bool ends_sequence = false;
};

class CodecImpl {
 public:
  virtual ~CodecImpl() = default;

  // Checks codec-specific constraints against the layout (e.g. kivi needs head_dim % G == 0 for
  // values). `params.Validate()` has already passed.
  virtual absl::Status CheckCompatible(const CodecParams& params, const ChunkShape& shape) const = 0;

  // Exact body size in bytes.
  virtual size_t BodySize(const CodecParams& params, const ChunkShape& shape) const = 0;

  // Host input (canonical layout, shape.layout.dtype) -> host body of exactly BodySize bytes.
  virtual absl::Status EncodeHost(const CodecParams& params, const ChunkShape& shape,
                                  const void* input, absl::Span<uint8_t> body) const = 0;

  // Host body (checksum already verified) -> target (host memory).
  virtual absl::Status DecodeHost(const CodecParams& params, const ChunkShape& shape,
                                  absl::Span<const uint8_t> body,
                                  const DecodeTarget& target) const = 0;

  // Device input -> device body (BodySize bytes, device memory). Runs on the current device's
  // default stream and synchronizes before returning. Unimplemented without CUDA.
  virtual absl::Status EncodeDevice(const CodecParams& params, const ChunkShape& shape,
                                    const void* device_input, void* device_body) const = 0;

  // Device body -> device target. Synchronizes before returning.
  virtual absl::Status DecodeDevice(const CodecParams& params, const ChunkShape& shape,
                                    const void* device_body, const DecodeTarget& target) const = 0;

  // Stream forms of EncodeDevice / DecodeDevice: the same work queued on `stream` (a
  // cudaStream_t) without synchronizing; the buffers must stay valid until the stream has run it.
  // Codecs with their own stream launchers (raw, fp8, kivi: codecs/codec_cuda.h) and the CPU-only
  // build keep the default, Unimplemented, and callers fall back to the synchronizing forms.
  virtual absl::Status EncodeDeviceOn(const CodecParams& params, const ChunkShape& shape,
                                      const void* device_input, void* device_body,
                                      void* stream) const {
    (void)params, (void)shape, (void)device_input, (void)device_body, (void)stream;
    return absl::UnimplementedError("no stream form of this codec's device encode");
  }
  virtual absl::Status DecodeDeviceOn(const CodecParams& params, const ChunkShape& shape,
                                      const void* device_body, const DecodeTarget& target,
                                      void* stream) const {
    (void)params, (void)shape, (void)device_body, (void)target, (void)stream;
    return absl::UnimplementedError("no stream form of this codec's device decode");
  }
};

// One accessor per codec, each defined in its own area. The dispatcher maps CodecId to these.
const CodecImpl& RawCodec();         // src/codecs
const CodecImpl& Fp8Codec();         // src/codecs
const CodecImpl& KiviCodec();        // src/codecs
// Referenced by the dispatcher only when src/turboquant/sources.cmake lists a .cc/.cu/.cpp source
// (KVTIER_HAVE_TURBOQUANT, set in src/codecs/sources.cmake); otherwise kTurboQuant payloads are
// Unimplemented("turboquant not built"). A weak symbol would not do: kvtier_kernels is a static
// library, and a weak reference does not pull an object out of an archive.
const CodecImpl& TurboQuantCodec();  // src/turboquant

// The codec of `id` (src/codecs/codec.cc): FailedPrecondition for ids that are not chunk codecs
// (latent, compacted), Unimplemented for one this build lacks, InvalidArgument for unknown ids.
absl::StatusOr<const CodecImpl*> LookupCodec(CodecId id);

}  // namespace kvtier::kernels::internal

#endif  // KVTIER_KERNELS_SRC_CODEC_IMPL_H_
