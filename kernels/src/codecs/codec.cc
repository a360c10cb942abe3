// The codec dispatcher: the one place that maps a CodecId to its implementation, checks every
// argument, writes and verifies payload headers and checksums (format.h), and chooses the CPU
// reference or the CUDA kernels by MemorySpace.
#include "kvtier/kernels/codec.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "codec_impl.h"
#include "codecs/device_memory.h"
#include "codecs/format.h"
#include "codecs/limits.h"
#include "kvtier/common/crc32c.h"
#include "kvtier/common/status.h"
#include "kvtier/kernels/device.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the codecs store multi-byte values with memcpy and assume a little-endian host");

namespace kvtier::kernels {
namespace {

using internal::ChunkShape;
using internal::CodecImpl;

}  // namespace

absl::StatusOr<const CodecImpl*> internal::LookupCodec(CodecId id) {
  switch (id) {
    case CodecId::kRaw:
      return &internal::RawCodec();
    case CodecId::kFp8:
      return &internal::Fp8Codec();
    case CodecId::kKivi:
      return &internal::KiviCodec();
    case CodecId::kTurboQuant:
#ifdef KVTIER_HAVE_TURBOQUANT
      return &internal::TurboQuantCodec();
#else
      // Set by kernels/src/codecs/sources.cmake once src/turboquant lists sources.
      return absl::UnimplementedError("turboquant not built");
#endif
    case CodecId::kLatent:
      return absl::FailedPreconditionError(
          "a latent payload needs its basis: decode it with DecodeLatent (kvtier/kernels/latent.h)");
    case CodecId::kCompacted:
      return absl::FailedPreconditionError(
          "a compacted context is decoded with kvtier/kernels/compacted.h, not as a chunk");
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown codec id ", static_cast<int>(id)));
}

namespace {

absl::Status CheckShape(const KvLayout& layout, uint32_t num_tokens) {
  KVTIER_RETURN_IF_ERROR(layout.Validate());
  if (num_tokens == 0 || num_tokens > internal::kMaxTokens) {
    return absl::InvalidArgumentError(absl::StrCat("num_tokens must be in 1..",
                                                   internal::kMaxTokens, ", got ", num_tokens));
  }
  if (layout.ChunkBytes(num_tokens) > internal::kMaxChunkBytes) {
    return absl::InvalidArgumentError(absl::StrCat("chunk of ", layout.ChunkBytes(num_tokens),
                                                   " bytes exceeds the limit of ",
                                                   internal::kMaxChunkBytes));
  }
  return absl::OkStatus();
}

// Params, layout and token count are valid and the codec is built and accepts the shape.
absl::StatusOr<const CodecImpl*> Prepare(const CodecParams& params, const ChunkShape& shape) {
  KVTIER_RETURN_IF_ERROR(params.Validate());
  KVTIER_RETURN_IF_ERROR(CheckShape(shape.layout, shape.num_tokens));
  KVTIER_ASSIGN_OR_RETURN(const CodecImpl* impl, internal::LookupCodec(params.id));
  KVTIER_RETURN_IF_ERROR(impl->CheckCompatible(params, shape));
  return impl;
}

absl::Status CheckTarget(const PayloadInfo& info, const DecodeTarget& t) {
  if (t.dtype != info.layout.dtype) {
    return absl::InvalidArgumentError(absl::StrCat("decode target dtype ", DTypeName(t.dtype),
                                                   " differs from the payload's ",
                                                   DTypeName(info.layout.dtype)));
  }
  if (t.layer_base.size() != info.layout.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("decode target has ", t.layer_base.size(),
                                                   " layer bases, the payload has ",
                                                   info.layout.num_layers, " layers"));
  }
  for (size_t l = 0; l < t.layer_base.size(); ++l) {
    if (t.layer_base[l] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("decode target layer_base[", l, "] is null"));
    }
  }
  if (t.space != MemorySpace::kHost && t.space != MemorySpace::kDevice) {
    return absl::InvalidArgumentError("decode target: unknown memory space");
  }
  if (t.block_table != nullptr) {
    if (t.block_size == 0) {
      return absl::InvalidArgumentError("decode target: block_table given with block_size 0");
    }
    const uint32_t blocks = (info.num_tokens + t.block_size - 1) / t.block_size;
    for (uint32_t i = 0; i < blocks; ++i) {
      if (t.block_table[i] < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("decode target: block_table[", i, "] = ", t.block_table[i], " < 0"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status NoCuda(const char* what) {
  return absl::InvalidArgumentError(
      absl::StrCat(what, " is in device memory but kvtier was built without CUDA"));
}

}  // namespace

DecodeTarget DecodeTarget::Contiguous(void* base, const KvLayout& layout, uint32_t num_tokens,
                                      MemorySpace space) {
  DecodeTarget t;
  t.space = space;
  t.dtype = layout.dtype;
  const int64_t es = static_cast<int64_t>(DTypeSize(layout.dtype));
  const int64_t V = layout.VectorDim();
  const int64_t layer_bytes = static_cast<int64_t>(layout.ChunkBytes(num_tokens)) /
                              std::max<int64_t>(1, layout.num_layers);
  t.layer_base.resize(layout.num_layers);
  for (uint32_t l = 0; l < layout.num_layers; ++l) {
    t.layer_base[l] = base == nullptr ? nullptr : static_cast<char*>(base) + l * layer_bytes;
  }
  t.stride_token = V * es;
  if (layout.kind == LayoutKind::kMha) {
    t.stride_head = int64_t{num_tokens} * V * es;
    t.stride_kv = int64_t{layout.num_kv_heads} * t.stride_head;
  }
  return t;
}

absl::StatusOr<size_t> MaxPayloadSize(const CodecParams& params, const KvLayout& layout,
                                      uint32_t num_tokens) {
  // Sink and tail tokens only ever grow a body, and a chunk at position 0 that ends its sequence
  // has the most of them.
  ChunkShape worst{layout, num_tokens, 0, true};
  KVTIER_ASSIGN_OR_RETURN(const CodecImpl* impl, Prepare(params, worst));
  ChunkShape plain{layout, num_tokens, 0, false};
  return internal::kHeaderSize +
         std::max(impl->BodySize(params, worst), impl->BodySize(params, plain));
}

absl::Status Encode(const CodecParams& params, const ChunkInput& input,
                    std::vector<uint8_t>* payload) {
  if (payload == nullptr) return absl::InvalidArgumentError("Encode: payload is null");
  payload->clear();
  if (input.data == nullptr) return absl::InvalidArgumentError("Encode: input.data is null");
  const ChunkShape shape{input.layout, input.num_tokens, input.first_position,
                         input.ends_sequence};
  KVTIER_ASSIGN_OR_RETURN(const CodecImpl* impl, Prepare(params, shape));
  const size_t body_bytes = impl->BodySize(params, shape);
  std::vector<uint8_t> out(internal::kHeaderSize + body_bytes, 0);
  absl::Span<uint8_t> body(out.data() + internal::kHeaderSize, body_bytes);
  if (input.space == MemorySpace::kHost) {
    KVTIER_RETURN_IF_ERROR(impl->EncodeHost(params, shape, input.data, body));
  } else if (input.space == MemorySpace::kDevice) {
    if (!CudaBuilt()) return NoCuda("Encode input");
    // The GPU computes the body; the host writes the header and both checksums (a GPU CRC is
    // future work, docs/FORMAT.md).
    KVTIER_ASSIGN_OR_RETURN(internal::DeviceBuffer dbody,
                            internal::DeviceBuffer::Allocate(body_bytes));
    KVTIER_RETURN_IF_ERROR(internal::DeviceZero(dbody.get(), body_bytes));
    KVTIER_RETURN_IF_ERROR(impl->EncodeDevice(params, shape, input.data, dbody.get()));
    KVTIER_RETURN_IF_ERROR(internal::CopyToHost(body.data(), dbody.get(), body_bytes));
  } else {
    return absl::InvalidArgumentError("Encode: unknown memory space");
  }
  internal::WriteChunkHeader(params, input, body_bytes, out.data());
  *payload = std::move(out);
  return absl::OkStatus();
}

namespace {

// InspectPayload; `payload_crc` (the CRC-32C of the whole payload) when the caller has it.
absl::StatusOr<PayloadInfo> Inspect(absl::Span<const uint8_t> payload,
                                    const uint32_t* payload_crc) {
  KVTIER_ASSIGN_OR_RETURN(internal::HeaderFields h, internal::ParseHeader(payload));
  const ChunkShape shape{h.layout, h.num_tokens, h.first_position, h.ends_sequence};
  if (absl::Status s = CheckShape(h.layout, h.num_tokens); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("payload: ", s.message()));
  }
  // Cheap checks on the bytes themselves come before the codec is asked anything (a codec may
  // need real work to size a body), so a truncated or corrupt payload costs O(its length).
  if (h.body_bytes > payload.size() || payload.size() != internal::kHeaderSize + h.body_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "payload: ", payload.size(), " bytes, header says ", internal::kHeaderSize, " + ",
        h.body_bytes,
        payload.size() < internal::kHeaderSize + h.body_bytes ? " (truncated)" : " (trailing bytes)"));
  }
  const uint32_t crc =
      payload_crc != nullptr
          ? Crc32cOfSuffix(*payload_crc, Crc32c(payload.data(), internal::kHeaderSize),
                           h.body_bytes)
          : Crc32c(payload.data() + internal::kHeaderSize, h.body_bytes);
  if (crc != h.body_crc) {
    return absl::DataLossError(absl::StrCat("payload: body checksum mismatch (stored ",
                                            absl::Hex(h.body_crc), ", computed ", absl::Hex(crc),
                                            ")"));
  }
  auto impl = Prepare(h.codec, shape);
  if (!impl.ok()) {
    if (absl::IsUnimplemented(impl.status()) || absl::IsFailedPrecondition(impl.status())) {
      return impl.status();
    }
    return absl::InvalidArgumentError(absl::StrCat("payload: ", impl.status().message()));
  }
  const size_t want_body = (*impl)->BodySize(h.codec, shape);
  if (h.body_bytes != want_body) {
    return absl::InvalidArgumentError(absl::StrCat("payload: header says ", h.body_bytes,
                                                   " body bytes, its parameters need ",
                                                   want_body));
  }
  PayloadInfo info;
  info.format_version = internal::kFormatVersion;
  info.codec = h.codec;
  info.layout = h.layout;
  info.num_tokens = h.num_tokens;
  info.first_position = h.first_position;
  info.ends_sequence = h.ends_sequence;
  info.header_bytes = internal::kHeaderSize;
  info.body_bytes = want_body;
  return info;
}

}  // namespace

absl::StatusOr<PayloadInfo> InspectPayload(absl::Span<const uint8_t> payload) {
  return Inspect(payload, nullptr);
}

absl::StatusOr<PayloadInfo> InspectPayload(absl::Span<const uint8_t> payload,
                                           uint32_t payload_crc32c) {
  return Inspect(payload, &payload_crc32c);
}

absl::Status Decode(absl::Span<const uint8_t> payload, const DecodeTarget& target) {
  KVTIER_ASSIGN_OR_RETURN(PayloadInfo info, InspectPayload(payload));
  KVTIER_RETURN_IF_ERROR(CheckTarget(info, target));
  KVTIER_ASSIGN_OR_RETURN(const CodecImpl* impl, internal::LookupCodec(info.codec.id));
  const ChunkShape shape{info.layout, info.num_tokens, info.first_position, info.ends_sequence};
  absl::Span<const uint8_t> body = payload.subspan(info.header_bytes, info.body_bytes);
  if (target.space == MemorySpace::kHost) {
    return impl->DecodeHost(info.codec, shape, body, target);
  }
  if (!CudaBuilt()) return NoCuda("Decode target");
  KVTIER_ASSIGN_OR_RETURN(internal::DeviceBuffer dbody,
                          internal::DeviceBuffer::Allocate(body.size()));
  KVTIER_RETURN_IF_ERROR(internal::CopyToDevice(dbody.get(), body.data(), body.size()));
  return impl->DecodeDevice(info.codec, shape, dbody.get(), target);
}

}  // namespace kvtier::kernels
