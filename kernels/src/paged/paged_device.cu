// CUDA kernels for paged gather/scatter. Same addressing as the CPU reference (paged_plan.h);
// each thread moves one aligned unit (16, 8, 4, 2 or 1 bytes) of one (token, layer, plane, head)
// vector. Heads and units are the fastest-moving indices, so the paged side (one token's heads
// are contiguous) is read or written in full contiguous rows and the chunk side in runs of one
// vector.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include <fmt/format.h>

#include "kvtier/common/status.h"
#include "paged/paged_plan.h"

namespace kvtier::kernels::internal {
namespace {

#define KVTIER_PAGED_CUDA(expr)                                                                \
  do {                                                                                         \
    cudaError_t err_ = (expr);                                                                 \
    if (err_ != cudaSuccess) {                                                                 \
      return absl::InternalError(fmt::format("paged copy: {} failed: {}", #expr,               \
                                             cudaGetErrorString(err_)));                       \
    }                                                                                          \
  } while (0)

struct KernelParams {
  char* const* layer_base;   // device array, one per layer
  const int32_t* block_ids;  // device array
  char* chunks;
  uint32_t planes;
  uint32_t heads;
  uint32_t units_per_vector;
  uint32_t vector_bytes;
  uint32_t block_size;
  uint32_t first_token;
  uint32_t num_tokens;
  uint32_t tokens_per_chunk;
  int64_t stride_plane;
  int64_t stride_block;
  int64_t stride_token;
  uint64_t chunk_stride;
};

template <typename Unit, bool kGather>
__global__ void PagedCopyKernel(const KernelParams p) {
  const uint32_t lp = blockIdx.y;  // layer * planes + plane
  const uint32_t layer = lp / p.planes;
  const uint32_t plane = lp % p.planes;
  const uint64_t total = uint64_t{p.num_tokens} * p.heads * p.units_per_vector;
  char* const layer_base = p.layer_base[layer] + plane * p.stride_plane;
  for (uint64_t i = blockIdx.x * uint64_t{blockDim.x} + threadIdx.x; i < total;
       i += uint64_t{gridDim.x} * blockDim.x) {
    const uint32_t u = static_cast<uint32_t>(i % p.units_per_vector);
    const uint64_t rest = i / p.units_per_vector;
    const uint32_t h = static_cast<uint32_t>(rest % p.heads);
    const uint32_t t = static_cast<uint32_t>(rest / p.heads);
    const uint32_t s = p.first_token + t;
    const int64_t block = p.block_ids[s / p.block_size];
    Unit* paged = reinterpret_cast<Unit*>(layer_base + block * p.stride_block +
                                          (s % p.block_size) * p.stride_token +
                                          uint64_t{h} * p.vector_bytes) + u;
    const uint32_t c = t / p.tokens_per_chunk;
    const uint32_t tc = t % p.tokens_per_chunk;
    const uint32_t n_c = min(p.tokens_per_chunk, p.num_tokens - c * p.tokens_per_chunk);
    Unit* chunk = reinterpret_cast<Unit*>(
        p.chunks + c * p.chunk_stride +
        (((uint64_t{lp} * p.heads + h) * n_c) + tc) * p.vector_bytes) + u;
    if (kGather) {
      *chunk = *paged;
    } else {
      *paged = *chunk;
    }
  }
}

template <typename Unit>
absl::Status Launch(KernelParams params, uint32_t layers, PagedDirection direction) {
  params.units_per_vector = params.vector_bytes / sizeof(Unit);
  const uint64_t work = uint64_t{params.num_tokens} * params.heads * params.units_per_vector;
  constexpr uint32_t kThreads = 256;
  const uint64_t blocks_x = std::min<uint64_t>((work + kThreads - 1) / kThreads, 65535);
  const dim3 grid(static_cast<uint32_t>(blocks_x), layers * params.planes);
  if (direction == PagedDirection::kGather) {
    PagedCopyKernel<Unit, true><<<grid, kThreads>>>(params);
  } else {
    PagedCopyKernel<Unit, false><<<grid, kThreads>>>(params);
  }
  KVTIER_PAGED_CUDA(cudaGetLastError());
  return absl::OkStatus();
}

// Largest power of two (<= 16) dividing every address and stride the copy forms.
uint32_t UnitBytes(const PagedCopyPlan& plan) {
  uint64_t bits = reinterpret_cast<uintptr_t>(plan.chunks) | plan.vector_bytes |
                  static_cast<uint64_t>(plan.stride_plane) |
                  static_cast<uint64_t>(plan.stride_block) |
                  static_cast<uint64_t>(plan.stride_token) | plan.chunk_stride;
  for (char* base : plan.layer_base) bits |= reinterpret_cast<uintptr_t>(base);
  uint32_t unit = 16;
  while (unit > 1 && (bits & (unit - 1)) != 0) unit /= 2;
  return unit;
}

}  // namespace

constexpr cudaStream_t kStream = nullptr;  // the default stream, as kernels/codec.h documents

absl::Status PagedCopyDevice(const PagedCopyPlan& plan, PagedDirection direction) {
  const uint32_t layers = static_cast<uint32_t>(plan.layer_base.size());
  if (uint64_t{layers} * plan.planes > 65535) {
    return absl::InvalidArgumentError("paged copy: more than 65535 layer planes");
  }
  // One scratch allocation holds the layer pointers and the block ids (stream-ordered, so it is
  // cheap once the pool is warm).
  const size_t pointer_bytes = layers * sizeof(char*);
  const size_t id_bytes = plan.block_ids.size() * sizeof(int32_t);
  void* scratch = nullptr;
  KVTIER_PAGED_CUDA(cudaMallocAsync(&scratch, pointer_bytes + id_bytes, kStream));
  absl::Status status = [&]() -> absl::Status {
    KVTIER_PAGED_CUDA(cudaMemcpyAsync(scratch, plan.layer_base.data(), pointer_bytes,
                                      cudaMemcpyHostToDevice, kStream));
    KVTIER_PAGED_CUDA(cudaMemcpyAsync(static_cast<char*>(scratch) + pointer_bytes,
                                      plan.block_ids.data(), id_bytes, cudaMemcpyHostToDevice,
                                      kStream));
    KernelParams params{};
    params.layer_base = static_cast<char* const*>(scratch);
    params.block_ids =
        reinterpret_cast<const int32_t*>(static_cast<char*>(scratch) + pointer_bytes);
    params.chunks = plan.chunks;
    params.planes = plan.planes;
    params.heads = plan.heads;
    params.vector_bytes = plan.vector_bytes;
    params.block_size = plan.block_size;
    params.first_token = plan.first_token;
    params.num_tokens = plan.num_tokens;
    params.tokens_per_chunk = plan.tokens_per_chunk;
    params.stride_plane = plan.stride_plane;
    params.stride_block = plan.stride_block;
    params.stride_token = plan.stride_token;
    params.chunk_stride = plan.chunk_stride;
    switch (UnitBytes(plan)) {
      case 16: return Launch<uint4>(params, layers, direction);
      case 8: return Launch<uint2>(params, layers, direction);
      case 4: return Launch<uint32_t>(params, layers, direction);
      case 2: return Launch<uint16_t>(params, layers, direction);
      default: return Launch<uint8_t>(params, layers, direction);
    }
  }();
  const cudaError_t free_err = cudaFreeAsync(scratch, kStream);
  const cudaError_t sync_err = cudaStreamSynchronize(kStream);
  KVTIER_RETURN_IF_ERROR(status);
  KVTIER_PAGED_CUDA(free_err);
  KVTIER_PAGED_CUDA(sync_err);
  return absl::OkStatus();
}

}  // namespace kvtier::kernels::internal
