// Dispatcher and validation for the paged-layout helpers (kernels/paged.h).
#include "kvtier/kernels/paged.h"

#include <limits>

#include <fmt/format.h>

#include "kvtier/common/status.h"
#include "paged/paged_plan.h"

namespace kvtier::kernels {
namespace {

bool IsMla(const KvLayout& layout) { return layout.kind == LayoutKind::kMla; }

uint32_t Planes(const KvLayout& layout) { return IsMla(layout) ? 1 : 2; }
uint32_t Heads(const KvLayout& layout) { return IsMla(layout) ? 1 : layout.num_kv_heads; }
uint64_t VectorBytes(const KvLayout& layout) {
  return uint64_t{layout.VectorDim()} * DTypeSize(layout.dtype);
}

// Checks the block ids a run touches and returns the index of its first block.
absl::StatusOr<size_t> CheckRun(const PagedKvCache& cache, const PagedRun& run) {
  if (run.num_tokens == 0) return absl::InvalidArgumentError("paged run: num_tokens is 0");
  const uint64_t end = uint64_t{run.first_token} + run.num_tokens;
  const uint64_t first_block = run.first_token / cache.block_size;
  const uint64_t blocks_needed = (end + cache.block_size - 1) / cache.block_size;
  if (run.block_ids.size() < blocks_needed) {
    return absl::InvalidArgumentError(fmt::format(
        "paged run: tokens [{}, {}) need {} block ids, the block table has {}", run.first_token,
        end, blocks_needed, run.block_ids.size()));
  }
  for (uint64_t b = first_block; b < blocks_needed; ++b) {
    const int32_t id = run.block_ids[b];
    if (id < 0 || static_cast<uint32_t>(id) >= cache.num_blocks) {
      return absl::InvalidArgumentError(fmt::format(
          "paged run: block_ids[{}] = {} is outside [0, {})", b, id, cache.num_blocks));
    }
  }
  return static_cast<size_t>(first_block);
}

}  // namespace

absl::Status PagedKvCache::Validate() const {
  KVTIER_RETURN_IF_ERROR(layout.Validate());
  if (num_blocks == 0) return absl::InvalidArgumentError("paged cache: num_blocks is 0");
  if (block_size == 0) return absl::InvalidArgumentError("paged cache: block_size is 0");
  if (layer_base.size() != layout.num_layers) {
    return absl::InvalidArgumentError(fmt::format(
        "paged cache: {} layer pointers for a {}-layer layout", layer_base.size(),
        layout.num_layers));
  }
  for (size_t l = 0; l < layer_base.size(); ++l) {
    if (layer_base[l] == nullptr) {
      return absl::InvalidArgumentError(fmt::format("paged cache: layer_base[{}] is null", l));
    }
  }
  // 2 * blocks * block_size * heads * vector bytes must stay far from int64 overflow.
  const long double bytes = static_cast<long double>(Planes(layout)) * num_blocks * block_size *
                            Heads(layout) * VectorBytes(layout);
  if (bytes > static_cast<long double>(uint64_t{1} << 62)) {
    return absl::InvalidArgumentError("paged cache: layer tensor larger than 2^62 bytes");
  }
  return absl::OkStatus();
}

int64_t PagedKvCache::StrideHead() const {
  return IsMla(layout) ? 0 : static_cast<int64_t>(VectorBytes(layout));
}
int64_t PagedKvCache::StrideToken() const {
  return static_cast<int64_t>(Heads(layout) * VectorBytes(layout));
}
int64_t PagedKvCache::StrideBlock() const { return StrideToken() * block_size; }
int64_t PagedKvCache::StrideKv() const {
  return IsMla(layout) ? 0 : StrideBlock() * static_cast<int64_t>(num_blocks);
}
size_t PagedKvCache::LayerBytes() const {
  return static_cast<size_t>(StrideBlock()) * num_blocks * Planes(layout);
}

namespace internal {

absl::StatusOr<PagedCopyPlan> MakePagedCopyPlan(const PagedKvCache& cache, const PagedRun& run,
                                                uint32_t tokens_per_chunk, const void* chunks) {
  KVTIER_RETURN_IF_ERROR(cache.Validate());
  if (tokens_per_chunk == 0) return absl::InvalidArgumentError("paged copy: tokens_per_chunk is 0");
  if (chunks == nullptr) return absl::InvalidArgumentError("paged copy: chunk buffer is null");
  KVTIER_ASSIGN_OR_RETURN(size_t first_block, CheckRun(cache, run));
  const uint64_t vector_bytes = VectorBytes(cache.layout);
  if (vector_bytes > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError("paged copy: vector too wide");
  }
  PagedCopyPlan plan;
  plan.layer_base.reserve(cache.layer_base.size());
  for (void* p : cache.layer_base) plan.layer_base.push_back(static_cast<char*>(p));
  const size_t last_block =
      (uint64_t{run.first_token} + run.num_tokens + cache.block_size - 1) / cache.block_size;
  plan.block_ids.assign(run.block_ids.begin() + first_block, run.block_ids.begin() + last_block);
  plan.planes = Planes(cache.layout);
  plan.heads = Heads(cache.layout);
  plan.vector_bytes = static_cast<uint32_t>(vector_bytes);
  plan.block_size = cache.block_size;
  plan.first_token = run.first_token % cache.block_size;
  plan.num_tokens = run.num_tokens;
  plan.tokens_per_chunk = tokens_per_chunk;
  plan.stride_plane = cache.StrideKv();
  plan.stride_block = cache.StrideBlock();
  plan.stride_token = cache.StrideToken();
  plan.chunk_stride = cache.layout.ChunkBytes(tokens_per_chunk);
  plan.chunks = static_cast<char*>(const_cast<void*>(chunks));
  plan.space = cache.space;
  return plan;
}

namespace {
absl::Status Run(const PagedCopyPlan& plan, PagedDirection direction) {
  switch (plan.space) {
    case MemorySpace::kHost:
      PagedCopyHost(plan, direction);
      return absl::OkStatus();
    case MemorySpace::kDevice:
      return PagedCopyDevice(plan, direction);
  }
  return absl::InvalidArgumentError("paged copy: unknown memory space");
}
}  // namespace

}  // namespace internal

absl::Status GatherChunks(const PagedKvCache& cache, const PagedRun& run,
                          uint32_t tokens_per_chunk, void* chunks) {
  KVTIER_ASSIGN_OR_RETURN(auto plan,
                          internal::MakePagedCopyPlan(cache, run, tokens_per_chunk, chunks));
  return internal::Run(plan, internal::PagedDirection::kGather);
}

absl::Status GatherChunksToHost(const PagedKvCache& cache, const PagedRun& run,
                                uint32_t tokens_per_chunk, void* host_chunks) {
  KVTIER_ASSIGN_OR_RETURN(auto plan,
                          internal::MakePagedCopyPlan(cache, run, tokens_per_chunk, host_chunks));
  if (cache.space == MemorySpace::kHost) {
    internal::PagedCopyHost(plan, internal::PagedDirection::kGather);
    return absl::OkStatus();
  }
  return internal::PagedGatherDeviceToHost(plan, host_chunks,
                                           cache.layout.ChunkBytes(run.num_tokens));
}

absl::Status ScatterChunks(const void* chunks, uint32_t tokens_per_chunk,
                           const PagedKvCache& cache, const PagedRun& run) {
  KVTIER_ASSIGN_OR_RETURN(auto plan,
                          internal::MakePagedCopyPlan(cache, run, tokens_per_chunk, chunks));
  return internal::Run(plan, internal::PagedDirection::kScatter);
}

absl::StatusOr<DecodeTarget> PagedDecodeTarget(const PagedKvCache& cache, const PagedRun& run) {
  KVTIER_RETURN_IF_ERROR(cache.Validate());
  if (run.first_token % cache.block_size != 0) {
    return absl::InvalidArgumentError(fmt::format(
        "paged decode target: first_token {} is not a multiple of block_size {}; decode into a "
        "contiguous buffer and ScatterChunks instead",
        run.first_token, cache.block_size));
  }
  KVTIER_ASSIGN_OR_RETURN(size_t first_block, CheckRun(cache, run));
  DecodeTarget target;
  target.layer_base = cache.layer_base;
  target.space = cache.space;
  target.dtype = cache.layout.dtype;
  target.stride_kv = cache.StrideKv();
  target.stride_head = cache.StrideHead();
  target.stride_token = cache.StrideToken();
  target.block_table = run.block_ids.data() + first_block;
  target.block_size = cache.block_size;
  target.stride_block = cache.StrideBlock();
  return target;
}

}  // namespace kvtier::kernels
