// CUDA kernels for token selection: attention column mass (SnapKV window scores, H2O column
// sums), 1-D pooling and per-(layer, KV head) top-k with the "lower position wins" tie rule.
//
// Attention runs in two passes over K per (layer, KV head), both tiled as
//   S[128 query rows][64 keys] = Q_chunk K_tile^T
// with tensor cores (mma.sync m16n8k16, fp32 accumulation, logits kept in registers) for
// fp16/bf16, and scalar fp32 FMA through a shared-memory logit tile for fp32. K tiles stream
// through cp.async buffers (fp16/bf16: a 4-deep ring per key half, see AttentionSync below):
//   pass 1 (RowStatsKernel): per query row the running max and sum of exp over its causal keys,
//          one partial per key split, merged by ReduceStatsKernel;
//   pass 2 (ColumnMassKernel): per key the sum over rows of exp(s - M) / Z, divided by the group
//          size (GQA mean); rows of one KV head are its n query heads' rows, contiguous in Q.
// Logits are kept in the log2 domain (exp2f) and the summation order differs from the CPU
// reference, so scores agree to about 1e-6 relative; selection then runs on those scores.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cuda_pipeline.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <tuple>
#include <string>
#include <type_traits>
#include <vector>

#include "kvtier/common/status.h"
#include "selection/selection_internal.h"
#include "selection/selection_timing.h"

namespace kvtier::kernels::internal {
namespace {

#define KVTIER_SEL_CUDA(expr)                                                         \
  do {                                                                                \
    cudaError_t e_ = (expr);                                                          \
    if (e_ != cudaSuccess) {                                                          \
      return absl::InternalError(std::string("selection (CUDA): ") + #expr + ": " +  \
                                 cudaGetErrorString(e_));                             \
    }                                                                                 \
  } while (0)

constexpr int kRows = 128;     // query rows per chunk
constexpr int kKeys = 64;      // keys per tile
constexpr int kThreads = 256;  // 8 warps; warp w owns rows 16w .. 16w + 15 of a chunk
constexpr int kSLd = kKeys + 4;
constexpr float kLog2e = 1.4426950408889634f;
// (layer, KV head) pairs per attention launch; 0 = all at once (see ColumnMassOnDevice).
constexpr uint32_t kDefaultLhPerLaunch = 0;

// Stream-ordered device allocation, freed on scope exit (on the same stream).
class Scratch {
 public:
  explicit Scratch(cudaStream_t s) : stream_(s) {}
  ~Scratch() {
    for (void* p : ptrs_) cudaFreeAsync(p, stream_);
  }
  template <typename T>
  absl::StatusOr<T*> Get(size_t count) {
    void* p = nullptr;
    KVTIER_SEL_CUDA(cudaMallocAsync(&p, std::max<size_t>(count, 1) * sizeof(T), stream_));
    ptrs_.push_back(p);
    return static_cast<T*>(p);
  }

 private:
  cudaStream_t stream_;
  std::vector<void*> ptrs_;
};

struct AttnParams {
  const void* q;
  const void* k;
  uint32_t num_kv_heads, num_query_heads, head_dim, num_tokens, num_queries, group;
  uint32_t rows;        // query rows per KV head = group * num_queries
  uint32_t row_chunks;  // ceil(rows / kRows)
  uint32_t q_pos0;      // position of query row 0 (T - num_queries)
  float scale_log2;     // log2(e) / sqrt(D)
  uint32_t stats_splits, stats_tiles_per_split;
  uint32_t num_columns, mass_tiles_per_split;
  float2* partial;  // [LH][row_chunks * kRows][stats_splits] (max, sum) in the log2 domain
  float2* stats;    // [LH][row_chunks * kRows] (max, 1 / sum)
  float* scores;    // [LH][num_columns]
  uint32_t lh_base; // first (layer, KV head) of this launch
};

template <int D>
struct Ld {
  static constexpr int kValue = D + 8;  // padding against shared-memory bank conflicts
};

// Shared memory of the attention kernels: Q chunk, two K tiles (double buffer), the logit
// tile, per-row state, a column reduction buffer and per-thread (max, sum) for row merges.
template <typename T, int D>
struct Smem {
  static constexpr size_t kQ = size_t(kRows) * Ld<D>::kValue * sizeof(T);
  static constexpr size_t kK = size_t(kKeys) * Ld<D>::kValue * sizeof(T);
  static constexpr size_t kS = size_t(kRows) * kSLd * 4;
  static constexpr size_t kBytes = kQ + 2 * kK + kS + kRows * 4 * 3 + kKeys * 4 * 4 + kThreads * 8;
  T* qs;
  T* ks0;  // K tile buffer 0; buffer 1 follows (Ks(b) avoids a dynamically indexed array)
  float* s;
  float* row_a;
  float* row_b;
  int* row_pos;
  float* red;
  float* thread_m;
  float* thread_z;
  __device__ explicit Smem(unsigned char* base) {
    qs = reinterpret_cast<T*>(base);
    ks0 = reinterpret_cast<T*>(base + kQ);
    s = reinterpret_cast<float*>(base + kQ + 2 * kK);
    row_a = s + kRows * kSLd;
    row_b = row_a + kRows;
    row_pos = reinterpret_cast<int*>(row_b + kRows);
    red = reinterpret_cast<float*>(row_pos + kRows);
    thread_m = red + 4 * kKeys;
    thread_z = thread_m + kThreads;
  }
  __device__ T* Ks(int b) const { return ks0 + b * (kK / sizeof(T)); }
};

template <typename T, int D>
__device__ void LoadRows(T* sh, const T* g, int valid_rows, int num_rows) {
  constexpr int kVec = 16 / sizeof(T);
  constexpr int kPerRow = D / kVec;
  for (int i = threadIdx.x; i < num_rows * kPerRow; i += blockDim.x) {
    const int r = i / kPerRow, c = (i % kPerRow) * kVec;
    int4 v = make_int4(0, 0, 0, 0);
    if (r < valid_rows) v = *reinterpret_cast<const int4*>(g + size_t(r) * D + c);
    *reinterpret_cast<int4*>(sh + r * Ld<D>::kValue + c) = v;
  }
}

// Asynchronous (cp.async) version of LoadRows; rows past `valid_rows` are zeroed directly.
// Callers commit with __pipeline_commit() and wait with __pipeline_wait_prior().
template <typename T, int D>
__device__ void LoadRowsAsync(T* sh, const T* g, int valid_rows, int num_rows) {
  constexpr int kVec = 16 / sizeof(T);
  constexpr int kPerRow = D / kVec;
  for (int i = threadIdx.x; i < num_rows * kPerRow; i += blockDim.x) {
    const int r = i / kPerRow, c = (i % kPerRow) * kVec;
    if (r < valid_rows) {
      __pipeline_memcpy_async(sh + r * Ld<D>::kValue + c, g + size_t(r) * D + c, 16);
    } else {
      *reinterpret_cast<int4*>(sh + r * Ld<D>::kValue + c) = make_int4(0, 0, 0, 0);
    }
  }
}

// fp32 (scalar) path: S[r][c] = q_r . k_c for the chunk's 128 rows and the tile's 64 keys,
// written to shared memory.
template <int D>
__device__ void TileLogitsScalar(const float* qs, const float* ks, float* s) {
  constexpr int kLd = Ld<D>::kValue;
  for (int i = threadIdx.x; i < kRows * kKeys; i += blockDim.x) {
    const int r = i / kKeys, c = i % kKeys;
    const float* q = qs + r * kLd;
    const float* k = ks + c * kLd;
    float acc = 0.0f;
#pragma unroll 16
    for (int d = 0; d < D; ++d) acc = fmaf(q[d], k[d], acc);
    s[r * kSLd + c] = acc;
  }
}

// Highest position among rows [row0, row0 + valid) (rows cycle through the window per head).
__device__ __forceinline__ int ChunkMaxPos(const AttnParams& p, uint32_t row0, int valid) {
  const uint32_t first = row0 % p.num_queries;
  const uint32_t last = first + valid - 1 >= p.num_queries ? p.num_queries - 1 : first + valid - 1;
  return int(p.q_pos0 + last);
}

// fp32 inputs. grid (stats_splits, row_chunks, lh in this launch). Thread t owns row t / 2, columns 32 (t % 2) ..
// 32 (t % 2) + 31 of each tile, and keeps that half-row's running (max, sum) in registers.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 2) RowStatsKernel(AttnParams p) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  Smem<T, D> sm(smem_raw);
  const uint32_t lh = p.lh_base + blockIdx.z, chunk = blockIdx.y, split = blockIdx.x;
  const uint32_t l = lh / p.num_kv_heads, h = lh % p.num_kv_heads;
  const uint32_t row0 = chunk * kRows;
  const int valid = min(kRows, int(p.rows - row0));
  const T* qbase = static_cast<const T*>(p.q) +
                   ((size_t(l) * p.num_query_heads + h * p.group) * p.num_queries + row0) * D;
  const int max_pos = ChunkMaxPos(p, row0, valid);
  const T* kbase = static_cast<const T*>(p.k) + size_t(lh) * p.num_tokens * D;
  const uint32_t total_tiles = (p.num_tokens + kKeys - 1) / kKeys;
  const uint32_t tile_begin = split * p.stats_tiles_per_split;
  uint32_t tile_end = min(total_tiles, tile_begin + p.stats_tiles_per_split);
  tile_end = min(tile_end, uint32_t(max_pos / kKeys) + 1);  // later tiles are all in the future
  auto prefetch = [&](uint32_t tile, int buf) {
    const int t0 = int(tile * kKeys);
    LoadRowsAsync<T, D>(sm.Ks(buf), kbase + size_t(t0) * D, min(kKeys, int(p.num_tokens) - t0),
                        kKeys);
    __pipeline_commit();
  };
  if (tile_begin < tile_end) prefetch(tile_begin, 0);
  LoadRows<T, D>(sm.qs, qbase, valid, kRows);
  const int my_row = threadIdx.x / 2, half = threadIdx.x % 2;
  const int my_pos = my_row < valid ? int(p.q_pos0 + (row0 + my_row) % p.num_queries) : -1;
  const int stagger = (5 * (my_row % 16) + 16 * half) & 31;  // conflict-free smem reads
  float m = -INFINITY, z = 0.0f;
  __syncthreads();
  for (uint32_t tile = tile_begin; tile < tile_end; ++tile) {
    const int buf = int(tile - tile_begin) & 1;
    if (tile + 1 < tile_end) {
      prefetch(tile + 1, buf ^ 1);
      __pipeline_wait_prior(1);
    } else {
      __pipeline_wait_prior(0);
    }
    __syncthreads();  // tile `buf` landed for every thread; last tile's S readers are done
    TileLogitsScalar<D>(sm.qs, sm.Ks(buf), sm.s);
    __syncthreads();
    const int t0 = int(tile * kKeys) + 32 * half;
    const int visible = min(32, my_pos - t0 + 1);  // columns t0 .. t0 + visible - 1
    if (visible > 0) {
      const float* srow = sm.s + my_row * kSLd + 32 * half;
      float mx = -INFINITY;
      if (visible == 32) {
#pragma unroll 8
        for (int j = 0; j < 32; ++j) mx = fmaxf(mx, srow[(j + stagger) & 31]);
      } else {
        for (int j = 0; j < visible; ++j) mx = fmaxf(mx, srow[j]);
      }
      const float m_new = fmaxf(m, mx * p.scale_log2);
      float e = 0.0f;
      if (visible == 32) {
#pragma unroll 8
        for (int j = 0; j < 32; ++j) e += exp2f(fmaf(srow[(j + stagger) & 31], p.scale_log2, -m_new));
      } else {
        for (int j = 0; j < visible; ++j) e += exp2f(fmaf(srow[j], p.scale_log2, -m_new));
      }
      z = z * exp2f(m - m_new) + e;
      m = m_new;
    }
  }
  sm.thread_m[threadIdx.x] = m;
  sm.thread_z[threadIdx.x] = z;
  __syncthreads();
  const size_t rows_pad = size_t(p.row_chunks) * kRows;
  for (int i = threadIdx.x; i < kRows; i += blockDim.x) {
    const float m0 = sm.thread_m[2 * i], m1 = sm.thread_m[2 * i + 1];
    const float mm = fmaxf(m0, m1);
    float zz = 0.0f;
    if (mm != -INFINITY) {
      zz = sm.thread_z[2 * i] * exp2f(m0 - mm) + sm.thread_z[2 * i + 1] * exp2f(m1 - mm);
    }
    p.partial[(size_t(lh) * rows_pad + row0 + i) * p.stats_splits + split] = make_float2(mm, zz);
  }
}

// Rows [first_row, first_row + num_rows) of the flattened [LH][rows_pad] row space.
__global__ void ReduceStatsKernel(AttnParams p, size_t first_row, uint32_t num_rows) {
  if (blockIdx.x * blockDim.x + threadIdx.x >= num_rows) return;
  const size_t i = first_row + blockIdx.x * blockDim.x + threadIdx.x;
  const float2* part = p.partial + size_t(i) * p.stats_splits;
  float m = -INFINITY;
  for (uint32_t j = 0; j < p.stats_splits; ++j) m = fmaxf(m, part[j].x);
  float z = 0.0f;
  if (m != -INFINITY) {
    for (uint32_t j = 0; j < p.stats_splits; ++j) {
      if (part[j].x != -INFINITY) z += part[j].y * exp2f(part[j].x - m);
    }
  }
  p.stats[i] = make_float2(m, z > 0.0f ? 1.0f / z : 0.0f);
}

// fp32 inputs. grid (mass_splits, lh in this launch). Thread t sums column t % 64 over rows 32 (t / 64) .. + 31.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 2) ColumnMassKernel(AttnParams p) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  Smem<T, D> sm(smem_raw);
  float* row_m = sm.row_a;
  float* row_inv_z = sm.row_b;
  const uint32_t lh = p.lh_base + blockIdx.y, split = blockIdx.x;
  const uint32_t l = lh / p.num_kv_heads, h = lh % p.num_kv_heads;
  const size_t rows_pad = size_t(p.row_chunks) * kRows;
  const T* qhead =
      static_cast<const T*>(p.q) + (size_t(l) * p.num_query_heads + h * p.group) * p.num_queries * D;
  const T* kbase = static_cast<const T*>(p.k) + size_t(lh) * p.num_tokens * D;
  const uint32_t col_tiles = (p.num_columns + kKeys - 1) / kKeys;
  const uint32_t tile_begin = split * p.mass_tiles_per_split;
  const uint32_t tile_end = min(col_tiles, tile_begin + p.mass_tiles_per_split);
  const int c = threadIdx.x % kKeys, quarter = threadIdx.x / kKeys;
  const float inv_group = 1.0f / float(p.group);

