// Codecs: compress a KV chunk into a self-describing, checksummed payload and back.
//
// Every payload (docs/FORMAT.md) decodes on the CPU and on a GPU, and the same input gives the
// same bytes whichever side encoded it (rounding ties are listed in docs/FORMAT.md). The CPU
// reference is always built; with CUDA, the dispatcher runs the GPU kernels when the data lives in
// device memory.
//
// Thread-safety: all functions are thread-safe; concurrent calls on distinct buffers are fine.
#ifndef KVTIER_KERNELS_CODEC_H_
#define KVTIER_KERNELS_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvtier/kernels/layout.h"

namespace kvtier::kernels {

enum class CodecId : uint8_t {
  kRaw = 0,         // no compression, still checksummed
  kFp8 = 1,         // E4M3, one fp32 scale per (layer, K|V, head, token)
  kKivi = 2,        // asymmetric 2/4-bit: keys per channel, values per token
  kTurboQuant = 3,  // rotation + Lloyd-Max codebook (+ 1-bit QJL residual)
  kLatent = 4,      // low-rank PCA latent codec (basis held by the caller)
  kCompacted = 5,   // compacted context from token selection (kernels/selection.h)
};
const char* CodecName(CodecId id);

enum class TurboQuantVariant : uint8_t { kMse = 0, kProd = 1 };
enum class TurboQuantRotation : uint8_t { kHadamard = 0, kDense = 1 };
// Outlier split: kNone = every channel at `bits`; k2p5 = 32 outlier channels at 3 bits + 96 at 2
// (requires bits == 2, head_dim == 128); k3p5 = 64 at 4 bits + 64 at 3 (bits == 3, head_dim 128).
enum class TurboQuantSplit : uint8_t { kNone = 0, k2p5 = 1, k3p5 = 2 };
// QJL projection of the prod variant: kGaussian = a dense n x n N(0,1) matrix (the paper's; every
// payload written before this field existed has it); kHadamard = sqrt(n) x a seeded two-round
// randomized Hadamard transform (docs/FORMAT.md), one more Hadamard transform on each side.
enum class TurboQuantQjl : uint8_t { kGaussian = 0, kHadamard = 1 };
// Arithmetic of TurboQuant's dense matrices (the dense rotation and the Gaussian QJL matrix):
// kFloat = binary32 matvecs summed in a fixed order (every payload written before this field
// existed); kFixed = int16 matrices times quantized int32 vectors, exact integer sums
// (docs/FORMAT.md, "turboquant"), so a GPU may sum in any order. Only a codec that "uses a
// matrix" (TurboQuantUsesMatrix) may say kFixed.
enum class TurboQuantMatrix : uint8_t { kFloat = 0, kFixed = 1 };

// A codec and its parameters. Fields not used by `id` must stay at their defaults (Validate()
// rejects anything else, so equal settings always serialize to equal bytes).
struct CodecParams {
  CodecId id = CodecId::kRaw;
  uint8_t bits = 0;           // kivi: 2 or 4; turboquant: 1..4
  uint16_t group_size = 0;    // kivi: 32, 64 or 128
  uint16_t sink_tokens = 0;   // kivi: the first S tokens of a sequence stay in the input dtype
  uint16_t tail_tokens = 0;   // kivi: when a chunk ends a sequence, its last R tokens stay too
  TurboQuantVariant tq_variant = TurboQuantVariant::kMse;
  TurboQuantRotation tq_rotation = TurboQuantRotation::kHadamard;
  TurboQuantSplit tq_split = TurboQuantSplit::kNone;
  // Prod only (mse must keep kGaussian). The text form's default, when `qjl=` is absent, is
  // TurboQuantDefaultQjl(rotation) below; the struct's default stays 0 so that zeroed bytes mean
  // what they always meant.
  TurboQuantQjl tq_qjl = TurboQuantQjl::kGaussian;
  // Turboquant that uses a matrix only (else kFloat). The text form's default, when `matrix=` is
  // absent, is kFixed for a codec that uses a matrix; the struct's default stays 0 (binary32)
  // so that zeroed bytes mean what they always meant.
  TurboQuantMatrix tq_matrix = TurboQuantMatrix::kFloat;
  uint64_t seed = 0;          // turboquant: rotation and QJL matrix seed

