// CUDA kernels of the TurboQuant chunk codec. One warp per vector: the warp stages the vector in
// shared memory, and every arithmetic step repeats the CPU reference (tq_tables.cc) operation
// for operation with round-to-nearest intrinsics (__fadd_rn/__fmul_rn, never fused), so codes,
// norms and decoded values are bit-identical to the CPU's.
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "codecs/numeric.h"
#include "kvtier/common/status.h"
#include "turboquant/tq_codec.h"

namespace kvtier::kernels::internal {
namespace {

constexpr unsigned kFull = 0xFFFFFFFFu;

struct TqDevPart {
  uint32_t dim = 0, mse_bits = 0, nb = 0, prod = 0, dense = 0, num_windows = 0;
  uint32_t code_offset = 0, mse_bytes = 0, sign_bytes = 0, first_channel = 0;
  uint32_t win_off[3] = {0, 0, 0}, win_len[3] = {0, 0, 0};
  float win_scale[3] = {0, 0, 0};
  float qjl_scale = 0;
  const float* centroids = nullptr;
  const float* boundaries = nullptr;
  const float* signs = nullptr;  // window w's signs at w * win_len[0]
  const float* rot = nullptr;
  const float* rot_t = nullptr;
  const float* qjl = nullptr;
  const float* qjl_t = nullptr;
};

struct TqDevParams {
  TqGeometry g;
  TqDevPart parts[2];
  uint32_t max_dim = 0;
  uint32_t warps = 1;
  uint32_t warp_smem = 0;  // bytes of shared memory per warp
};

// ---- Device tables, uploaded once per (device, tables) and kept for the process. -------------

struct DevTablesEntry {
  std::shared_ptr<const TqTables> host;  // keeps the key pointer alive
  float* buf = nullptr;
  TqDevPart part;
};

std::mutex g_dev_mu;

absl::Status Cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("turboquant ", what, ": ", cudaGetErrorString(e)));
}

absl::StatusOr<TqDevPart> DeviceTables(const std::shared_ptr<const TqTables>& t) {
  int dev = 0;
  KVTIER_RETURN_IF_ERROR(Cuda(cudaGetDevice(&dev), "cudaGetDevice"));
  static auto* cache = new std::map<std::pair<int, const TqTables*>, DevTablesEntry>();
  std::lock_guard<std::mutex> lock(g_dev_mu);
  auto it = cache->find({dev, t.get()});
  if (it != cache->end()) return it->second.part;
  std::vector<float> all;
  auto append = [&](const std::vector<float>& v) {
    const size_t at = all.size();
    all.insert(all.end(), v.begin(), v.end());
    while (all.size() % 4) all.push_back(0.0f);  // 16-byte aligned arrays
    return at;
  };
  TqDevPart p;
  p.dim = t->dim;
  p.mse_bits = t->mse_bits;
  p.nb = static_cast<uint32_t>(t->boundaries.size());
  p.prod = t->prod ? 1 : 0;
  p.dense = t->params.rotation == TurboQuantRotation::kDense ? 1 : 0;
  p.qjl_scale = t->qjl_scale;
  size_t o_cent = append(t->centroids), o_bound = append(t->boundaries);
  std::vector<float> signs;
  p.num_windows = static_cast<uint32_t>(t->windows.size());
  for (uint32_t w = 0; w < p.num_windows; ++w) {
    p.win_off[w] = t->windows[w].offset;
    p.win_len[w] = t->windows[w].len;
    p.win_scale[w] = t->windows[w].scale;
    signs.insert(signs.end(), t->windows[w].signs.begin(), t->windows[w].signs.end());
  }
  size_t o_signs = append(signs), o_rot = append(t->rot), o_rot_t = append(t->rot_t);
  size_t o_qjl = append(t->qjl), o_qjl_t = append(t->qjl_t);
  DevTablesEntry e;
  e.host = t;
  KVTIER_RETURN_IF_ERROR(Cuda(cudaMalloc(&e.buf, std::max<size_t>(all.size(), 4) * 4), "cudaMalloc"));
  KVTIER_RETURN_IF_ERROR(
      Cuda(cudaMemcpy(e.buf, all.data(), all.size() * 4, cudaMemcpyHostToDevice), "upload"));
  p.centroids = e.buf + o_cent;
  p.boundaries = e.buf + o_bound;
  p.signs = e.buf + o_signs;
  p.rot = e.buf + o_rot;
  p.rot_t = e.buf + o_rot_t;
  p.qjl = e.buf + o_qjl;
  p.qjl_t = e.buf + o_qjl_t;
  e.part = p;
  cache->emplace(std::make_pair(dev, t.get()), e);
  return p;
}