  auto load_chunk = [&](uint32_t chunk) {  // caller synchronizes before and after
    const uint32_t row0 = chunk * kRows;
    const int valid = min(kRows, int(p.rows - row0));
    LoadRows<T, D>(sm.qs, qhead + size_t(row0) * D, valid, kRows);
    for (int i = threadIdx.x; i < kRows; i += blockDim.x) {
      const float2 st = p.stats[size_t(lh) * rows_pad + row0 + i];
      row_m[i] = st.x;
      row_inv_z[i] = st.y;
      sm.row_pos[i] = i < valid ? int(p.q_pos0 + (row0 + i) % p.num_queries) : -1;
    }
  };
  auto prefetch = [&](uint32_t tile, int buf) {
    const int t0 = int(tile * kKeys);
    LoadRowsAsync<T, D>(sm.Ks(buf), kbase + size_t(t0) * D, min(kKeys, int(p.num_tokens) - t0),
                        kKeys);
    __pipeline_commit();
  };
  if (tile_begin < tile_end) prefetch(tile_begin, 0);
  if (p.row_chunks == 1) {
    load_chunk(0);
    __syncthreads();
  }

  for (uint32_t tile = tile_begin; tile < tile_end; ++tile) {
    const int buf = int(tile - tile_begin) & 1;
    const int t0 = int(tile * kKeys);
    if (tile + 1 < tile_end) {
      prefetch(tile + 1, buf ^ 1);
      __pipeline_wait_prior(1);
    } else {
      __pipeline_wait_prior(0);
    }
    __syncthreads();
    float acc = 0.0f;
    for (uint32_t chunk = 0; chunk < p.row_chunks; ++chunk) {
      const uint32_t row0 = chunk * kRows;
      const int valid = min(kRows, int(p.rows - row0));
      if (t0 > ChunkMaxPos(p, row0, valid)) continue;  // the whole tile is in these rows' future
      if (p.row_chunks > 1) {
        __syncthreads();
        load_chunk(chunk);
        __syncthreads();
      }
      TileLogitsScalar<D>(sm.qs, sm.Ks(buf), sm.s);
      __syncthreads();
      const int t = t0 + c;
#pragma unroll 8
      for (int r = quarter * 32; r < quarter * 32 + 32; ++r) {
        if (t <= sm.row_pos[r]) {
          acc += exp2f(fmaf(sm.s[r * kSLd + c], p.scale_log2, -row_m[r])) * row_inv_z[r];
        }
      }
      __syncthreads();  // S and (multi-chunk) Q are rewritten next
    }
    sm.red[quarter * kKeys + c] = acc;
    __syncthreads();
    if (quarter == 0 && t0 + c < int(p.num_columns)) {
      const float total = sm.red[c] + sm.red[kKeys + c] + sm.red[2 * kKeys + c] + sm.red[3 * kKeys + c];
      p.scores[size_t(lh) * p.num_columns + t0 + c] = total * inv_group;
    }
  }
}

