// Conversions between .npy arrays and kvtier chunks/token lists for the CLI. Reentrant.
#ifndef KVTIER_CLIENT_CLI_TENSOR_IO_H_
#define KVTIER_CLIENT_CLI_TENSOR_IO_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kvtier/kernels/layout.h"
#include "npy.h"

namespace kvtier::cli {

// The .npy dtype kvtier writes for a KV dtype: "<f2", "<u2" (bf16 bits) or "<f4".
std::string NpyDescr(kernels::DType dtype);

// Shape of a chunk of `num_tokens` tokens: MHA (layers, 2, kv_heads, tokens, head_dim),
// MLA (layers, tokens, latent_dim + rope_dim).
std::vector<uint64_t> ChunkShape(const kernels::KvLayout& layout, uint32_t num_tokens);

// Checks that `array` is a chunk of `layout` (dtype and shape) and returns its token count.
absl::StatusOr<uint32_t> ChunkTokens(const NpyArray& array, const kernels::KvLayout& layout);

// Token ids from a file: an .npy of integers (any int/uint width, 1-D) or text with ids separated
// by whitespace or commas.
absl::StatusOr<std::vector<uint32_t>> ReadTokens(const std::string& path);
// Token ids from "1,2,3" or "1 2 3".
absl::StatusOr<std::vector<uint32_t>> ParseTokens(const std::string& text);

}  // namespace kvtier::cli

#endif  // KVTIER_CLIENT_CLI_TENSOR_IO_H_