  absl::Status Validate() const;
  // Text form used by configs, the API and the CLI, e.g. "raw", "fp8", "kivi:b=2,g=32,sink=4",
  // "turboquant:b=3,variant=prod,rotation=dense,seed=7", "turboquant:b=2,split=2.5",
  // "turboquant:b=3,variant=prod,qjl=gaussian", "turboquant:b=3,rotation=dense,matrix=float".
  std::string ToString() const;
  static absl::StatusOr<CodecParams> Parse(const std::string& text);
  friend bool operator==(const CodecParams& a, const CodecParams& b);
  friend bool operator!=(const CodecParams& a, const CodecParams& b) { return !(a == b); }
};

// The QJL projection a prod text form without `qjl=` gets (docs/QUALITY.md has the measurements
// behind the choice); ToString() omits `qjl=` exactly when it equals this.
TurboQuantQjl TurboQuantDefaultQjl(TurboQuantRotation rotation);

// Whether a turboquant codec applies a dense matrix: rotation == dense, or variant == prod with
// qjl == gaussian. Only such a codec may have tq_matrix == kFixed.
bool TurboQuantUsesMatrix(TurboQuantVariant variant, TurboQuantRotation rotation,
                          TurboQuantQjl qjl);

// Where a buffer lives.
enum class MemorySpace : uint8_t { kHost = 0, kDevice = 1 };

// A chunk to encode, in the canonical layout, contiguous.
struct ChunkInput {
  const void* data = nullptr;
  MemorySpace space = MemorySpace::kHost;
  KvLayout layout;
  uint32_t num_tokens = 0;
  // Position of the chunk's first token in its sequence (for sink tokens) and whether the chunk
  // ends the sequence (for tail tokens).
  uint64_t first_position = 0;
  bool ends_sequence = false;
};

// Where to decode: element (layer l, K|V kv, head h, token t, dim d) goes to
//   layer_base[l] + kv * stride_kv + h * stride_head + TokenOffset(t) + d * DTypeSize(dtype)
//   TokenOffset(t) = block_table ? block_table[t / block_size] * stride_block
//                                  + (t % block_size) * stride_token
//                                : t * stride_token
// Strides are in bytes. For MLA layouts, kv and h are always 0 and d runs over latent + rope.
// `layer_base` has num_layers entries; with MemorySpace::kDevice they are device pointers (the
// array itself and `block_table` are host arrays; the dispatcher moves them). The decoded dtype
// may differ from the payload's (e.g. fp16 payload into a bf16 engine buffer is rejected; the
// dtype must match in v1).
struct DecodeTarget {
  std::vector<void*> layer_base;
  MemorySpace space = MemorySpace::kHost;
  DType dtype = DType::kFloat16;
  int64_t stride_kv = 0;
  int64_t stride_head = 0;
  int64_t stride_token = 0;
  const int32_t* block_table = nullptr;  // optional paged mapping
  uint32_t block_size = 0;
  int64_t stride_block = 0;

  // The canonical contiguous layout starting at `base`.
  static DecodeTarget Contiguous(void* base, const KvLayout& layout, uint32_t num_tokens,
                                 MemorySpace space = MemorySpace::kHost);
};

// Upper bound on the payload size (header included) of encoding `num_tokens` tokens.
absl::StatusOr<size_t> MaxPayloadSize(const CodecParams& params, const KvLayout& layout,
                                      uint32_t num_tokens);

// Encodes `input` with `params` into `payload` (resized to the exact payload size). Host input runs
// the CPU reference; device input runs the CUDA kernels (InvalidArgument without CUDA). The
// payload is always returned in host memory.
absl::Status Encode(const CodecParams& params, const ChunkInput& input,
                    std::vector<uint8_t>* payload);

// What a payload says about itself, after its header and body checksums were verified.
struct PayloadInfo {
  uint16_t format_version = 0;
  CodecParams codec;
  KvLayout layout;
  uint32_t num_tokens = 0;
  uint64_t first_position = 0;
  bool ends_sequence = false;
  size_t header_bytes = 0;
  size_t body_bytes = 0;
  // Bytes the decoded chunk occupies in its dtype (= layout.ChunkBytes(num_tokens)).
  size_t DecodedBytes() const { return layout.ChunkBytes(num_tokens); }
};

// Validates magic, version, parameters, sizes and both checksums. Never reads past `payload`.
// Errors: InvalidArgument (malformed), DataLoss (checksum mismatch), Unimplemented (newer version).
absl::StatusOr<PayloadInfo> InspectPayload(absl::Span<const uint8_t> payload);
// The same, for a caller that already computed the CRC-32C of all of `payload` over this very
// buffer (e.g. while copying it in as it was received): the body checksum is derived from it
// (Crc32cOfSuffix) instead of a second pass. A CRC that is not that of these bytes is DataLoss;
// a CRC taken from elsewhere (not over this buffer) would not catch damage to the buffer.
absl::StatusOr<PayloadInfo> InspectPayload(absl::Span<const uint8_t> payload,
                                           uint32_t payload_crc32c);

// Decodes a host-memory payload into `target` (host or device). Validates as InspectPayload does
// before writing anything; on error nothing is written.
absl::Status Decode(absl::Span<const uint8_t> payload, const DecodeTarget& target);

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_CODEC_H_
