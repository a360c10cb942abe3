// CPU reference for paged gather/scatter: one memcpy per (token, layer, plane, head) vector.
#include <algorithm>
#include <cstring>

#include "paged/paged_plan.h"

namespace kvtier::kernels::internal {

void PagedCopyHost(const PagedCopyPlan& plan, PagedDirection direction) {
  const uint32_t layers = static_cast<uint32_t>(plan.layer_base.size());
  for (uint32_t t = 0; t < plan.num_tokens; ++t) {
    const uint32_t s = plan.first_token + t;
    const int64_t block = plan.block_ids[s / plan.block_size];
    const int64_t token_offset = block * plan.stride_block + (s % plan.block_size) * plan.stride_token;
    const uint32_t c = t / plan.tokens_per_chunk;
    const uint32_t tc = t % plan.tokens_per_chunk;
    const uint32_t n_c = std::min(plan.tokens_per_chunk, plan.num_tokens - c * plan.tokens_per_chunk);
    char* chunk = plan.chunks + c * plan.chunk_stride;
    for (uint32_t l = 0; l < layers; ++l) {
      for (uint32_t p = 0; p < plan.planes; ++p) {
        char* paged = plan.layer_base[l] + p * plan.stride_plane + token_offset;
        for (uint32_t h = 0; h < plan.heads; ++h) {
          char* pv = paged + size_t{h} * plan.vector_bytes;
          char* cv = chunk + ((((size_t{l} * plan.planes + p) * plan.heads + h) * n_c) + tc) *
                                 plan.vector_bytes;
          if (direction == PagedDirection::kGather) {
            std::memcpy(cv, pv, plan.vector_bytes);
          } else {
            std::memcpy(pv, cv, plan.vector_bytes);
          }
        }
      }
    }
  }
}

}  // namespace kvtier::kernels::internal
