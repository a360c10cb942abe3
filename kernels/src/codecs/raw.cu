// CUDA kernels of the raw codec: encode is a copy; decode scatters rows into the target.
#include "codecs/cuda_common.cuh"

namespace kvtier::kernels::internal::cuda {
namespace {

// One group of `lanes` threads per row (stream s, token t) of the canonical body.
__global__ void __launch_bounds__(kBlock)
    RawScatterKernel(StreamShape shape, const char* body, uint64_t body_stride, TargetView target,
                     int lanes) {
  const uint64_t row = (uint64_t{blockIdx.x} * kBlock + threadIdx.x) / lanes;
  const int lane = threadIdx.x % lanes;
  if (row >= shape.Rows()) return;
  const uint32_t chunk = blockIdx.y;
  const uint32_t s = static_cast<uint32_t>(row / shape.tokens);
  const uint32_t t = static_cast<uint32_t>(row % shape.tokens);
  uint32_t l, kv, h;
  shape.Decompose(s, &l, &kv, &h);
  const uint64_t row_bytes = uint64_t{shape.width} * shape.elem_size;
  CopyRow(target.Row(l, kv, h, t, chunk), body + chunk * body_stride + row * row_bytes, row_bytes,
          lane, lanes);
}

}  // namespace

int LaunchRawEncode(const StreamShape& shape, const void* in, uint64_t in_stride, void* body,
                    uint64_t body_stride, uint32_t num_chunks, void* stream) {
  const uint64_t bytes = shape.Rows() * shape.width * shape.elem_size;
  if (num_chunks == 1) in_stride = body_stride = bytes;
  return cudaMemcpy2DAsync(body, body_stride, in, in_stride, bytes, num_chunks,
                           cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(stream));
}

int LaunchRawDecode(const StreamShape& shape, const void* body, uint64_t body_stride,
                    const TargetView& target, uint32_t num_chunks, void* stream) {
  const int lanes = ThreadsPerRow((shape.width * shape.elem_size + 15) / 16);
  dim3 grid(GridFor(shape.Rows() * lanes, kBlock), num_chunks);
  RawScatterKernel<<<grid, kBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      shape, static_cast<const char*>(body), body_stride, target, lanes);
  return cudaGetLastError();
}

const char* ErrorString(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // namespace kvtier::kernels::internal::cuda
