// Shared by kvtier's GPU benchmarks and tools: CUDA_OK(expr) checks a CUDA runtime call and exits
// with the failing expression and CUDA's message. Benchmarks stop at the first error: a number
// measured after a failed call would be wrong.
#ifndef KVTIER_BENCH_CUDA_BENCH_H_
#define KVTIER_BENCH_CUDA_BENCH_H_

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>

#define CUDA_OK(expr)                                                                   \
  do {                                                                                  \
    cudaError_t e_ = (expr);                                                            \
    if (e_ != cudaSuccess) {                                                            \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr,                \
                   cudaGetErrorString(e_));                                             \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

#endif  // KVTIER_BENCH_CUDA_BENCH_H_