absl::StatusOr<TqDevParams> MakeDevParams(const TqPlan& plan) {
  TqDevParams d;
  d.g = plan.g;
  for (uint32_t p = 0; p < plan.g.num_parts; ++p) {
    KVTIER_ASSIGN_OR_RETURN(d.parts[p], DeviceTables(plan.tables[p]));
    const TqPartShape& ps = plan.g.parts[p];
    d.parts[p].code_offset = ps.code_offset;
    d.parts[p].mse_bytes = ps.mse_bytes;
    d.parts[p].sign_bytes = ps.sign_bytes;
    d.parts[p].first_channel = ps.first_channel;
    d.max_dim = std::max(d.max_dim, ps.dim);
  }
  const uint32_t W = plan.g.shape.width;
  // x[W], z/tmp/r[max_dim] floats, codes[max_dim] bytes, two channel lists of 128 u16 (split).
  uint32_t bytes = 4u * (W + 3u * d.max_dim) + ((d.max_dim + 3u) & ~3u) + 512u;
  bytes = (bytes + 15u) & ~15u;
  d.warp_smem = bytes;
  d.warps = std::max(1u, std::min(8u, (96u * 1024u) / bytes));
  if (bytes > 200u * 1024u) {
    return absl::InvalidArgumentError("turboquant: vector too wide for the CUDA kernels");
  }
  return d;
}

// ---- Warp helpers --------------------------------------------------------------------------------

__device__ float WarpSumSquares(const float* x, uint32_t n, uint32_t lane) {
  float acc = 0.0f;
  for (uint32_t j = lane; j < n; j += 32) acc = __fadd_rn(acc, __fmul_rn(x[j], x[j]));
  for (int off = 16; off > 0; off >>= 1) acc = __fadd_rn(acc, __shfl_xor_sync(kFull, acc, off));
  return acc;
}

__device__ void WarpFwht(float* v, uint32_t len, uint32_t lane) {
  for (uint32_t h = 1; h < len; h <<= 1) {
    for (uint32_t q = lane; q < len / 2; q += 32) {
      const uint32_t i = (q / h) * 2u * h + (q % h);
      const float a = v[i], b = v[i + h];
      v[i] = __fadd_rn(a, b);
      v[i + h] = __fsub_rn(a, b);
    }
    __syncwarp();
  }
}

// x <- Rot x (in place; tmp: dim floats).
__device__ void WarpRotate(const TqDevPart& p, float* x, float* tmp, uint32_t lane) {
  if (!p.dense) {
    for (uint32_t w = 0; w < p.num_windows; ++w) {
      float* v = x + p.win_off[w];
      const float* s = p.signs + w * p.win_len[0];
      for (uint32_t i = lane; i < p.win_len[w]; i += 32) v[i] = __fmul_rn(v[i], s[i]);
      __syncwarp();
      WarpFwht(v, p.win_len[w], lane);
      for (uint32_t i = lane; i < p.win_len[w]; i += 32) v[i] = __fmul_rn(v[i], p.win_scale[w]);
      __syncwarp();
    }
    return;
  }
  const uint32_t d = p.dim;
  for (uint32_t i = lane; i < d; i += 32) {
    float acc = 0.0f;
    for (uint32_t j = 0; j < d; ++j) acc = __fadd_rn(acc, __fmul_rn(p.rot_t[j * d + i], x[j]));
    tmp[i] = acc;
  }
  __syncwarp();
  for (uint32_t i = lane; i < d; i += 32) x[i] = tmp[i];
  __syncwarp();
}

