// Internal: the flattened description of one gather or scatter that the CPU reference and the CUDA
// kernels both execute, so the two cannot disagree on addressing. Not a public header.
#ifndef KVTIER_KERNELS_SRC_PAGED_PAGED_PLAN_H_
#define KVTIER_KERNELS_SRC_PAGED_PAGED_PLAN_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvtier/kernels/paged.h"

namespace kvtier::kernels::internal {

// A copy moves `num_tokens * num_layers * planes * heads` vectors of `vector_bytes` bytes each.
//   paged side:  layer_base[l] + p * stride_plane + block * stride_block + slot * stride_token
//                + h * vector_bytes, with block = block_ids[(first_token + t) / block_size]
//                and slot = (first_token + t) % block_size
//   chunk side:  chunks + c * chunk_stride
//                + (((l * planes + p) * heads + h) * n_c + t % tokens_per_chunk) * vector_bytes
//                with c = t / tokens_per_chunk and n_c = that chunk's token count
// `block_ids` here starts at the run's first block, so first_token < block_size.
struct PagedCopyPlan {
  std::vector<char*> layer_base;
  std::vector<int32_t> block_ids;
  uint32_t planes = 0;         // 2 (K, V) for MHA, 1 for MLA
  uint32_t heads = 0;          // kv heads for MHA, 1 for MLA
  uint32_t vector_bytes = 0;   // head_dim (MHA) or latent + rope (MLA) times the dtype size
  uint32_t block_size = 0;
  uint32_t first_token = 0;    // offset inside block_ids[0]
  uint32_t num_tokens = 0;
  uint32_t tokens_per_chunk = 0;
  int64_t stride_plane = 0;
  int64_t stride_block = 0;
  int64_t stride_token = 0;
  size_t chunk_stride = 0;     // layout.ChunkBytes(tokens_per_chunk)
  char* chunks = nullptr;
  MemorySpace space = MemorySpace::kHost;
};

// Validates the cache, the run and the buffer and flattens them into a plan.
absl::StatusOr<PagedCopyPlan> MakePagedCopyPlan(const PagedKvCache& cache, const PagedRun& run,
                                                uint32_t tokens_per_chunk, const void* chunks);

enum class PagedDirection { kGather, kScatter };

// CPU reference (host buffers).
void PagedCopyHost(const PagedCopyPlan& plan, PagedDirection direction);

// CUDA kernels (device buffers); runs on the default stream and synchronizes. Unimplemented in a
// build without CUDA.
absl::Status PagedCopyDevice(const PagedCopyPlan& plan, PagedDirection direction);

// Gathers a device-cache plan into host memory through a temporary device buffer (plan.chunks is
// ignored). Unimplemented without CUDA.
absl::Status PagedGatherDeviceToHost(const PagedCopyPlan& plan, void* host_chunks,
                                     size_t bytes);

}  // namespace kvtier::kernels::internal

#endif  // KVTIER_KERNELS_SRC_PAGED_PAGED_PLAN_H_
