// Internal: CUDA launchers of the raw, fp8 and kivi codecs (defined in *.cu, built only with
// CUDA). They take plain types only (no CUDA or Abseil types) so that .cc files and benchmarks can
// call them. Each works on `num_chunks` chunks of one shape at once: chunk i's input, body and
// target are at i * in_stride, i * body_stride and i * target.chunk_stride from chunk 0's
// (the single-chunk dispatcher path passes num_chunks = 1). Launches go on `stream` (a
// cudaStream_t; nullptr = default stream) without synchronizing. Return 0 or a cudaError_t value.
// The body must be zero-filled beforehand (padding bytes are not written).
// Not a public header.
#ifndef KVTIER_KERNELS_SRC_CODECS_CODEC_CUDA_H_
#define KVTIER_KERNELS_SRC_CODECS_CODEC_CUDA_H_

#include <cstdint>

#include "codecs/geometry.h"

namespace kvtier::kernels::internal::cuda {

// cudaErrorInvalidValue, reported for an unsupported dtype code.
inline constexpr int kUnsupported = 1;

int LaunchRawEncode(const StreamShape& shape, const void* in, uint64_t in_stride, void* body,
                    uint64_t body_stride, uint32_t num_chunks, void* stream);
int LaunchRawDecode(const StreamShape& shape, const void* body, uint64_t body_stride,
                    const TargetView& target, uint32_t num_chunks, void* stream);

int LaunchFp8Encode(uint8_t dtype, const StreamShape& shape, const void* in, uint64_t in_stride,
                    void* body, uint64_t body_stride, uint32_t num_chunks, void* stream);
int LaunchFp8Decode(uint8_t dtype, const StreamShape& shape, const void* body,
                    uint64_t body_stride, const TargetView& target, uint32_t num_chunks,
                    void* stream);

int LaunchKiviEncode(uint8_t dtype, const KiviGeometry& geo, const void* in, uint64_t in_stride,
                     void* body, uint64_t body_stride, uint32_t num_chunks, void* stream);
int LaunchKiviDecode(uint8_t dtype, const KiviGeometry& geo, const void* body,
                     uint64_t body_stride, const TargetView& target, uint32_t num_chunks,
                     void* stream);

const char* ErrorString(int code);

}  // namespace kvtier::kernels::internal::cuda

#endif  // KVTIER_KERNELS_SRC_CODECS_CODEC_CUDA_H_