__device__ void WarpRotateInverse(const TqDevPart& p, float* x, float* tmp, uint32_t lane) {
  if (!p.dense) {
    for (int w = static_cast<int>(p.num_windows) - 1; w >= 0; --w) {
      float* v = x + p.win_off[w];
      const float* s = p.signs + w * p.win_len[0];
      WarpFwht(v, p.win_len[w], lane);
      for (uint32_t i = lane; i < p.win_len[w]; i += 32) {
        v[i] = __fmul_rn(__fmul_rn(v[i], p.win_scale[w]), s[i]);
      }
      __syncwarp();
    }
    return;
  }
  const uint32_t d = p.dim;
  for (uint32_t j = lane; j < d; j += 32) {
    float acc = 0.0f;
    for (uint32_t i = 0; i < d; ++i) acc = __fadd_rn(acc, __fmul_rn(p.rot[i * d + j], x[i]));
    tmp[j] = acc;
  }
  __syncwarp();
  for (uint32_t j = lane; j < d; j += 32) x[j] = tmp[j];
  __syncwarp();
}

// Channel lists of a split vector from its stream's mask; robust to malformed masks (every
// index stays inside the vector).
__device__ void WarpSplitChannels(const TqDevParams& P, const uint8_t* mask, uint16_t* ch0,
                                  uint16_t* ch1, uint32_t lane) {
  for (uint32_t j = lane; j < 128; j += 32) {
    ch0[j] = 0;
    ch1[j] = 0;
  }
  __syncwarp();
  uint32_t base0 = 0, base1 = 0;
  for (uint32_t c0 = 0; c0 < P.g.shape.width; c0 += 32) {
    const uint32_t c = c0 + lane;
    const bool out = c < P.g.shape.width && ((mask[c / 8] >> (c % 8)) & 1u);
    const bool in = c < P.g.shape.width && !out;
    const unsigned bo = __ballot_sync(kFull, out), bi = __ballot_sync(kFull, in);
    const unsigned below = (1u << lane) - 1u;
    const uint32_t i0 = base0 + __popc(bo & below), i1 = base1 + __popc(bi & below);
    if (out && i0 < P.parts[0].dim) ch0[i0] = static_cast<uint16_t>(c);
    if (in && i1 < P.parts[1].dim) ch1[i1] = static_cast<uint16_t>(c);
    base0 += __popc(bo);
    base1 += __popc(bi);
  }
  __syncwarp();
}

struct WarpSmem {
  float* x;
  float* z;
  float* tmp;
  float* r;
  uint8_t* codes;
  uint16_t* ch[2];
};

__device__ WarpSmem CarveSmem(const TqDevParams& P, uint32_t warp) {
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* base = smem + warp * P.warp_smem;
  WarpSmem s;
  s.x = reinterpret_cast<float*>(base);
  s.z = s.x + P.g.shape.width;
  s.tmp = s.z + P.max_dim;
  s.r = s.tmp + P.max_dim;
  s.codes = reinterpret_cast<uint8_t*>(s.r + P.max_dim);
  s.ch[0] = reinterpret_cast<uint16_t*>(s.codes + ((P.max_dim + 3u) & ~3u));
  s.ch[1] = s.ch[0] + 128;
  return s;
}

__device__ __forceinline__ uint32_t Channel(const TqDevParams& P, const WarpSmem& s, uint32_t p,
                                            uint32_t j) {
  return P.g.split ? s.ch[p][j] : P.parts[p].first_channel + j;
}

// ---- Kernels -------------------------------------------------------------------------------------

