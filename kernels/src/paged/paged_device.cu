// CUDA kernels for paged gather/scatter. Same addressing as the CPU reference (paged_plan.h);
// each thread moves one aligned unit (16, 8, 4, 2 or 1 bytes) of one (token, layer, plane, head)
// vector. Heads and units are the fastest-moving indices, so the paged side (one token's heads
// are contiguous) is read or written in full contiguous rows and the chunk side in runs of one
// vector.
//
// The layer pointers and the block table travel inside the kernel parameters (__grid_constant__,
// up to 32 KiB since CUDA 12.1), so a call needs no device allocation and no host-to-device copy:
// large runs are split into several launches of at most kMaxLayersPerLaunch layers and
// kMaxBlocksPerLaunch blocks. Index math is 32-bit per launch (bounded on the host).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include <fmt/format.h>

#include "kvtier/common/status.h"
#include "paged/paged_plan.h"

#if CUDART_VERSION < 12010
#error "paged_device.cu needs CUDA 12.1+ (kernel parameters larger than 4 KiB)"
#endif

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

constexpr uint32_t kMaxLayersPerLaunch = 64;
constexpr uint32_t kMaxBlocksPerLaunch = 6144;
constexpr uint32_t kThreads = 256;

struct KernelParams {
  char* layer_base[kMaxLayersPerLaunch];   // this launch's layers
  int32_t block_ids[kMaxBlocksPerLaunch];  // this launch's slice of the block table
  char* chunks;
  uint32_t first_layer;       // cache index of layer_base[0] (chunk-side offsets)
  uint32_t planes;
  uint32_t heads;
  uint32_t units_per_vector;
  uint32_t vector_bytes;
  uint32_t block_size;
  uint32_t first_slot;        // slot of this launch's first token inside block_ids[0]
  uint32_t token_base;        // index within the run of this launch's first token
  uint32_t num_tokens;        // tokens this launch moves
  uint32_t run_tokens;        // tokens of the whole run (sizes the last chunk)
  uint32_t tokens_per_chunk;
  int64_t stride_plane;
  int64_t stride_block;
  int64_t stride_token;
  uint64_t chunk_stride;
};
static_assert(sizeof(KernelParams) <= 32000, "kernel parameters must stay under 32 KiB");

template <typename Unit, bool kGather>
__global__ void PagedCopyKernel(const __grid_constant__ KernelParams p) {
  const uint32_t local_layer = blockIdx.y / p.planes;
  const uint32_t plane = blockIdx.y % p.planes;
  const uint32_t layer = p.first_layer + local_layer;
  // < 2^31 (checked on the host), so i + stride cannot wrap a uint32.
  const uint32_t total = p.num_tokens * p.heads * p.units_per_vector;
  char* const base = p.layer_base[local_layer] + plane * p.stride_plane;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const uint32_t u = i % p.units_per_vector;
    const uint32_t rest = i / p.units_per_vector;
    const uint32_t h = rest % p.heads;
    const uint32_t lt = rest / p.heads;
    const uint32_t s = p.first_slot + lt;
    const int64_t block = p.block_ids[s / p.block_size];
    Unit* paged = reinterpret_cast<Unit*>(base + block * p.stride_block +
                                          int64_t{s % p.block_size} * p.stride_token +
                                          uint64_t{h} * p.vector_bytes) + u;
    const uint32_t t = p.token_base + lt;
    const uint32_t c = t / p.tokens_per_chunk;
    const uint32_t tc = t % p.tokens_per_chunk;
    const uint32_t n_c = min(p.tokens_per_chunk, p.run_tokens - c * p.tokens_per_chunk);
    Unit* chunk = reinterpret_cast<Unit*>(
        p.chunks + c * p.chunk_stride +
        ((((uint64_t{layer} * p.planes + plane) * p.heads + h) * n_c) + tc) * p.vector_bytes) + u;
    if (kGather) {
      *chunk = *paged;
    } else {
      *paged = *chunk;
    }
  }
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

