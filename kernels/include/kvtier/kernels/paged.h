// Paged KV layouts: convert between an inference engine's paged KV buffers and kvtier's canonical
// chunks, so a worker hands block ids instead of copies.
//
// The engine layout is vLLM's, one tensor per layer, contiguous:
//   MHA/GQA: [2][num_blocks][block_size][num_kv_heads][head_dim]   (K blocks, then V blocks)
//   MLA:     [num_blocks][block_size][latent_dim + rope_dim]
// Token i of a sequence lives in block block_ids[i / block_size], slot i % block_size; the caller
// owns the block table (kvtier never allocates engine blocks).
//
// The canonical chunk layout is kernels/layout.h's: [layer][K|V][kv_head][token][dim] (MLA:
// [layer][token][latent + rope]). Gather and scatter move exact bytes (no dtype conversion), on the
// CPU for host buffers and with CUDA kernels for device buffers (one dispatcher, by MemorySpace);
// both give identical bytes.
//
// Thread-safety: all functions are thread-safe. Concurrent calls may share a cache as long as they
// do not write the same blocks (scatter) or write blocks another call reads.
#ifndef KVTIER_KERNELS_PAGED_H_
#define KVTIER_KERNELS_PAGED_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvtier/kernels/codec.h"
#include "kvtier/kernels/layout.h"

namespace kvtier::kernels {

// One engine's paged KV cache (borrowed: kvtier never frees these pointers).
struct PagedKvCache {
  // One pointer per layer (layout.num_layers entries) to that layer's tensor, in `space`.
  std::vector<void*> layer_base;
  MemorySpace space = MemorySpace::kHost;
  // Shape of one token's KV; must validate. dtype is the engine buffer's element type.
  KvLayout layout;
  uint32_t num_blocks = 0;  // blocks per layer tensor; block ids are in [0, num_blocks)
  uint32_t block_size = 0;  // tokens per block (vLLM default 16)

  // Rejects an invalid layout, zero blocks or block size, a layer_base count different from
  // layout.num_layers, null layer pointers, and tensors larger than 2^62 bytes.
  absl::Status Validate() const;

  // Byte strides inside one layer tensor (see the file comment). For MLA, StrideKv() is 0 and
  // StrideHead() is 0: there is one "plane" and one "head".
  int64_t StrideKv() const;
  int64_t StrideBlock() const;
  int64_t StrideToken() const;
  int64_t StrideHead() const;
  // Bytes of one layer tensor: MHA 2 * num_blocks * block_size * kv_heads * head_dim * dtype size.
  size_t LayerBytes() const;
};

// A run of a sequence's tokens inside the cache: tokens [first_token, first_token + num_tokens)
// of the sequence whose block table is `block_ids`. Every block id the run touches must be in
// [0, num_blocks); `block_ids` must cover the run (size >= ceil((first_token+num_tokens)/block_size)).
struct PagedRun {
  absl::Span<const int32_t> block_ids;  // host memory
  uint32_t first_token = 0;
  uint32_t num_tokens = 0;
};

// Copies the run out of the cache into consecutive canonical chunks of `tokens_per_chunk` tokens
// (the last one may be shorter): chunk c starts at byte c * layout.ChunkBytes(tokens_per_chunk) of
// `chunks`, which must hold layout.ChunkBytes(run.num_tokens) bytes in `cache.space`. Device work
// runs on the default stream and is complete when the call returns.
// Errors: InvalidArgument (bad cache, block ids out of range or too few, null or unaligned
// buffers), Unimplemented (device cache in a build without CUDA), Internal (a CUDA failure).
absl::Status GatherChunks(const PagedKvCache& cache, const PagedRun& run,
                          uint32_t tokens_per_chunk, void* chunks);

// GatherChunks into host memory whatever cache.space is: for a device cache the run is gathered
// on the GPU into a temporary device buffer and copied to `host_chunks` in one transfer (what a
// worker does before sending its KV over the network). For a host cache it is GatherChunks.
absl::Status GatherChunksToHost(const PagedKvCache& cache, const PagedRun& run,
                                uint32_t tokens_per_chunk, void* host_chunks);

// The reverse: writes consecutive canonical chunks (as GatherChunks lays them out) into the run's
// slots. Slots outside the run are not touched, so a run may start or end inside a block.
absl::Status ScatterChunks(const void* chunks, uint32_t tokens_per_chunk,
                           const PagedKvCache& cache, const PagedRun& run);

// Where kernels::Decode should write one chunk of `run.num_tokens` tokens that starts at
// `run.first_token` of the sequence, so a payload decodes straight into the engine's pages with no
// intermediate buffer. `run.first_token` must be a multiple of cache.block_size (DecodeTarget maps a
// chunk's token t to block t / block_size); chunk sizes that are multiples of the block size (256
// or 512 with vLLM's 16) always satisfy it. The block ids the run touches are checked here, so
// Decode cannot write outside the cache. The target points into `run.block_ids`: keep that array
// alive and unchanged until Decode returns.
// Errors: InvalidArgument (bad cache, unaligned first_token, block ids missing or out of range).
absl::StatusOr<DecodeTarget> PagedDecodeTarget(const PagedKvCache& cache, const PagedRun& run);

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_PAGED_H_