template <typename E>
__global__ void OutlierMaskKernel(TqDevParams P, const typename E::Storage* in, uint8_t* body) {
  __shared__ float sums[128];
  __shared__ uint8_t flag[128];
  const uint32_t s = blockIdx.x, c = threadIdx.x;  // split: width == 128
  const uint32_t T = P.g.shape.tokens;
  const typename E::Storage* base = in + static_cast<uint64_t>(s) * T * 128u;
  float acc = 0.0f;
  for (uint32_t t = 0; t < T; ++t) {
    const float x = E::ToFloat(base[static_cast<uint64_t>(t) * 128u + c]);
    acc = __fadd_rn(acc, __fmul_rn(x, x));
  }
  sums[c] = acc;
  __syncthreads();
  uint32_t rank = 0;
  for (uint32_t o = 0; o < 128; ++o) {
    rank += (sums[o] > acc || (sums[o] == acc && o < c)) ? 1u : 0u;
  }
  flag[c] = rank < P.parts[0].dim ? 1 : 0;
  __syncthreads();
  if (c < 16) {
    uint32_t b = 0;
    for (uint32_t i = 0; i < 8; ++i) b |= static_cast<uint32_t>(flag[c * 8 + i]) << i;
    body[static_cast<uint64_t>(s) * 16u + c] = static_cast<uint8_t>(b);
  }
}

template <typename E>
__global__ void EncodeKernel(TqDevParams P, const typename E::Storage* in, uint8_t* body) {
  const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint64_t v = static_cast<uint64_t>(blockIdx.x) * P.warps + warp;
  if (v >= P.g.Vectors()) return;
  const uint32_t W = P.g.shape.width, T = P.g.shape.tokens;
  const uint32_t stream = static_cast<uint32_t>(v / T);
  WarpSmem s = CarveSmem(P, warp);
  const typename E::Storage* row = in + v * W;
  for (uint32_t c = lane; c < W; c += 32) s.x[c] = E::ToFloat(row[c]);
  if (P.g.split) WarpSplitChannels(P, body + static_cast<uint64_t>(stream) * 16u, s.ch[0], s.ch[1], lane);
  __syncwarp();
  uint8_t* codes_out = body + P.g.codes_offset + v * P.g.vector_code_bytes;
  uint16_t* scalars = reinterpret_cast<uint16_t*>(body + P.g.scalars_offset);
  for (uint32_t p = 0; p < P.g.num_parts; ++p) {
    const TqDevPart& part = P.parts[p];
    const uint32_t n = part.dim;
    for (uint32_t j = lane; j < n; j += 32) s.z[j] = s.x[Channel(P, s, p, j)];
    __syncwarp();
    const float norm = __fsqrt_rn(WarpSumSquares(s.z, n, lane));
    const float inv = norm > 0.0f ? __fdiv_rn(1.0f, norm) : 0.0f;
    for (uint32_t j = lane; j < n; j += 32) s.z[j] = __fmul_rn(s.z[j], inv);
    __syncwarp();
    WarpRotate(part, s.z, s.tmp, lane);
    uint8_t* out = codes_out + part.code_offset;
    if (part.mse_bits > 0) {
      for (uint32_t j = lane; j < n; j += 32) {
        const float z = s.z[j];
        uint32_t c = 0;
        for (uint32_t k = 0; k < part.nb; ++k) c += z >= part.boundaries[k] ? 1u : 0u;
        s.codes[j] = static_cast<uint8_t>(c);
        s.r[j] = __fsub_rn(z, part.centroids[c]);
      }
      __syncwarp();
      for (uint32_t k = lane; k < part.mse_bytes; k += 32) {
        out[k] = TqPackByte(s.codes, n, part.mse_bits, k);
      }
    } else {
      for (uint32_t j = lane; j < n; j += 32) s.r[j] = s.z[j];
    }
    __syncwarp();
    uint16_t* sc = scalars + (v * P.g.num_parts + p) * (part.prod ? 2u : 1u);
    if (part.prod) {
      const float gamma = __fsqrt_rn(WarpSumSquares(s.r, n, lane));
      for (uint32_t i = lane; i < n; i += 32) {
        float acc = 0.0f;
        for (uint32_t j = 0; j < n; ++j) acc = __fadd_rn(acc, __fmul_rn(part.qjl_t[j * n + i], s.r[j]));
        s.codes[i] = acc >= 0.0f ? 1 : 0;
      }
      __syncwarp();
      for (uint32_t k = lane; k < part.sign_bytes; k += 32) {
        out[part.mse_bytes + k] = TqPackByte(s.codes, n, 1, k);
      }
      if (lane == 0) sc[1] = FloatToHalfSaturate(gamma);
      __syncwarp();
    }
    if (lane == 0) sc[0] = FloatToHalfSaturate(norm);
  }
}