// ---- fp16 / bf16: mma.sync m16n8k16 with the logits kept in registers. ----
// K is the A operand (16 keys per m-tile, fragments by ldmatrix from shared memory) and Q the B
// operand (8 query rows per n-tile, fragments in registers for the whole key loop), so that a
// thread's accumulators cover few keys and many rows: the column sums of pass 2 then reduce
// mostly inside the thread (2 shuffles per key instead of 3 per key and row slot).
// Warp w of a block owns query rows 32 (w % 4) .. + 31 of the chunk and keys 32 (w / 4) .. + 31
// of each 64-key tile; in the PTX ISA's m16n8k16 accumulator layout a thread holds keys
// 16 mt + g + {0, 8} (g = lane / 4, mt = 0, 1) and rows 8 nt + 2 (lane % 4) + {0, 1} (nt = 0..3).
// K tiles stream through a kStages-deep cp.async ring per key half (32 keys x D each) so that
// several tiles are in flight while the tensor cores work on an earlier one.
//
// Synchronisation (AttentionSync): the four warps of a key half share nothing with the other
// half inside the key loop except the block's Q, so each half can advance through its own ring
// behind its own named barrier (kHalfSync: bar.sync 1 + half, 128 threads). Warps of the two
// halves that share a scheduler (warp w and w + 4) then drift apart and one's exp work overlaps
// the other's tensor-core work; with kBlockSync both halves step together behind __syncthreads.
constexpr int kStages = 4;
constexpr int kHalfKeys = kKeys / 2;
constexpr int kHalfThreads = kThreads / 2;
constexpr int kBlockSync = 1;
constexpr int kHalfSync = 2;
constexpr int kDefaultAttentionSync = kHalfSync;
int g_attention_sync = kDefaultAttentionSync;

template <bool kHalves>
__device__ __forceinline__ void KeyHalfSync(int half) {
  if constexpr (kHalves) {
    // A register barrier id makes ptxas reserve all 16 named barriers (harmless: they are per
    // block); two constant-id branches cost pass 2 a register spill.
    asm volatile("bar.sync %0, %1;\n" ::"r"(half + 1), "n"(kHalfThreads) : "memory");
  } else {
    __syncthreads();
  }
}

template <typename T>
struct MmaOp;
template <>
struct MmaOp<__half> {
  __device__ __forceinline__ static void Run(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};
template <>
struct MmaOp<__nv_bfloat16> {
  __device__ __forceinline__ static void Run(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* smem_ptr) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(smem_ptr));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");
}

template <typename T, int D>
struct MmaSmem {
  static constexpr size_t kQ = size_t(kRows) * Ld<D>::kValue * sizeof(T);
  static constexpr size_t kHalfTile = size_t(kHalfKeys) * Ld<D>::kValue * sizeof(T);
  static constexpr size_t kRed = size_t(2) * 2 * 4 * kHalfKeys * 4;
  static constexpr size_t kBytes = kQ + 2 * kStages * kHalfTile + kRed + 2 * 2 * kRows * 4;
  T* qs;
  T* ks0;
  float* red;      // [2 key halves][2 tile parities][4 row groups][32 keys]
  float* merge_m;  // [2 key halves][128 rows]
  float* merge_z;
  __device__ explicit MmaSmem(unsigned char* base) {
    qs = reinterpret_cast<T*>(base);
    ks0 = reinterpret_cast<T*>(base + kQ);
    red = reinterpret_cast<float*>(base + kQ + 2 * kStages * kHalfTile);
    merge_m = red + kRed / 4;
    merge_z = merge_m + 2 * kRows;
  }
  // Ring slot `stage` of key half `half`: 32 keys x D.
  __device__ T* Ks(int half, int stage) const {
    return ks0 + (half * kStages + stage) * (kHalfTile / sizeof(T));
  }
  __device__ float* Red(int half, int parity) const { return red + (half * 2 + parity) * 4 * kHalfKeys; }
};

// cp.async of one key half of a tile (32 rows of D) by the half's 128 threads (`tid` 0..127);
// rows past `valid_rows` (which may be <= 0) are zeroed. The caller commits.
template <typename T, int D>
__device__ __forceinline__ void LoadHalfTileAsync(T* sh, const T* g, int valid_rows, int tid) {
  constexpr int kVec = 16 / sizeof(T);
  constexpr int kPerRow = D / kVec;
#pragma unroll
  for (int i = tid; i < kHalfKeys * kPerRow; i += kHalfThreads) {
    const int r = i / kPerRow, c = (i % kPerRow) * kVec;
    if (r < valid_rows) {
      __pipeline_memcpy_async(sh + r * Ld<D>::kValue + c, g + size_t(r) * D + c, 16);
    } else {
      *reinterpret_cast<int4*>(sh + r * Ld<D>::kValue + c) = make_int4(0, 0, 0, 0);
    }
  }
}

// Key half `half`'s 32 keys of tile `tile_begin + rel` into its ring slot, if that tile is
// before `tile_end`; commits a cp.async group either way (the ring's waits count groups).
template <typename T, int D>
__device__ __forceinline__ void PrefetchHalfTile(const MmaSmem<T, D>& sm, const T* kbase,
                                                 uint32_t num_tokens, uint32_t tile_begin,
                                                 uint32_t tile_end, uint32_t rel, int half,
                                                 int tid) {
  const uint32_t tile = tile_begin + rel;
  if (tile < tile_end) {
    const int k0 = int(tile * kKeys) + half * kHalfKeys;
    LoadHalfTileAsync<T, D>(sm.Ks(half, int(rel % kStages)), kbase + size_t(k0) * D,
                            int(num_tokens) - k0, tid);
  }
  __pipeline_commit();
}

// B fragments of the warp's 32 query rows: b[nt][k] = rows 8 nt + g, dims 16 k + 2 tig (+8).
template <typename T, int D>
struct WarpQ {
  uint32_t b[4][D / 16][2];
  __device__ void Load(const T* qs, int row_group) {
    const int lane = threadIdx.x % 32, g = lane >> 2, tig = lane & 3;
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
      for (int k = 0; k < D / 16; ++k) {
        const T* p = qs + (row_group * 32 + nt * 8 + g) * Ld<D>::kValue + k * 16 + tig * 2;
        b[nt][k][0] = *reinterpret_cast<const uint32_t*>(p);
        b[nt][k][1] = *reinterpret_cast<const uint32_t*>(p + 8);
      }
    }
  }
};

// acc[mt][nt][i]: key 32 kh + 16 mt + g + 8 (i / 2), row 32 rg + 8 nt + 2 tig + (i % 2).
template <typename T, int D>
__device__ __forceinline__ void WarpLogits(const WarpQ<T, D>& q, const T* ks, int key_half,
                                           float (&acc)[2][4][4]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;
  // ldmatrix.x4 row addresses: lanes 0-7 keys 0-7 / dims 0-7, 8-15 keys 8-15 / dims 0-7,
  // 16-23 keys 0-7 / dims 8-15, 24-31 keys 8-15 / dims 8-15: the A fragment's four registers.
  const T* base =
      ks + (key_half * 32 + (lane & 7) + ((lane >> 3) & 1) * 8) * Ld<D>::kValue + (lane >> 4) * 8;
#pragma unroll
  for (int k = 0; k < D / 16; ++k) {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      uint32_t a[4];
      LdMatrixX4(a, base + mt * 16 * Ld<D>::kValue + k * 16);
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) MmaOp<T>::Run(acc[mt][nt], a, q.b[nt][k][0], q.b[nt][k][1]);
    }
  }
}

// 2^x by the special-function unit alone (ex2.approx: about 2 ulp, results below 2^-126 flushed
// to zero); exp2f adds range fix-ups around it that cost issue slots on the per-logit path.
__device__ __forceinline__ float FastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Merges two (max, sum) states of one row, both in the log2 domain.
__device__ __forceinline__ void MergeState(float& m, float& z, float mo, float zo) {
  const float mm = fmaxf(m, mo);
  if (mm == -INFINITY) return;
  z = z * exp2f(m - mm) + zo * exp2f(mo - mm);
  m = mm;
}

// Position of row r of the chunk starting at row0, or -1 past the valid rows.
__device__ __forceinline__ int RowPos(const AttnParams& p, uint32_t row0, int r, int valid) {
  return r < valid ? int(p.q_pos0 + (row0 + r) % p.num_queries) : -1;
}

// One tile's contribution to the thread's 8 row states. kFull: every (key, row) is visible.
template <bool kFull>
__device__ __forceinline__ void RowStatsTile(const AttnParams& p, const float (&acc)[2][4][4],
                                             int tkey, const int (&pos)[8], float (&m)[8],
                                             float (&z)[8]) {
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int nt = j >> 1, e = j & 1;
    float mx = -INFINITY;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh)
        if (kFull || tkey + 16 * mt + 8 * hh <= pos[j]) mx = fmaxf(mx, acc[mt][nt][2 * hh + e]);
    if (!kFull && mx == -INFINITY) continue;
    mx *= p.scale_log2;
    if (mx > m[j]) {  // rare after the first tiles: rescale the sum only when the max grows
      z[j] *= FastExp2(m[j] - mx);
      m[j] = mx;
    }
    float sum = 0.0f;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh)
        if (kFull || tkey + 16 * mt + 8 * hh <= pos[j])
          sum += FastExp2(fmaf(acc[mt][nt][2 * hh + e], p.scale_log2, -m[j]));
    z[j] += sum;
  }
}