template <typename Unit>
absl::Status LaunchAll(const PagedCopyPlan& plan, PagedDirection direction) {
  const uint32_t layers = static_cast<uint32_t>(plan.layer_base.size());
  const uint32_t units = plan.vector_bytes / sizeof(Unit);
  const uint64_t per_token = uint64_t{plan.heads} * units;
  if (per_token == 0 || per_token > 0x7fffffffu) {
    return absl::InvalidArgumentError("paged copy: a token's vectors exceed 2^31 copy units");
  }
  const uint32_t max_tokens_32bit = static_cast<uint32_t>(0x7fffffffu / per_token);
  // Shared by every launch; filled per layer group and token range below.
  static thread_local KernelParams params;
  params.chunks = plan.chunks;
  params.planes = plan.planes;
  params.heads = plan.heads;
  params.units_per_vector = units;
  params.vector_bytes = plan.vector_bytes;
  params.block_size = plan.block_size;
  params.run_tokens = plan.num_tokens;
  params.tokens_per_chunk = plan.tokens_per_chunk;
  params.stride_plane = plan.stride_plane;
  params.stride_block = plan.stride_block;
  params.stride_token = plan.stride_token;
  params.chunk_stride = plan.chunk_stride;
  for (uint32_t l0 = 0; l0 < layers; l0 += kMaxLayersPerLaunch) {
    const uint32_t nl = std::min(kMaxLayersPerLaunch, layers - l0);
    std::copy(plan.layer_base.begin() + l0, plan.layer_base.begin() + l0 + nl, params.layer_base);
    params.first_layer = l0;
    for (uint32_t t = 0; t < plan.num_tokens;) {
      const uint64_t s0 = uint64_t{plan.first_token} + t;  // relative to plan.block_ids[0]
      const uint64_t b0 = s0 / plan.block_size;
      const uint32_t first_slot = static_cast<uint32_t>(s0 % plan.block_size);
      const uint64_t by_blocks = uint64_t{kMaxBlocksPerLaunch} * plan.block_size - first_slot;
      const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(
          {plan.num_tokens - t, by_blocks, max_tokens_32bit}));
      const uint64_t blocks = (uint64_t{first_slot} + n + plan.block_size - 1) / plan.block_size;
      std::memcpy(params.block_ids, plan.block_ids.data() + b0, blocks * sizeof(int32_t));
      params.first_slot = first_slot;
      params.token_base = t;
      params.num_tokens = n;
      const uint64_t work = uint64_t{n} * per_token;
      const dim3 grid(static_cast<uint32_t>(std::min<uint64_t>((work + kThreads - 1) / kThreads,
                                                               65535)),
                      nl * plan.planes);
      if (direction == PagedDirection::kGather) {
        PagedCopyKernel<Unit, true><<<grid, kThreads>>>(params);
      } else {
        PagedCopyKernel<Unit, false><<<grid, kThreads>>>(params);
      }
      KVTIER_PAGED_CUDA(cudaGetLastError());
      t += n;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status PagedCopyDevice(const PagedCopyPlan& plan, PagedDirection direction) {
  const absl::Status status = [&] {
    switch (UnitBytes(plan)) {
      case 16: return LaunchAll<uint4>(plan, direction);
      case 8: return LaunchAll<uint2>(plan, direction);
      case 4: return LaunchAll<uint32_t>(plan, direction);
      case 2: return LaunchAll<uint16_t>(plan, direction);
      default: return LaunchAll<uint8_t>(plan, direction);
    }
  }();
  // Kernel parameters are copied at launch, so nothing here outlives the call but the work itself;
  // wait for it, as kernels/codec.h promises for device work.
  const cudaError_t sync = cudaStreamSynchronize(nullptr);
  KVTIER_RETURN_IF_ERROR(status);
  KVTIER_PAGED_CUDA(sync);
  return absl::OkStatus();
}

absl::Status PagedGatherDeviceToHost(const PagedCopyPlan& plan, void* host_chunks,
                                     size_t bytes) {
  void* staging = nullptr;
  KVTIER_PAGED_CUDA(cudaMalloc(&staging, bytes));
  PagedCopyPlan device_plan = plan;
  device_plan.chunks = static_cast<char*>(staging);
  const absl::Status status = PagedCopyDevice(device_plan, PagedDirection::kGather);
  const cudaError_t copy_err =
      status.ok() ? cudaMemcpy(host_chunks, staging, bytes, cudaMemcpyDeviceToHost) : cudaSuccess;
  const cudaError_t free_err = cudaFree(staging);
  KVTIER_RETURN_IF_ERROR(status);
  KVTIER_PAGED_CUDA(copy_err);
  KVTIER_PAGED_CUDA(free_err);
  return absl::OkStatus();
}

}  // namespace kvtier::kernels::internal
