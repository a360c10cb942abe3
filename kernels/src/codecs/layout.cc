// KvLayout: validation, sizes and text form.
#include "kvtier/kernels/layout.h"

#include "absl/strings/str_cat.h"
#include "codecs/limits.h"

namespace kvtier::kernels {

size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
    case DType::kFloat32:
      return 4;
  }
  return 0;
}

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kFloat16:
      return "fp16";
    case DType::kBFloat16:
      return "bf16";
    case DType::kFloat32:
      return "fp32";
  }
  return "unknown";
}

KvLayout KvLayout::Mha(uint32_t layers, uint32_t kv_heads, uint32_t query_heads,
                       uint32_t head_dim, DType dtype) {
  KvLayout l;
  l.kind = LayoutKind::kMha;
  l.dtype = dtype;
  l.num_layers = layers;
  l.num_kv_heads = kv_heads;
  l.num_query_heads = query_heads;
  l.head_dim = head_dim;
  return l;
}

KvLayout KvLayout::Mla(uint32_t layers, uint32_t latent_dim, uint32_t rope_dim, DType dtype) {
  KvLayout l;
  l.kind = LayoutKind::kMla;
  l.dtype = dtype;
  l.num_layers = layers;
  l.latent_dim = latent_dim;
  l.rope_dim = rope_dim;
  return l;
}

absl::Status KvLayout::Validate() const {
  using internal::kMaxElementsPerToken;
  using internal::kMaxLayers;
  using internal::kMaxVectorDim;
  if (dtype != DType::kFloat16 && dtype != DType::kBFloat16 && dtype != DType::kFloat32) {
    return absl::InvalidArgumentError(
        absl::StrCat("layout: unknown dtype ", static_cast<int>(dtype)));
  }
  if (num_layers == 0 || num_layers > kMaxLayers) {
    return absl::InvalidArgumentError(
        absl::StrCat("layout: num_layers must be in 1..", kMaxLayers, ", got ", num_layers));
  }
  if (kind == LayoutKind::kMha) {
    if (latent_dim != 0 || rope_dim != 0) {
      return absl::InvalidArgumentError("layout: an MHA layout must have latent_dim = rope_dim = 0");
    }
    if (num_kv_heads == 0 || num_kv_heads > internal::kMaxKvHeads) {
      return absl::InvalidArgumentError(absl::StrCat("layout: num_kv_heads must be in 1..",
                                                     internal::kMaxKvHeads, ", got ",
                                                     num_kv_heads));
    }
    if (num_query_heads == 0 || num_query_heads % num_kv_heads != 0 ||
        num_query_heads / num_kv_heads > internal::kMaxGqaGroup) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layout: num_query_heads (", num_query_heads,
          ") must be a positive multiple of num_kv_heads (", num_kv_heads, "), at most ",
          internal::kMaxGqaGroup, " times it"));
    }
    if (head_dim == 0 || head_dim > kMaxVectorDim) {
      return absl::InvalidArgumentError(absl::StrCat("layout: head_dim must be in 1..",
                                                     kMaxVectorDim, ", got ", head_dim));
    }
  } else if (kind == LayoutKind::kMla) {
    if (num_kv_heads != 0 || num_query_heads != 0 || head_dim != 0) {
      return absl::InvalidArgumentError(
          "layout: an MLA layout must have num_kv_heads = num_query_heads = head_dim = 0");
    }
    if (latent_dim == 0 || uint64_t{latent_dim} + rope_dim > kMaxVectorDim) {
      return absl::InvalidArgumentError(
          absl::StrCat("layout: MLA needs latent_dim >= 1 and latent_dim + rope_dim <= ",
                       kMaxVectorDim, ", got ", latent_dim, " + ", rope_dim));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("layout: unknown kind ", static_cast<int>(kind)));
  }
  if (ElementsPerToken() > kMaxElementsPerToken) {
    return absl::InvalidArgumentError(absl::StrCat("layout: ", ElementsPerToken(),
                                                   " elements per token exceeds the limit of ",
                                                   kMaxElementsPerToken));
  }
  return absl::OkStatus();
}

size_t KvLayout::ElementsPerToken() const {
  if (kind == LayoutKind::kMha) {
    return size_t{2} * num_layers * num_kv_heads * head_dim;
  }
  return size_t{num_layers} * (size_t{latent_dim} + rope_dim);
}

std::string KvLayout::DebugString() const {
  if (kind == LayoutKind::kMha) {
    return absl::StrCat("mha{layers=", num_layers, ", kv_heads=", num_kv_heads,
                        ", query_heads=", num_query_heads, ", head_dim=", head_dim,
                        ", dtype=", DTypeName(dtype), "}");
  }
  if (kind == LayoutKind::kMla) {
    return absl::StrCat("mla{layers=", num_layers, ", latent_dim=", latent_dim,
                        ", rope_dim=", rope_dim, ", dtype=", DTypeName(dtype), "}");
  }
  return absl::StrCat("layout{kind=", static_cast<int>(kind), "}");
}

bool operator==(const KvLayout& a, const KvLayout& b) {
  return a.kind == b.kind && a.dtype == b.dtype && a.num_layers == b.num_layers &&
         a.num_kv_heads == b.num_kv_heads && a.num_query_heads == b.num_query_heads &&
         a.head_dim == b.head_dim && a.latent_dim == b.latent_dim && a.rope_dim == b.rope_dim;
}

}  // namespace kvtier::kernels