// grid (stats_splits, row_chunks, lh in this launch)
template <typename T, int D, bool kHalves>
__global__ void __launch_bounds__(kThreads, 2) RowStatsMmaKernel(AttnParams p) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  MmaSmem<T, D> sm(smem_raw);
  const uint32_t lh = p.lh_base + blockIdx.z, chunk = blockIdx.y, split = blockIdx.x;
  const uint32_t l = lh / p.num_kv_heads, h = lh % p.num_kv_heads;
  const uint32_t row0 = chunk * kRows;
  const int valid = min(kRows, int(p.rows - row0));
  const T* qbase = static_cast<const T*>(p.q) +
                   ((size_t(l) * p.num_query_heads + h * p.group) * p.num_queries + row0) * D;
  const int max_pos = ChunkMaxPos(p, row0, valid);
  const T* kbase = static_cast<const T*>(p.k) + size_t(lh) * p.num_tokens * D;
  const uint32_t total_tiles = (p.num_tokens + kKeys - 1) / kKeys;
  const uint32_t tile_begin = split * p.stats_tiles_per_split;
  uint32_t tile_end = min(total_tiles, tile_begin + p.stats_tiles_per_split);
  tile_end = min(tile_end, uint32_t(max_pos / kKeys) + 1);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, tig = lane & 3;
  const int row_group = warp % 4, key_half = warp / 4, htid = threadIdx.x % kHalfThreads;
  auto prefetch = [&](uint32_t rel) {
    PrefetchHalfTile<T, D>(sm, kbase, p.num_tokens, tile_begin, tile_end, rel, key_half, htid);
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) prefetch(s);
  LoadRows<T, D>(sm.qs, qbase, valid, kRows);
  float m[8], z[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    m[j] = -INFINITY;
    z[j] = 0.0f;
  }
  // Tiles whose keys all lie at or before the first window position are visible to every row.
  const int full_limit = valid == kRows ? int(p.q_pos0) : -1;
  __syncthreads();
  WarpQ<T, D> wq;
  wq.Load(sm.qs, row_group);
  for (uint32_t rel = 0; tile_begin + rel < tile_end; ++rel) {
    __pipeline_wait_prior(kStages - 2);
    KeyHalfSync<kHalves>(key_half);  // tile landed for the half; slot refilled next is free
    prefetch(rel + kStages - 1);
    const uint32_t tile = tile_begin + rel;
    float acc[2][4][4];
    WarpLogits<T, D>(wq, sm.Ks(key_half, int(rel % kStages)), 0, acc);
    const int t0 = int(tile * kKeys);
    const int tkey = t0 + key_half * kHalfKeys + g;
    if (t0 + kKeys - 1 <= full_limit) {
      const int no_pos[8] = {};
      RowStatsTile<true>(p, acc, tkey, no_pos, m, z);
    } else {  // the last tiles only: row positions recomputed here to spare registers
      int pos[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        pos[j] = RowPos(p, row0, row_group * 32 + (j >> 1) * 8 + tig * 2 + (j & 1), valid);
      }
      RowStatsTile<false>(p, acc, tkey, pos, m, z);
    }
  }
  __pipeline_wait_prior(0);
  // Merge the 8 lanes holding the same rows (equal tig), then the two key halves.
#pragma unroll
  for (int j = 0; j < 8; ++j) {
#pragma unroll
    for (int o = 4; o <= 16; o <<= 1) {
      const float mo = __shfl_xor_sync(0xffffffffu, m[j], o);
      const float zo = __shfl_xor_sync(0xffffffffu, z[j], o);
      MergeState(m[j], z[j], mo, zo);
    }
    if (g == 0) {
      const int r = row_group * 32 + (j >> 1) * 8 + tig * 2 + (j & 1);
      sm.merge_m[key_half * kRows + r] = m[j];
      sm.merge_z[key_half * kRows + r] = z[j];
    }
  }
  __syncthreads();
  const size_t rows_pad = size_t(p.row_chunks) * kRows;
  for (int r = threadIdx.x; r < kRows; r += blockDim.x) {
    float mm = sm.merge_m[r], zz = sm.merge_z[r];
    MergeState(mm, zz, sm.merge_m[kRows + r], sm.merge_z[kRows + r]);
    p.partial[(size_t(lh) * rows_pad + row0 + r) * p.stats_splits + split] = make_float2(mm, zz);
  }
}

// One tile's column sums for the thread's 4 keys over its 8 rows; row_c = m + log2(sum), so
// exp2(s - row_c) = exp2(s - m) / sum.
template <bool kFull>
__device__ __forceinline__ void ColumnTile(const AttnParams& p, const float (&acc)[2][4][4],
                                           int tkey, const int (&pos)[8], const float (&row_c)[8],
                                           float (&col)[2][2]) {
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int nt = j >> 1, e = j & 1;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh)
        if (kFull || tkey + 16 * mt + 8 * hh <= pos[j])
          col[mt][hh] += FastExp2(fmaf(acc[mt][nt][2 * hh + e], p.scale_log2, -row_c[j]));
  }
}

// grid (mass_splits, lh in this launch)
template <typename T, int D, bool kHalves>
__global__ void __launch_bounds__(kThreads, 2) ColumnMassMmaKernel(AttnParams p) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  MmaSmem<T, D> sm(smem_raw);
  const uint32_t lh = p.lh_base + blockIdx.y, split = blockIdx.x;
  const uint32_t l = lh / p.num_kv_heads, h = lh % p.num_kv_heads;
  const size_t rows_pad = size_t(p.row_chunks) * kRows;
  const T* qhead =
      static_cast<const T*>(p.q) + (size_t(l) * p.num_query_heads + h * p.group) * p.num_queries * D;
  const T* kbase = static_cast<const T*>(p.k) + size_t(lh) * p.num_tokens * D;
  const uint32_t col_tiles = (p.num_columns + kKeys - 1) / kKeys;
  const uint32_t tile_begin = split * p.mass_tiles_per_split;
  const uint32_t tile_end = min(col_tiles, tile_begin + p.mass_tiles_per_split);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, tig = lane & 3;
  const int row_group = warp % 4, key_half = warp / 4, htid = threadIdx.x % kHalfThreads;
  const float inv_group = 1.0f / float(p.group);
  WarpQ<T, D> wq;
  float row_c[8];
  int full_limit = -1;
  uint32_t cur_row0 = 0;  // the chunk whose rows are in registers
  int cur_valid = 0;

  auto load_chunk = [&](uint32_t chunk) {  // Q into shared memory; caller syncs before and after
    const uint32_t row0 = chunk * kRows;
    LoadRows<T, D>(sm.qs, qhead + size_t(row0) * D, min(kRows, int(p.rows - row0)), kRows);
  };
  auto chunk_registers = [&](uint32_t chunk) {  // after the sync that follows load_chunk
    const uint32_t row0 = chunk * kRows;
    const int valid = min(kRows, int(p.rows - row0));
    wq.Load(sm.qs, row_group);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int r = row_group * 32 + (j >> 1) * 8 + tig * 2 + (j & 1);
      const float2 st = p.stats[size_t(lh) * rows_pad + row0 + r];
      row_c[j] = st.y > 0.0f ? st.x - log2f(st.y) : INFINITY;  // st = (max, 1 / sum)
    }
    full_limit = valid == kRows ? int(p.q_pos0) : -1;
    cur_row0 = row0;
    cur_valid = valid;
  };
  auto prefetch = [&](uint32_t rel) {
    PrefetchHalfTile<T, D>(sm, kbase, p.num_tokens, tile_begin, tile_end, rel, key_half, htid);
  };
  // Column sums of tile `rel` for this half's 32 keys (one thread per key, htid < 32), summed
  // over the 4 row groups in a fixed order; red slot (rel & 1) was filled before a half barrier.
  auto emit = [&](uint32_t rel) {
    const int t = int((tile_begin + rel) * kKeys) + key_half * kHalfKeys + htid;
    if (t < int(p.num_columns)) {
      const float* r = sm.Red(key_half, int(rel & 1)) + htid;
      const float total = r[0] + r[kHalfKeys] + r[2 * kHalfKeys] + r[3 * kHalfKeys];
      p.scores[size_t(lh) * p.num_columns + t] = total * inv_group;
    }
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) prefetch(s);
  if (p.row_chunks == 1) {
    load_chunk(0);
    __syncthreads();
    chunk_registers(0);
  }
  const uint32_t num_rel = tile_end > tile_begin ? tile_end - tile_begin : 0;
  const int chunk0_max_pos = ChunkMaxPos(p, 0, min(kRows, int(p.rows)));
  for (uint32_t rel = 0; rel < num_rel; ++rel) {
    __pipeline_wait_prior(kStages - 2);
    // Tile landed for the half; the slot refilled next and red slot (rel & 1) are free; the
    // previous tile's partial sums are complete.
    KeyHalfSync<kHalves>(key_half);
    if (rel > 0 && htid < kHalfKeys) emit(rel - 1);
    prefetch(rel + kStages - 1);
    const int t0 = int((tile_begin + rel) * kKeys);
    const T* ks = sm.Ks(key_half, int(rel % kStages));
    float col[2][2] = {{0, 0}, {0, 0}};
    const int tkey = t0 + key_half * kHalfKeys + g;
    for (uint32_t chunk = 0; chunk < p.row_chunks; ++chunk) {
      const uint32_t row0 = chunk * kRows;
      const int chunk_max_pos =
          chunk == 0 ? chunk0_max_pos : ChunkMaxPos(p, row0, min(kRows, int(p.rows - row0)));
      if (t0 > chunk_max_pos) continue;  // the whole tile is in these rows' future
      if (p.row_chunks > 1) {  // both halves take this path for the same (tile, chunk)
        __syncthreads();
        load_chunk(chunk);
        __syncthreads();
        chunk_registers(chunk);
      }
      float acc[2][4][4];
      WarpLogits<T, D>(wq, ks, 0, acc);
      if (t0 + kKeys - 1 <= full_limit) {
        const int no_pos[8] = {};
        ColumnTile<true>(p, acc, tkey, no_pos, row_c, col);
      } else {  // causal or ragged tiles only: row positions recomputed here to spare registers
        int pos[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          pos[j] = RowPos(p, cur_row0, row_group * 32 + (j >> 1) * 8 + tig * 2 + (j & 1),
                          cur_valid);
        }
        ColumnTile<false>(p, acc, tkey, pos, row_c, col);
      }
    }
    // Sum over the quad's row slots (lanes with equal g), then (emit) over the 4 row groups.
    float* red = sm.Red(key_half, int(rel & 1));
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        float v = col[mt][hh];
        v += __shfl_xor_sync(0xffffffffu, v, 1);
        v += __shfl_xor_sync(0xffffffffu, v, 2);
        if (tig == 0) red[row_group * kHalfKeys + mt * 16 + hh * 8 + g] = v;
      }
    }
  }
  __pipeline_wait_prior(0);
  KeyHalfSync<kHalves>(key_half);
  if (num_rel > 0 && htid < kHalfKeys) emit(num_rel - 1);
}

