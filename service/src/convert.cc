#include "convert.h"

#include "absl/strings/str_cat.h"

namespace kvtier::service {

const char* CodeName(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return "OK";
    case absl::StatusCode::kCancelled: return "CANCELLED";
    case absl::StatusCode::kUnknown: return "UNKNOWN";
    case absl::StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case absl::StatusCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case absl::StatusCode::kNotFound: return "NOT_FOUND";
    case absl::StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case absl::StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case absl::StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case absl::StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case absl::StatusCode::kAborted: return "ABORTED";
    case absl::StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case absl::StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case absl::StatusCode::kInternal: return "INTERNAL";
    case absl::StatusCode::kUnavailable: return "UNAVAILABLE";
    case absl::StatusCode::kDataLoss: return "DATA_LOSS";
    case absl::StatusCode::kUnauthenticated: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

absl::StatusOr<kernels::KvLayout> LayoutFromProto(const v1::Layout& p) {
  kernels::KvLayout l;
  switch (p.kind()) {
    case v1::Layout::KIND_MHA: l.kind = kernels::LayoutKind::kMha; break;
    case v1::Layout::KIND_MLA: l.kind = kernels::LayoutKind::kMla; break;
    default: return absl::InvalidArgumentError("layout.kind must be KIND_MHA or KIND_MLA");
  }
  switch (p.dtype()) {
    case v1::DTYPE_FP16: l.dtype = kernels::DType::kFloat16; break;
    case v1::DTYPE_BF16: l.dtype = kernels::DType::kBFloat16; break;
    case v1::DTYPE_FP32: l.dtype = kernels::DType::kFloat32; break;
    default: return absl::InvalidArgumentError("layout.dtype must be FP16, BF16 or FP32");
  }
  l.num_layers = p.num_layers();
  l.num_kv_heads = p.num_kv_heads();
  l.num_query_heads = p.num_query_heads();
  l.head_dim = p.head_dim();
  l.latent_dim = p.latent_dim();
  l.rope_dim = p.rope_dim();
  absl::Status s = l.Validate();
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("layout: ", s.message()));
  return l;
}

void LayoutToProto(const kernels::KvLayout& l, v1::Layout* p) {
  p->set_kind(l.kind == kernels::LayoutKind::kMla ? v1::Layout::KIND_MLA : v1::Layout::KIND_MHA);
  switch (l.dtype) {
    case kernels::DType::kFloat16: p->set_dtype(v1::DTYPE_FP16); break;
    case kernels::DType::kBFloat16: p->set_dtype(v1::DTYPE_BF16); break;
    case kernels::DType::kFloat32: p->set_dtype(v1::DTYPE_FP32); break;
  }
  p->set_num_layers(l.num_layers);
  p->set_num_kv_heads(l.num_kv_heads);
  p->set_num_query_heads(l.num_query_heads);
  p->set_head_dim(l.head_dim);
  p->set_latent_dim(l.latent_dim);
  p->set_rope_dim(l.rope_dim);
}

absl::StatusOr<NamespaceInfo> NamespaceFromProto(const v1::Namespace& p,
                                                 uint32_t default_tokens_per_chunk) {
  NamespaceInfo n;
  n.name = p.name();
  n.model_id = p.model_id();
  if (!p.has_layout()) return absl::InvalidArgumentError("namespace.layout is required");
  auto layout = LayoutFromProto(p.layout());
  if (!layout.ok()) return layout.status();
  n.layout = *layout;
  auto codec = kernels::CodecParams::Parse(p.codec().empty() ? std::string("raw") : p.codec());
  if (!codec.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("codec '", p.codec(), "': ", codec.status().message()));
  }
  n.codec = *codec;
  n.tokens_per_chunk = p.tokens_per_chunk() == 0 ? default_tokens_per_chunk : p.tokens_per_chunk();
  n.salt = p.salt();
  return n;
}

void NamespaceToProto(const NamespaceInfo& n, v1::Namespace* p) {
  p->set_name(n.name);
  p->set_model_id(n.model_id);
  LayoutToProto(n.layout, p->mutable_layout());
  p->set_codec(n.codec.ToString());
  p->set_tokens_per_chunk(n.tokens_per_chunk);
  p->set_salt(n.salt);
}

v1::Tier TierToProto(storage::TierKind t) {
  switch (t) {
    case storage::TierKind::kGpu: return v1::TIER_GPU;
    case storage::TierKind::kHost: return v1::TIER_HOST;
    case storage::TierKind::kDisk: return v1::TIER_DISK;
  }
  return v1::TIER_UNSPECIFIED;
}

absl::StatusOr<ChunkKey> KeyFromProto(const std::string& bytes, const char* what, int index) {
  if (bytes.size() != ChunkKey::kSize) {
    std::string name = index >= 0 ? absl::StrCat(what, "[", index, "]") : std::string(what);
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": a chunk key is 32 bytes, got ", bytes.size()));
  }
  return ChunkKey::FromBytes(std::string_view(bytes.data(), bytes.size()));
}

}  // namespace kvtier::service
