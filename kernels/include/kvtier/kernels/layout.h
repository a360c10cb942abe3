// KV layouts and element types: the shape of a namespace's chunks.
//
// A chunk holds `num_tokens` consecutive tokens in the canonical layout
//   MHA/GQA: [layer][K|V][kv_head][token][dim]      (K first, then V)
//   MLA:     [layer][token][latent_dim + rope_dim]
// Value types; thread-compatible.
#ifndef KVTIER_KERNELS_LAYOUT_H_
#define KVTIER_KERNELS_LAYOUT_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace kvtier::kernels {

enum class DType : uint8_t { kFloat16 = 1, kBFloat16 = 2, kFloat32 = 3 };

size_t DTypeSize(DType t);  // 2, 2, 4
const char* DTypeName(DType t);  // "fp16", "bf16", "fp32"

enum class LayoutKind : uint8_t { kMha = 1, kMla = 2 };  // kMha covers MHA, GQA and MQA.

struct KvLayout {
  LayoutKind kind = LayoutKind::kMha;
  DType dtype = DType::kFloat16;
  uint32_t num_layers = 0;
  // MHA/GQA fields (zero for MLA).
  uint32_t num_kv_heads = 0;
  uint32_t num_query_heads = 0;  // recorded for GQA score reduction; multiple of num_kv_heads
  uint32_t head_dim = 0;
  // MLA fields (zero for MHA).
  uint32_t latent_dim = 0;
  uint32_t rope_dim = 0;

  static KvLayout Mha(uint32_t layers, uint32_t kv_heads, uint32_t query_heads, uint32_t head_dim,
                      DType dtype = DType::kFloat16);
  static KvLayout Mla(uint32_t layers, uint32_t latent_dim, uint32_t rope_dim,
                      DType dtype = DType::kFloat16);

  // Rejects zero sizes, unknown kinds/dtypes, query heads not a multiple of KV heads, MLA fields
  // on an MHA layout and the reverse, and sizes over the format's limits (docs/FORMAT.md).
  absl::Status Validate() const;

  // Values per token: MHA 2 * layers * kv_heads * head_dim; MLA layers * (latent + rope).
  size_t ElementsPerToken() const;
  size_t BytesPerToken() const { return ElementsPerToken() * DTypeSize(dtype); }
  size_t ChunkBytes(uint32_t num_tokens) const { return BytesPerToken() * num_tokens; }
  // Width of one vector: head_dim (MHA) or latent_dim + rope_dim (MLA).
  uint32_t VectorDim() const { return kind == LayoutKind::kMha ? head_dim : latent_dim + rope_dim; }

  std::string DebugString() const;
  friend bool operator==(const KvLayout& a, const KvLayout& b);
  friend bool operator!=(const KvLayout& a, const KvLayout& b) { return !(a == b); }
};

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_LAYOUT_H_
