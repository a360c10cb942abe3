// Shared by the paged-layout CPU and GPU tests: seeded random caches and an independent
// element-by-element reference of the vLLM <-> canonical mapping (written from the layouts'
// definitions, not from the library's plan).
#ifndef KVTIER_TESTS_KERNELS_PAGED_TEST_UTIL_H_
#define KVTIER_TESTS_KERNELS_PAGED_TEST_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kvtier/kernels/paged.h"

namespace kvtier::kernels::testing {

struct PagedShape {
  KvLayout layout;
  uint32_t num_blocks = 0;
  uint32_t block_size = 0;

  bool mla() const { return layout.kind == LayoutKind::kMla; }
  uint32_t planes() const { return mla() ? 1 : 2; }
  uint32_t heads() const { return mla() ? 1 : layout.num_kv_heads; }
  uint32_t dim() const { return layout.VectorDim(); }
  size_t elem() const { return DTypeSize(layout.dtype); }
  size_t LayerBytes() const {
    return size_t{planes()} * num_blocks * block_size * heads() * dim() * elem();
  }
  // Byte offset inside a layer tensor of (plane, block, slot, head, dim 0).
  size_t PagedOffset(uint32_t p, uint32_t block, uint32_t slot, uint32_t h) const {
    return ((((size_t{p} * num_blocks + block) * block_size + slot) * heads() + h) * dim()) *
           elem();
  }
};

inline std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// A distinct random permutation of block ids, so neighbouring tokens land in scattered blocks.
inline std::vector<int32_t> RandomBlockTable(uint32_t num_blocks, size_t count, uint32_t seed) {
  std::vector<int32_t> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(seed));
  ids.resize(count);
  return ids;
}

// Reference gather on host copies of the layer tensors.
inline std::vector<uint8_t> ReferenceGather(const PagedShape& s,
                                            const std::vector<std::vector<uint8_t>>& layers,
                                            const std::vector<int32_t>& block_ids,
                                            uint32_t first_token, uint32_t num_tokens,
                                            uint32_t tokens_per_chunk) {
  const size_t vec = size_t{s.dim()} * s.elem();
  std::vector<uint8_t> out(s.layout.ChunkBytes(num_tokens));
  for (uint32_t t = 0; t < num_tokens; ++t) {
    const uint32_t seq = first_token + t;
    const uint32_t block = static_cast<uint32_t>(block_ids[seq / s.block_size]);
    const uint32_t slot = seq % s.block_size;
    const uint32_t c = t / tokens_per_chunk;
    const uint32_t tc = t % tokens_per_chunk;
    const uint32_t n_c = std::min(tokens_per_chunk, num_tokens - c * tokens_per_chunk);
    const size_t chunk_base = size_t{c} * s.layout.ChunkBytes(tokens_per_chunk);
    for (uint32_t l = 0; l < s.layout.num_layers; ++l) {
      for (uint32_t p = 0; p < s.planes(); ++p) {
        for (uint32_t h = 0; h < s.heads(); ++h) {
          const size_t dst =
              chunk_base + ((((size_t{l} * s.planes() + p) * s.heads() + h) * n_c) + tc) * vec;
          std::memcpy(&out[dst], &layers[l][s.PagedOffset(p, block, slot, h)], vec);
        }
      }
    }
  }
  return out;
}

// Reference scatter: writes `chunks` into host copies of the layer tensors.
inline void ReferenceScatter(const PagedShape& s, const std::vector<uint8_t>& chunks,
                             std::vector<std::vector<uint8_t>>* layers,
                             const std::vector<int32_t>& block_ids, uint32_t first_token,
                             uint32_t num_tokens, uint32_t tokens_per_chunk) {
  const size_t vec = size_t{s.dim()} * s.elem();
  for (uint32_t t = 0; t < num_tokens; ++t) {
    const uint32_t seq = first_token + t;
    const uint32_t block = static_cast<uint32_t>(block_ids[seq / s.block_size]);
    const uint32_t slot = seq % s.block_size;
    const uint32_t c = t / tokens_per_chunk;
    const uint32_t tc = t % tokens_per_chunk;
    const uint32_t n_c = std::min(tokens_per_chunk, num_tokens - c * tokens_per_chunk);
    const size_t chunk_base = size_t{c} * s.layout.ChunkBytes(tokens_per_chunk);
    for (uint32_t l = 0; l < s.layout.num_layers; ++l) {
      for (uint32_t p = 0; p < s.planes(); ++p) {
        for (uint32_t h = 0; h < s.heads(); ++h) {
          const size_t src =
              chunk_base + ((((size_t{l} * s.planes() + p) * s.heads() + h) * n_c) + tc) * vec;
          std::memcpy(&(*layers)[l][s.PagedOffset(p, block, slot, h)], &chunks[src], vec);
        }
      }
    }
  }
}

}  // namespace kvtier::kernels::testing

#endif  // KVTIER_TESTS_KERNELS_PAGED_TEST_UTIL_H_
