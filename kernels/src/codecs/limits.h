// Size limits of payload format v1 (docs/FORMAT.md, "Payload header"). They keep every size
// computation far from 64-bit overflow and bound what a hostile header can make a decoder touch.
// Not a public header.
#ifndef KVTIER_KERNELS_SRC_CODECS_LIMITS_H_
#define KVTIER_KERNELS_SRC_CODECS_LIMITS_H_

#include <cstdint>

namespace kvtier::kernels::internal {

inline constexpr uint32_t kMaxLayers = 4096;
inline constexpr uint32_t kMaxKvHeads = 1024;
inline constexpr uint32_t kMaxGqaGroup = 1024;      // num_query_heads / num_kv_heads
inline constexpr uint32_t kMaxVectorDim = 65536;    // head_dim, or latent_dim + rope_dim
inline constexpr uint64_t kMaxElementsPerToken = uint64_t{1} << 26;
inline constexpr uint32_t kMaxTokens = uint32_t{1} << 20;  // per chunk
inline constexpr uint64_t kMaxChunkBytes = uint64_t{1} << 40;

}  // namespace kvtier::kernels::internal

#endif  // KVTIER_KERNELS_SRC_CODECS_LIMITS_H_