// Scores of a KV head's group of query heads -> their mean (the CPU reference's order, in double).
__global__ void GroupMeanKernel(const float* in, float* out, uint32_t num_kv_heads, uint32_t group,
                                uint32_t num_tokens, size_t total) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const size_t t = i % num_tokens, lh = i / num_tokens;
  const size_t l = lh / num_kv_heads, h = lh % num_kv_heads;
  double sum = 0;
  for (uint32_t g = 0; g < group; ++g) {
    sum += in[((l * num_kv_heads * group) + h * group + g) * num_tokens + t];
  }
  out[i] = static_cast<float>(sum / group);
}

struct TopKParams {
  const float* scores;      // [LH][stride]
  size_t stride;
  uint32_t num_scored;      // top-k over [0, num_scored)
  uint32_t num_tokens;      // positions [num_scored, T) are always kept
  uint32_t num_kv_heads;
  const uint32_t* caps;     // [L]
  const size_t* out_offset; // [LH]
  uint32_t* out;            // positions
  uint32_t lh_base;         // first (layer, KV head) of this launch
  uint32_t* keys;           // scratch [LH][num_scored]
  int pooling;              // 0 max, 1 avg
  int kernel;
};

__device__ __forceinline__ uint32_t OrderedKey(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

constexpr int kTopKThreads = 1024;
constexpr int kTopKWarps = kTopKThreads / 32;
// Scored positions up to this many keep their keys in shared memory (160 KiB), longer ones in
// the global scratch.
constexpr int kTopKSmemKeys = 40960;
// Copies of the radix histogram: lane l adds into copy l % 8, so lanes whose keys share a bin
// (scores crowd into few exponent bins) collide at most 4 to a word; the copies' stride of 257
// words puts a bin's 8 copies in 8 different banks.
constexpr int kHistCopies = 8;
constexpr int kHistStride = 257;

// One block per (layer, KV head): pooling, radix select of the cap-th largest key (8 bits per
// round), then an ascending compaction that keeps every larger key and the lowest-positioned
// equal keys. The compaction gives warp w a contiguous range of positions and works through it
// 32 at a time with ballots, so it needs one block-wide exchange of per-warp counts in all.
__global__ void __launch_bounds__(kTopKThreads) PoolTopKKernel(TopKParams p) {
  extern __shared__ __align__(16) uint32_t topk_smem[];  // keys, when n <= kTopKSmemKeys
  __shared__ uint32_t hist_copies[kHistCopies * kHistStride];
  __shared__ uint32_t hist[256];
  __shared__ uint32_t s_prefix, s_remaining;
  __shared__ int s_greater[kTopKWarps], s_equal[kTopKWarps];
  const uint32_t lh = p.lh_base + blockIdx.x;
  const uint32_t cap = p.caps[lh / p.num_kv_heads];
  const float* sc = p.scores + size_t(lh) * p.stride;
  const int n = int(p.num_scored), half = p.kernel / 2;
  uint32_t* keys = n <= kTopKSmemKeys ? topk_smem : p.keys + size_t(lh) * p.num_scored;
  uint32_t* out = p.out + p.out_offset[lh];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int t = threadIdx.x; t < n; t += blockDim.x) {
    const int lo = max(0, t - half), hi = min(n - 1, t + half);
    float v;
    if (p.pooling == 0) {
      v = sc[lo];
      for (int j = lo + 1; j <= hi; ++j) v = fmaxf(v, sc[j]);
    } else {
      v = 0.0f;
      for (int j = lo; j <= hi; ++j) v = __fadd_rn(v, sc[j]);
      v = __fdiv_rn(v, float(p.kernel));
    }
    keys[t] = OrderedKey(v);
  }
  uint32_t prefix = 0, mask = 0, remaining = min(cap, uint32_t(n));  // callers keep cap <= n
  if (cap > 0) {
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int i = threadIdx.x; i < kHistCopies * kHistStride; i += blockDim.x) hist_copies[i] = 0;
      __syncthreads();  // also: keys written (first round), previous round's hist read
      uint32_t* my_hist = hist_copies + (lane % kHistCopies) * kHistStride;
      for (int t = threadIdx.x; t < n; t += blockDim.x) {
        const uint32_t k = keys[t];
        if ((k & mask) == prefix) atomicAdd(&my_hist[(k >> shift) & 255u], 1u);
      }
      __syncthreads();
      if (threadIdx.x < 256) {
        uint32_t sum = 0;
#pragma unroll
        for (int c = 0; c < kHistCopies; ++c) sum += hist_copies[c * kHistStride + threadIdx.x];
        hist[threadIdx.x] = sum;
      }
      __syncthreads();
      if (warp == 0) {
        // Lane l holds bins 8l .. 8l + 7; `above` = keys in higher lanes' bins.
        uint32_t c[8], sum = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          c[i] = hist[8 * lane + i];
          sum += c[i];
        }
        uint32_t incl = sum;  // inclusive suffix sum over lanes >= l
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
          const uint32_t v = __shfl_down_sync(0xffffffffu, incl, o);
          if (lane + o < 32) incl += v;
        }
        uint32_t above = incl - sum;
        if (above < remaining && remaining <= incl) {  // exactly one lane
#pragma unroll
          for (int i = 7; i >= 0; --i) {
            if (above + c[i] >= remaining || i == 0) {
              s_remaining = remaining - above;
              s_prefix = prefix | (uint32_t(8 * lane + i) << shift);
              break;
            }
            above += c[i];
          }
        }
      }
      mask |= 255u << shift;
      __syncthreads();
      prefix = s_prefix;
      remaining = s_remaining;
    }
  }
  if (cap > 0) {
    __syncthreads();  // keys visible to every thread
    const uint32_t threshold = prefix;
    const int take_equal = int(remaining);
    // Warp w compacts positions [w * seg, (w + 1) * seg), 32 consecutive ones per step.
    const int seg = (n + kTopKWarps * 32 - 1) / (kTopKWarps * 32) * 32;
    const int wb = min(n, warp * seg), we = min(n, wb + seg);
    int greater = 0, equal = 0;
    for (int base = wb; base < we; base += 32) {
      const int t = base + lane;
      const uint32_t k = t < we ? keys[t] : 0u;
      greater += __popc(__ballot_sync(0xffffffffu, t < we && k > threshold));
      equal += __popc(__ballot_sync(0xffffffffu, t < we && k == threshold));
    }
    if (lane == 0) {
      s_greater[warp] = greater;
      s_equal[warp] = equal;
    }
    __syncthreads();
    // Every warp scans the 32 warps' counts: lane l = warp l; equal keys go to the lowest
    // positions first, so warp l keeps min(its equals, take_equal - equals before it).
    const int eq_l = s_equal[lane], gt_l = s_greater[lane];
    int eq_incl = eq_l;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, eq_incl, o);
      if (lane >= o) eq_incl += v;
    }
    const int kept_l = gt_l + max(0, min(eq_l, take_equal - (eq_incl - eq_l)));
    int kept_incl = kept_l;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, kept_incl, o);
      if (lane >= o) kept_incl += v;
    }
    int o = __shfl_sync(0xffffffffu, kept_incl - kept_l, warp);
    int eq_seen = __shfl_sync(0xffffffffu, eq_incl - eq_l, warp);
    const uint32_t lanes_below = (1u << lane) - 1u;
    for (int base = wb; base < we; base += 32) {
      const int t = base + lane;
      const uint32_t k = t < we ? keys[t] : 0u;
      const uint32_t eq_bits = __ballot_sync(0xffffffffu, t < we && k == threshold);
      const bool keep = t < we && (k > threshold ||
                                   (k == threshold &&
                                    eq_seen + __popc(eq_bits & lanes_below) < take_equal));
      const uint32_t keep_bits = __ballot_sync(0xffffffffu, keep);
      if (keep) out[o + __popc(keep_bits & lanes_below)] = uint32_t(t);
      o += __popc(keep_bits);
      eq_seen += __popc(eq_bits);
    }
  }
  for (uint32_t t = p.num_scored + threadIdx.x; t < p.num_tokens; t += blockDim.x) {
    out[cap + (t - p.num_scored)] = t;
  }
}