template <typename E>
__global__ void DecodeKernel(TqDevParams P, const uint8_t* body, TargetView view) {
  const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint64_t v = static_cast<uint64_t>(blockIdx.x) * P.warps + warp;
  if (v >= P.g.Vectors()) return;
  const uint32_t T = P.g.shape.tokens;
  const uint32_t stream = static_cast<uint32_t>(v / T), t = static_cast<uint32_t>(v % T);
  WarpSmem s = CarveSmem(P, warp);
  if (P.g.split) WarpSplitChannels(P, body + static_cast<uint64_t>(stream) * 16u, s.ch[0], s.ch[1], lane);
  uint32_t layer, kv, head;
  P.g.shape.Decompose(stream, &layer, &kv, &head);
  typename E::Storage* out_row =
      reinterpret_cast<typename E::Storage*>(view.Row(layer, kv, head, t));
  const uint8_t* codes_in = body + P.g.codes_offset + v * P.g.vector_code_bytes;
  const uint16_t* scalars = reinterpret_cast<const uint16_t*>(body + P.g.scalars_offset);
  for (uint32_t p = 0; p < P.g.num_parts; ++p) {
    const TqDevPart& part = P.parts[p];
    const uint32_t n = part.dim;
    const uint8_t* in = codes_in + part.code_offset;
    const uint16_t* sc = scalars + (v * P.g.num_parts + p) * (part.prod ? 2u : 1u);
    const float norm = HalfToFloat(sc[0]);
    for (uint32_t j = lane; j < n; j += 32) {
      s.z[j] = part.mse_bits > 0 ? part.centroids[TqCodeAt(in, j, part.mse_bits)] : 0.0f;
    }
    if (part.prod) {
      const float coef = __fmul_rn(part.qjl_scale, HalfToFloat(sc[1]));
      const uint8_t* signs = in + part.mse_bytes;
      for (uint32_t j = lane; j < n; j += 32) {
        float acc = 0.0f;
        for (uint32_t i = 0; i < n; ++i) {
          const float q = part.qjl[i * n + j];
          acc = ((signs[i / 8] >> (i % 8)) & 1u) ? __fadd_rn(acc, q) : __fsub_rn(acc, q);
        }
        s.z[j] = __fadd_rn(s.z[j], __fmul_rn(coef, acc));
      }
    }
    __syncwarp();
    WarpRotateInverse(part, s.z, s.tmp, lane);
    for (uint32_t j = lane; j < n; j += 32) {
      out_row[Channel(P, s, p, j)] = E::FromFloat(__fmul_rn(s.z[j], norm));
    }
    __syncwarp();
  }
}

// Kernels that need more than the default 48 KiB of dynamic shared memory must opt in.
template <typename K>
absl::Status AllowSmem(K kernel, size_t smem) {
  if (smem <= 48u * 1024u) return absl::OkStatus();
  return Cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   static_cast<int>(smem)),
              "cudaFuncSetAttribute");
}

}  // namespace

