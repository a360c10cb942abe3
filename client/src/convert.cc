#include "convert.h"

#include <fmt/format.h>

namespace kvtier::client::internal {

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  // gRPC and Abseil status codes are numbered alike (0..16).
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

kvtier::v1::Layout ToProto(const kernels::KvLayout& layout) {
  kvtier::v1::Layout out;
  out.set_kind(layout.kind == kernels::LayoutKind::kMla ? kvtier::v1::Layout::KIND_MLA
                                                        : kvtier::v1::Layout::KIND_MHA);
  switch (layout.dtype) {
    case kernels::DType::kFloat16: out.set_dtype(kvtier::v1::DTYPE_FP16); break;
    case kernels::DType::kBFloat16: out.set_dtype(kvtier::v1::DTYPE_BF16); break;
    case kernels::DType::kFloat32: out.set_dtype(kvtier::v1::DTYPE_FP32); break;
  }
  out.set_num_layers(layout.num_layers);
  out.set_num_kv_heads(layout.num_kv_heads);
  out.set_num_query_heads(layout.num_query_heads);
  out.set_head_dim(layout.head_dim);
  out.set_latent_dim(layout.latent_dim);
  out.set_rope_dim(layout.rope_dim);
  return out;
}

absl::StatusOr<kernels::KvLayout> FromProto(const kvtier::v1::Layout& layout) {
  kernels::KvLayout out;
  switch (layout.kind()) {
    case kvtier::v1::Layout::KIND_MHA: out.kind = kernels::LayoutKind::kMha; break;
    case kvtier::v1::Layout::KIND_MLA: out.kind = kernels::LayoutKind::kMla; break;
    default:
      return absl::InvalidArgumentError(fmt::format("unknown layout kind {}", layout.kind()));
  }
  switch (layout.dtype()) {
    case kvtier::v1::DTYPE_FP16: out.dtype = kernels::DType::kFloat16; break;
    case kvtier::v1::DTYPE_BF16: out.dtype = kernels::DType::kBFloat16; break;
    case kvtier::v1::DTYPE_FP32: out.dtype = kernels::DType::kFloat32; break;
    default:
      return absl::InvalidArgumentError(fmt::format("unknown dtype {}", layout.dtype()));
  }
  out.num_layers = layout.num_layers();
  out.num_kv_heads = layout.num_kv_heads();
  out.num_query_heads = layout.num_query_heads();
  out.head_dim = layout.head_dim();
  out.latent_dim = layout.latent_dim();
  out.rope_dim = layout.rope_dim();
  return out;
}

kvtier::v1::Namespace ToProto(const NamespaceSpec& spec) {
  kvtier::v1::Namespace out;
  out.set_name(spec.name);
  out.set_model_id(spec.model_id);
  *out.mutable_layout() = ToProto(spec.layout);
  out.set_codec(spec.codec);
  out.set_tokens_per_chunk(spec.tokens_per_chunk);
  out.set_salt(spec.salt);
  return out;
}

absl::StatusOr<NamespaceSpec> FromProto(const kvtier::v1::Namespace& ns) {
  NamespaceSpec out;
  out.name = ns.name();
  out.model_id = ns.model_id();
  auto layout = FromProto(ns.layout());
  if (!layout.ok()) return layout.status();
  out.layout = *layout;
  out.codec = ns.codec();
  out.tokens_per_chunk = ns.tokens_per_chunk();
  out.salt = ns.salt();
  return out;
}

Tier FromProto(kvtier::v1::Tier tier) {
  switch (tier) {
    case kvtier::v1::TIER_GPU: return Tier::kGpu;
    case kvtier::v1::TIER_HOST: return Tier::kHost;
    case kvtier::v1::TIER_DISK: return Tier::kDisk;
    default: return Tier::kUnknown;
  }
}

kvtier::v1::DataFormat ToProto(DataFormat format) {
  return format == DataFormat::kPayload ? kvtier::v1::DATA_FORMAT_PAYLOAD
                                        : kvtier::v1::DATA_FORMAT_TENSOR;
}

DataFormat FromProto(kvtier::v1::DataFormat format) {
  return format == kvtier::v1::DATA_FORMAT_PAYLOAD ? DataFormat::kPayload : DataFormat::kTensor;
}

ServerStats FromProto(const kvtier::v1::StatsResponse& s) {
  ServerStats out;
  for (const auto& t : s.tiers()) {
    TierStats ts;
    ts.tier = FromProto(t.tier());
    ts.capacity_bytes = t.capacity_bytes();
    ts.used_bytes = t.used_bytes();
    ts.chunks = t.chunks();
    ts.hits = t.hits();
    ts.misses = t.misses();
    ts.evictions = t.evictions();
    out.tiers.push_back(ts);
  }
  out.namespaces = s.namespaces();
  out.pinned_chunks = s.pinned_chunks();
  out.active_leases = s.active_leases();
  out.lookup_tokens_requested = s.lookup_tokens_requested();
  out.lookup_tokens_hit = s.lookup_tokens_hit();
  out.ingest_tensor_bytes = s.ingest_tensor_bytes();
  out.ingest_payload_bytes = s.ingest_payload_bytes();
  out.version = s.version();
  out.gpu_tier = s.gpu_tier();
  return out;
}

}  // namespace kvtier::client::internal