// Dynamic shared memory of PoolTopKKernel for `num_scored` positions.
size_t TopKSmemBytes(uint32_t num_scored) {
  return num_scored <= uint32_t(kTopKSmemKeys) ? size_t(num_scored) * 4 : 0;
}

// Compile-time dispatch over dtype and head_dim, in this one place.
template <typename F>
absl::Status DispatchTypeDim(DType dtype, uint32_t head_dim, F&& f) {
  auto by_dim = [&](auto type_tag) -> absl::Status {
    using T = decltype(type_tag);
    switch (head_dim) {
      case 64:
        return f(T{}, std::integral_constant<int, 64>{});
      case 128:
        return f(T{}, std::integral_constant<int, 128>{});
      default:
        return absl::UnimplementedError("selection (CUDA): unsupported head_dim: " +
                                        std::to_string(head_dim) + " (64 or 128)");
    }
  };
  switch (dtype) {
    case DType::kFloat16:
      return by_dim(__half{});
    case DType::kBFloat16:
      return by_dim(__nv_bfloat16{});
    case DType::kFloat32:
      return by_dim(float{});
  }
  return absl::InvalidArgumentError("selection (CUDA): unknown dtype");
}

int SmCount() {
  int dev = 0, sms = 132;
  if (cudaGetDevice(&dev) == cudaSuccess) {
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  }
  return sms;
}

// Raises `kernel`'s dynamic shared memory limit to `smem` and returns its resident blocks per
// SM with `threads` threads, once per (kernel, device, threads, smem): the CUDA calls cost
// microseconds, and a selection call would otherwise make them every time.
absl::StatusOr<int> PrepareKernel(const void* kernel, int threads, size_t smem) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, int, size_t>, int>* cache =
      new std::map<std::tuple<const void*, int, int, size_t>, int>();
  int dev = 0;
  KVTIER_SEL_CUDA(cudaGetDevice(&dev));
  const auto key = std::make_tuple(kernel, dev, threads, smem);
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  KVTIER_SEL_CUDA(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  int per_sm = 0;
  KVTIER_SEL_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  cache->emplace(key, per_sm);
  return per_sm;
}

// Splits of `tiles` key tiles for each of `units` independent (row chunk, layer, head) units,
// chosen so that waves of `resident` concurrent blocks are well filled.
uint32_t ChooseSplits(uint32_t units, uint32_t tiles, uint32_t resident) {
  double best = 1e300;
  uint32_t best_s = 1;
  for (uint32_t s = 1; s <= std::min<uint32_t>(tiles, 64); ++s) {
    const uint64_t per = (tiles + s - 1) / s;
    const uint64_t waves = (uint64_t(units) * s + resident - 1) / resident;
    const double cost = double(waves * per) + 0.5 * s;  // each split adds a prologue and a merge
    if (cost < best) {
      best = cost;
      best_s = s;
    }
  }
  return best_s;
}

// Pass 2 of all (layer, KV head) pairs runs in this many launches (MassGroupBounds), so that
// top-k and the copy of one group's positions to the host overlap the next group's attention.
constexpr uint32_t kDefaultMassGroups = 3;
uint32_t g_mass_groups = kDefaultMassGroups;

// Boundaries of `groups` consecutive ranges over [0, lh): each range takes half of the pairs
// still left, the last one the rest (256 pairs, 3 groups: 128, 64, 64), so that the work left
// after the last launch (its top-k and copy-out) is small.
std::vector<uint32_t> MassGroupBounds(uint32_t lh, uint32_t groups) {
  std::vector<uint32_t> b{0};
  uint32_t left = lh;
  for (uint32_t g = 0; g + 1 < groups && left > 1; ++g) {
    b.push_back(b.back() + left / 2);
    left -= left / 2;
  }
  b.push_back(lh);
  return b;
}

// Called once the column mass of pairs [begin, end) is enqueued on the stream.
using MassDoneFn = std::function<absl::Status(uint32_t begin, uint32_t end)>;

// Column mass into device memory `scores` ([LH][num_columns]). With `mass_done`, pass 2 runs in
// `mass_groups` launches (when all pairs share one launch batch) and `mass_done` follows each.
absl::Status ColumnMassOnDevice(const SelectionInput& in, uint32_t num_columns, float* scores,
                                Scratch* scratch, cudaStream_t stream, SelectionTimings* timings,
                                uint32_t lh_per_launch = kDefaultLhPerLaunch,
                                uint32_t mass_groups = 1, const MassDoneFn& mass_done = nullptr) {
  AttnParams p{};
  p.q = in.queries;
  p.k = in.keys;
  p.num_kv_heads = in.num_kv_heads;
  p.num_query_heads = in.num_query_heads;
  p.head_dim = in.head_dim;
  p.num_tokens = in.num_tokens;
  p.num_queries = in.num_queries;
  p.group = in.num_query_heads / in.num_kv_heads;
  p.rows = p.group * in.num_queries;
  p.row_chunks = (p.rows + kRows - 1) / kRows;
  p.q_pos0 = in.num_tokens - in.num_queries;
  p.scale_log2 = kLog2e / std::sqrt(static_cast<float>(in.head_dim));
  p.num_columns = num_columns;
  p.scores = scores;
  const uint32_t lh = in.num_layers * in.num_kv_heads;
  const uint32_t key_tiles = (in.num_tokens + kKeys - 1) / kKeys;
  const uint32_t col_tiles = (num_columns + kKeys - 1) / kKeys;
  const size_t rows_pad = size_t(p.row_chunks) * kRows;

  return DispatchTypeDim(in.dtype, in.head_dim, [&](auto type_tag, auto dim) -> absl::Status {
    using T = decltype(type_tag);
    constexpr int D = decltype(dim)::value;
    // fp16/bf16: tensor-core kernels with register logits; fp32: scalar kernels.
    constexpr bool kMma = !std::is_same<T, float>::value;
    const size_t smem = kMma ? MmaSmem<T, D>::kBytes : Smem<T, D>::kBytes;
    void (*row_stats)(AttnParams);
    void (*column_mass)(AttnParams);
    if constexpr (kMma) {
      if (g_attention_sync == kHalfSync) {
        row_stats = RowStatsMmaKernel<T, D, true>;
        column_mass = ColumnMassMmaKernel<T, D, true>;
      } else {
        row_stats = RowStatsMmaKernel<T, D, false>;
        column_mass = ColumnMassMmaKernel<T, D, false>;
      }
    } else {
      row_stats = RowStatsKernel<T, D>;
      column_mass = ColumnMassKernel<T, D>;
    }
    KVTIER_ASSIGN_OR_RETURN(const int per_sm_stats,
                            PrepareKernel(reinterpret_cast<const void*>(row_stats), kThreads, smem));
    KVTIER_ASSIGN_OR_RETURN(
        const int per_sm_mass,
        PrepareKernel(reinterpret_cast<const void*>(column_mass), kThreads, smem));
    if (per_sm_stats < 1 || per_sm_mass < 1) {
      return absl::ResourceExhaustedError("selection (CUDA): attention kernels do not fit an SM");
    }
    const uint32_t sms = uint32_t(SmCount());
    const uint32_t batch = lh_per_launch == 0 ? lh : std::min(lh, lh_per_launch);
    p.stats_splits = ChooseSplits(batch * p.row_chunks, key_tiles, sms * per_sm_stats);
    p.stats_tiles_per_split = (key_tiles + p.stats_splits - 1) / p.stats_splits;
    const uint32_t mass_splits = ChooseSplits(batch, col_tiles, sms * per_sm_mass);
    p.mass_tiles_per_split = (col_tiles + mass_splits - 1) / mass_splits;
    KVTIER_ASSIGN_OR_RETURN(p.partial, scratch->Get<float2>(lh * rows_pad * p.stats_splits));
    KVTIER_ASSIGN_OR_RETURN(p.stats, scratch->Get<float2>(lh * rows_pad));
    if (timings) timings->Mark(stream, "start");
    // Pass 2 over pairs [begin, end), then the caller's follow-up work for them.
    auto mass = [&](uint32_t begin, uint32_t end, uint32_t splits) -> absl::Status {
      AttnParams q = p;
      q.lh_base = begin;
      q.mass_tiles_per_split = (col_tiles + splits - 1) / splits;
      column_mass<<<dim3(splits, end - begin), kThreads, smem, stream>>>(q);
      KVTIER_SEL_CUDA(cudaGetLastError());
      if (!mass_done) return absl::OkStatus();
      if (timings) {
        timings->Mark(stream, ((batch == lh ? "column_mass#" : "attention#") +
                               std::to_string(begin)).c_str());
      }
      return mass_done(begin, end);
    };
    // Batches of (layer, KV head) pairs run both passes back to back, so that the second pass
    // can find the batch's K in L2.
    for (uint32_t base = 0; base < lh; base += batch) {
      p.lh_base = base;
      const uint32_t n = std::min(batch, lh - base);
      row_stats<<<dim3(p.stats_splits, p.row_chunks, n), kThreads, smem, stream>>>(p);
      KVTIER_SEL_CUDA(cudaGetLastError());
      const uint32_t rows = uint32_t(n * rows_pad);
      ReduceStatsKernel<<<(rows + 255) / 256, 256, 0, stream>>>(p, size_t(base) * rows_pad, rows);
      KVTIER_SEL_CUDA(cudaGetLastError());
      if (batch < lh) {
        KVTIER_RETURN_IF_ERROR(mass(base, base + n, mass_splits));
        continue;
      }
      if (timings) timings->Mark(stream, "row_stats");
      const std::vector<uint32_t> bounds = MassGroupBounds(lh, mass_done ? mass_groups : 1);
      for (size_t i = 0; i + 1 < bounds.size(); ++i) {
        const uint32_t pairs = bounds[i + 1] - bounds[i];
        KVTIER_RETURN_IF_ERROR(mass(bounds[i], bounds[i + 1],
                                    ChooseSplits(pairs, col_tiles, sms * per_sm_mass)));
      }
    }
    if (timings && !mass_done) timings->Mark(stream, batch == lh ? "column_mass" : "attention");
    return absl::OkStatus();
  });
}