absl::Status TqEncodeOnDevice(const TqPlan& plan, const void* device_input, void* device_body) {
  KVTIER_ASSIGN_OR_RETURN(TqDevParams P, MakeDevParams(plan));
  uint8_t* body = static_cast<uint8_t*>(device_body);
  const uint64_t vectors = P.g.Vectors();
  if (vectors == 0) return absl::OkStatus();
  KVTIER_RETURN_IF_ERROR(Cuda(cudaMemsetAsync(body + P.g.scalars_offset, 0,
                                              P.g.codes_offset - P.g.scalars_offset, 0),
                              "memset"));
  absl::Status st = absl::OkStatus();
  DispatchElem(plan.dtype_code, [&](auto e) {
    using E = decltype(e);
    const auto* in = static_cast<const typename E::Storage*>(device_input);
    if (P.g.split) OutlierMaskKernel<E><<<P.g.shape.num_streams, 128>>>(P, in, body);
    const size_t smem = size_t{P.warp_smem} * P.warps;
    st.Update(AllowSmem(EncodeKernel<E>, smem));
    if (!st.ok()) return;
    const uint64_t blocks = (vectors + P.warps - 1) / P.warps;
    EncodeKernel<E><<<static_cast<unsigned>(blocks), 32 * P.warps, smem>>>(P, in, body);
  });
  KVTIER_RETURN_IF_ERROR(st);
  KVTIER_RETURN_IF_ERROR(Cuda(cudaGetLastError(), "encode launch"));
  return Cuda(cudaStreamSynchronize(0), "encode");
}

absl::Status TqDecodeOnDevice(const TqPlan& plan, const void* device_body,
                              const DecodeTarget& target) {
  KVTIER_ASSIGN_OR_RETURN(TqDevParams P, MakeDevParams(plan));
  const uint64_t vectors = P.g.Vectors();
  if (vectors == 0) return absl::OkStatus();
  // The target's layer table and block table are host arrays: move them for the kernel.
  const size_t nl = target.layer_base.size();
  const size_t nblocks =
      target.block_table ? (P.g.shape.tokens + target.block_size - 1) / target.block_size : 0;
  void* dmem = nullptr;
  KVTIER_RETURN_IF_ERROR(
      Cuda(cudaMallocAsync(&dmem, nl * sizeof(char*) + nblocks * 4 + 16, 0), "cudaMallocAsync"));
  char** d_bases = static_cast<char**>(dmem);
  int32_t* d_table = reinterpret_cast<int32_t*>(d_bases + nl);
  absl::Status st = Cuda(cudaMemcpyAsync(d_bases, target.layer_base.data(), nl * sizeof(char*),
                                         cudaMemcpyHostToDevice, 0),
                         "target upload");
  if (st.ok() && nblocks) {
    st.Update(Cuda(cudaMemcpyAsync(d_table, target.block_table, nblocks * 4,
                                   cudaMemcpyHostToDevice, 0),
                   "block table upload"));
  }
  TargetView view;
  view.layer_base = d_bases;
  view.stride_kv = target.stride_kv;
  view.stride_head = target.stride_head;
  view.stride_token = target.stride_token;
  view.block_table = nblocks ? d_table : nullptr;
  view.block_size = target.block_size;
  view.stride_block = target.stride_block;
  if (st.ok()) {
    DispatchElem(plan.dtype_code, [&](auto e) {
      using E = decltype(e);
      const size_t smem = size_t{P.warp_smem} * P.warps;
      st.Update(AllowSmem(DecodeKernel<E>, smem));
      if (!st.ok()) return;
      const uint64_t blocks = (vectors + P.warps - 1) / P.warps;
      DecodeKernel<E><<<static_cast<unsigned>(blocks), 32 * P.warps, smem>>>(
          P, static_cast<const uint8_t*>(device_body), view);
      st.Update(Cuda(cudaGetLastError(), "decode launch"));
    });
  }
  cudaFreeAsync(dmem, 0);
  KVTIER_RETURN_IF_ERROR(st);
  return Cuda(cudaStreamSynchronize(0), "decode");
}

}  // namespace kvtier::kernels::internal