// Device positions -> host vector through a pinned staging buffer kept per thread (a pageable
// copy goes through the driver's own bounce buffers at a fraction of the link speed). Each
// piece is copied on a copy stream as soon as the work on the main stream that wrote it is
// done, so that it overlaps later kernels; Finish() copies the pieces out of the staging buffer
// in order, each as soon as it has landed, while later pieces are still computed or in flight.
struct CopyResources {
  int device = -1;
  cudaStream_t copy_stream = nullptr;
  uint32_t* buf = nullptr;
  size_t capacity = 0;  // elements
  std::vector<cudaEvent_t> events;
  void Release() {  // errors (e.g. a torn-down context at thread exit) are ignored
    if (buf) cudaFreeHost(buf);
    for (cudaEvent_t e : events) cudaEventDestroy(e);
    if (copy_stream) cudaStreamDestroy(copy_stream);
    buf = nullptr;
    capacity = 0;
    events.clear();
    copy_stream = nullptr;
  }
  ~CopyResources() { Release(); }
};

class PositionsToHost {
 public:
  explicit PositionsToHost(cudaStream_t stream) : stream_(stream) {}
  // Scratch freed on the main stream after this object goes must wait for the copies.
  ~PositionsToHost() {
    if (last_event_) cudaStreamWaitEvent(stream_, last_event_, 0);
  }
  PositionsToHost(const PositionsToHost&) = delete;
  PositionsToHost& operator=(const PositionsToHost&) = delete;

  absl::Status Reserve(size_t count) {
    int dev = 0;
    KVTIER_SEL_CUDA(cudaGetDevice(&dev));
    if (res().device != dev) {
      res().Release();
      res().device = dev;
    }
    if (!res().copy_stream) {
      KVTIER_SEL_CUDA(cudaStreamCreateWithFlags(&res().copy_stream, cudaStreamNonBlocking));
    }
    if (res().capacity < count) {
      if (res().buf) KVTIER_SEL_CUDA(cudaFreeHost(res().buf));
      res().buf = nullptr;
      res().capacity = 0;
      const size_t want = std::max<size_t>(count, size_t(1) << 18);
      KVTIER_SEL_CUDA(cudaMallocHost(&res().buf, want * sizeof(uint32_t)));
      res().capacity = want;
    }
    return absl::OkStatus();
  }

  // Positions [begin, begin + count) of `device`, written by work already enqueued on the main
  // stream; copied in up to 4 sub-pieces (so that Finish overlaps the later ones' transfer).
  absl::Status Enqueue(const uint32_t* device, size_t begin, size_t count) {
    if (count == 0) return absl::OkStatus();
    if (begin + count > res().capacity) {
      return absl::InternalError("selection (CUDA): positions staging buffer too small");
    }
    KVTIER_ASSIGN_OR_RETURN(cudaEvent_t ready, NextEvent());
    KVTIER_SEL_CUDA(cudaEventRecord(ready, stream_));
    KVTIER_SEL_CUDA(cudaStreamWaitEvent(res().copy_stream, ready, 0));
    const size_t subs = std::min<size_t>(4, std::max<size_t>(1, count / 65536));
    const size_t per = (count + subs - 1) / subs;
    for (size_t b = begin; b < begin + count; b += per) {
      const size_t n = std::min(per, begin + count - b);
      KVTIER_SEL_CUDA(cudaMemcpyAsync(res().buf + b, device + b, n * sizeof(uint32_t),
                                      cudaMemcpyDeviceToHost, res().copy_stream));
      KVTIER_ASSIGN_OR_RETURN(cudaEvent_t done, NextEvent());
      KVTIER_SEL_CUDA(cudaEventRecord(done, res().copy_stream));
      pieces_.push_back({b, n, done});
      last_event_ = done;
    }
    return absl::OkStatus();
  }

  // Waits for every enqueued piece and copies it to `host` (indexed like `device`).
  absl::Status Finish(uint32_t* host) {
    for (const Piece& piece : pieces_) {
      KVTIER_SEL_CUDA(cudaEventSynchronize(piece.done));
      std::memcpy(host + piece.begin, res().buf + piece.begin, piece.count * sizeof(uint32_t));
    }
    pieces_.clear();
    return absl::OkStatus();
  }

 private:
  struct Piece {
    size_t begin, count;
    cudaEvent_t done;
  };
  static CopyResources& res() {
    thread_local CopyResources r;
    return r;
  }
  absl::StatusOr<cudaEvent_t> NextEvent() {
    if (next_event_ == res().events.size()) {
      cudaEvent_t e;
      KVTIER_SEL_CUDA(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      res().events.push_back(e);
    }
    return res().events[next_event_++];
  }

  cudaStream_t stream_;
  std::vector<Piece> pieces_;
  size_t next_event_ = 0;
  cudaEvent_t last_event_ = nullptr;
};

// Pooling + top-k of (layer, KV head) pairs into device positions: the host-side layout and the
// device scratch, set up once; Launch() runs a range of pairs.
class TopKPlan {
 public:
  // Fills `sel`'s shape and kept_per_layer, allocates scratch and uploads caps and offsets.
  absl::Status Prepare(const float* scores, size_t stride, uint32_t num_layers,
                       uint32_t num_kv_heads, uint32_t num_tokens, uint32_t num_scored,
                       const std::vector<uint32_t>& caps, Pooling pooling, uint32_t pool_kernel,
                       Scratch* scratch, cudaStream_t stream, Selection* sel) {
    stream_ = stream;
    sel->num_layers = num_layers;
    sel->num_kv_heads = num_kv_heads;
    sel->num_tokens = num_tokens;
    sel->kept_per_layer.clear();
    const uint32_t tail = num_tokens - num_scored;
    const uint32_t lh = num_layers * num_kv_heads;
    offsets_.assign(lh + 1, 0);
    size_t total = 0;
    for (uint32_t l = 0; l < num_layers; ++l) {
      sel->kept_per_layer.push_back(caps[l] + tail);
      for (uint32_t h = 0; h < num_kv_heads; ++h) {
        offsets_[l * num_kv_heads + h] = total;
        total += caps[l] + tail;
      }
    }
    offsets_[lh] = total;
    p_ = TopKParams{};
    p_.scores = scores;
    p_.stride = stride;
    p_.num_scored = num_scored;
    p_.num_tokens = num_tokens;
    p_.num_kv_heads = num_kv_heads;
    p_.pooling = pooling == Pooling::kMax ? 0 : 1;
    p_.kernel = int(pool_kernel);
    uint32_t* d_caps;
    size_t* d_offsets;
    KVTIER_ASSIGN_OR_RETURN(d_caps, scratch->Get<uint32_t>(num_layers));
    KVTIER_ASSIGN_OR_RETURN(d_offsets, scratch->Get<size_t>(lh));
    KVTIER_ASSIGN_OR_RETURN(p_.out, scratch->Get<uint32_t>(total));
    if (num_scored > uint32_t(kTopKSmemKeys)) {  // keys in shared memory up to kTopKSmemKeys
      KVTIER_ASSIGN_OR_RETURN(p_.keys, scratch->Get<uint32_t>(size_t(lh) * num_scored));
    }
    KVTIER_SEL_CUDA(cudaMemcpyAsync(d_caps, caps.data(), 4 * caps.size(), cudaMemcpyHostToDevice,
                                    stream));
    KVTIER_SEL_CUDA(cudaMemcpyAsync(d_offsets, offsets_.data(), sizeof(size_t) * lh,
                                    cudaMemcpyHostToDevice, stream));
    p_.caps = d_caps;
    p_.out_offset = d_offsets;
    return absl::OkStatus();
  }
  // Pairs [begin, end) on the stream.
  absl::Status Launch(uint32_t begin, uint32_t end) {
    if (end <= begin) return absl::OkStatus();
    TopKParams q = p_;
    q.lh_base = begin;
    const size_t smem = TopKSmemBytes(p_.num_scored);
    if (smem > 0) {  // the limit once at its largest; every launch then fits under it
      KVTIER_RETURN_IF_ERROR(PrepareKernel(reinterpret_cast<const void*>(PoolTopKKernel),
                                           kTopKThreads, TopKSmemBytes(kTopKSmemKeys))
                                 .status());
    }
    PoolTopKKernel<<<end - begin, kTopKThreads, smem, stream_>>>(q);
    KVTIER_SEL_CUDA(cudaGetLastError());
    return absl::OkStatus();
  }
  const uint32_t* out() const { return p_.out; }
  size_t offset(uint32_t lh) const { return offsets_[lh]; }
  size_t total() const { return offsets_.back(); }

 private:
  TopKParams p_{};
  std::vector<size_t> offsets_;  // [LH + 1]
  cudaStream_t stream_ = nullptr;
};

// Pooling + top-k on device scores (all pairs in one launch), result copied into a host
// Selection.
absl::StatusOr<Selection> TopKOnDevice(const float* scores, size_t stride, uint32_t num_layers,
                                       uint32_t num_kv_heads, uint32_t num_tokens,
                                       uint32_t num_scored, const std::vector<uint32_t>& caps,
                                       Pooling pooling, uint32_t pool_kernel, Scratch* scratch,
                                       cudaStream_t stream) {
  Selection sel;
  TopKPlan plan;
  KVTIER_RETURN_IF_ERROR(plan.Prepare(scores, stride, num_layers, num_kv_heads, num_tokens,
                                      num_scored, caps, pooling, pool_kernel, scratch, stream,
                                      &sel));
  PositionsToHost copy(stream);
  KVTIER_RETURN_IF_ERROR(copy.Reserve(plan.total()));
  KVTIER_RETURN_IF_ERROR(plan.Launch(0, num_layers * num_kv_heads));
  KVTIER_RETURN_IF_ERROR(copy.Enqueue(plan.out(), 0, plan.total()));
  sel.positions.resize(plan.total());  // host pages touched while the device works
  KVTIER_RETURN_IF_ERROR(copy.Finish(sel.positions.data()));
  return sel;
}

}  // namespace

SelectionTimings::~SelectionTimings() {
  for (void* e : events_) cudaEventDestroy(static_cast<cudaEvent_t>(e));
}

void SelectionTimings::Mark(void* stream, const char* name) {
  cudaEvent_t e;
  if (cudaEventCreate(&e) != cudaSuccess) return;
  cudaEventRecord(e, static_cast<cudaStream_t>(stream));
  events_.push_back(e);
  names_.push_back(name);
}

std::vector<std::pair<std::string, double>> SelectionTimings::Phases() const {
  std::vector<std::pair<std::string, double>> out;
  for (size_t i = 1; i < events_.size(); ++i) {
    float ms = 0;
    cudaEventSynchronize(static_cast<cudaEvent_t>(events_[i]));
    cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(events_[i - 1]),
                         static_cast<cudaEvent_t>(events_[i]));
    out.emplace_back(names_[i], ms);
  }
  return out;
}

absl::StatusOr<std::vector<float>> ColumnMassDevice(const SelectionInput& input,
                                                    uint32_t num_columns) {
  cudaStream_t stream = 0;
  std::vector<float> host(size_t(input.num_layers) * input.num_kv_heads * num_columns);
  {
    Scratch scratch(stream);
    KVTIER_ASSIGN_OR_RETURN(float* scores, scratch.Get<float>(host.size()));
    KVTIER_RETURN_IF_ERROR(
        ColumnMassOnDevice(input, num_columns, scores, &scratch, stream, nullptr));
    KVTIER_SEL_CUDA(cudaMemcpyAsync(host.data(), scores, 4 * host.size(), cudaMemcpyDeviceToHost,
                                    stream));
  }
  KVTIER_SEL_CUDA(cudaStreamSynchronize(stream));
  return host;
}

absl::StatusOr<Selection> SnapKvSelectDeviceTimed(const SnapKvOptions& options,
                                                  const SelectionInput& input,
                                                  const std::vector<uint32_t>& caps,
                                                  SelectionTimings* timings,
                                                  uint32_t lh_per_launch) {
  cudaStream_t stream = 0;
  const uint32_t n = input.num_tokens - options.window;
  const uint32_t lh = input.num_layers * input.num_kv_heads;
  auto run = [&]() -> absl::StatusOr<Selection> {
    Scratch scratch(stream);
    KVTIER_ASSIGN_OR_RETURN(float* scores, scratch.Get<float>(size_t(lh) * n));
    Selection sel;
    TopKPlan plan;
    KVTIER_RETURN_IF_ERROR(plan.Prepare(scores, n, input.num_layers, input.num_kv_heads,
                                        input.num_tokens, n, caps, options.pooling,
                                        options.pool_kernel, &scratch, stream, &sel));
    PositionsToHost copy(stream);  // after `scratch`: its destructor orders the frees
    KVTIER_RETURN_IF_ERROR(copy.Reserve(plan.total()));
    // Top-k of each group of pairs right after its column mass; its positions go to the host
    // while the next group's attention runs.
    auto topk = [&](uint32_t begin, uint32_t end) -> absl::Status {
      KVTIER_RETURN_IF_ERROR(plan.Launch(begin, end));
      if (timings) timings->Mark(stream, ("pool_topk#" + std::to_string(begin)).c_str());
      return copy.Enqueue(plan.out(), plan.offset(begin), plan.offset(end) - plan.offset(begin));
    };
    if (n > 0) {
      KVTIER_RETURN_IF_ERROR(ColumnMassOnDevice(input, n, scores, &scratch, stream, timings,
                                                lh_per_launch, g_mass_groups, topk));
    } else {
      if (timings) timings->Mark(stream, "start");
      KVTIER_RETURN_IF_ERROR(topk(0, lh));
    }
    sel.positions.resize(plan.total());  // host pages touched while the device works
    KVTIER_RETURN_IF_ERROR(copy.Finish(sel.positions.data()));
    if (timings) timings->Mark(stream, "copy_out");
    return sel;
  };
  absl::StatusOr<Selection> result = run();
  KVTIER_SEL_CUDA(cudaStreamSynchronize(stream));
  return result;
}

uint32_t DefaultLhPerLaunch() { return kDefaultLhPerLaunch; }

uint32_t DefaultMassGroups() { return kDefaultMassGroups; }

absl::Status SetMassGroupsForBench(uint32_t groups) {
  if (groups < 1 || groups > 8) {
    return absl::InvalidArgumentError("selection (CUDA): mass groups must be 1 to 8");
  }
  g_mass_groups = groups;
  return absl::OkStatus();
}

int DefaultAttentionSync() { return kDefaultAttentionSync; }

absl::Status SetAttentionSyncForBench(int mode) {
  if (mode != kBlockSync && mode != kHalfSync) {
    return absl::InvalidArgumentError(
        "selection (CUDA): attention sync must be 1 (block) or 2 (key halves)");
  }
  g_attention_sync = mode;
  return absl::OkStatus();
}

absl::StatusOr<Selection> SnapKvSelectDevice(const SnapKvOptions& options,
                                             const SelectionInput& input,
                                             const std::vector<uint32_t>& caps) {
  return SnapKvSelectDeviceTimed(options, input, caps, nullptr, kDefaultLhPerLaunch);
}

absl::StatusOr<Selection> H2oSelectDevice(const H2oOptions& options, const H2oScoresInput& input) {
  cudaStream_t stream = 0;
  const uint32_t T = input.num_tokens;
  auto run = [&]() -> absl::StatusOr<Selection> {
    Scratch scratch(stream);
    const float* scores = input.scores;
    if (input.num_score_heads != input.num_kv_heads) {
      const size_t total = size_t(input.num_layers) * input.num_kv_heads * T;
      KVTIER_ASSIGN_OR_RETURN(float* mean, scratch.Get<float>(total));
      GroupMeanKernel<<<(total + 255) / 256, 256, 0, stream>>>(
          input.scores, mean, input.num_kv_heads, input.num_query_heads / input.num_kv_heads, T,
          total);
      KVTIER_SEL_CUDA(cudaGetLastError());
      scores = mean;
    }
    return TopKOnDevice(scores, T, input.num_layers, input.num_kv_heads, T,
                          T - options.recent_budget,
                          std::vector<uint32_t>(input.num_layers, options.heavy_budget),
                          Pooling::kMax, 1, &scratch, stream);
  };
  absl::StatusOr<Selection> result = run();
  KVTIER_SEL_CUDA(cudaStreamSynchronize(stream));
  return result;
}

absl::StatusOr<Selection> H2oFromQueriesSelectDevice(const H2oOptions& options,
                                                     const SelectionInput& input) {
  cudaStream_t stream = 0;
  const uint32_t T = input.num_tokens;
  auto run = [&]() -> absl::StatusOr<Selection> {
    Scratch scratch(stream);
    KVTIER_ASSIGN_OR_RETURN(float* scores,
                            scratch.Get<float>(size_t(input.num_layers) * input.num_kv_heads * T));
    KVTIER_RETURN_IF_ERROR(ColumnMassOnDevice(input, T, scores, &scratch, stream, nullptr));
    return TopKOnDevice(scores, T, input.num_layers, input.num_kv_heads, T,
                          T - options.recent_budget,
                          std::vector<uint32_t>(input.num_layers, options.heavy_budget),
                          Pooling::kMax, 1, &scratch, stream);
  };
  absl::StatusOr<Selection> result = run();
  KVTIER_SEL_CUDA(cudaStreamSynchronize(stream));
  return result;
}

}  // namespace kvtier::kernels::internal
