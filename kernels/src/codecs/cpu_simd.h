// Internal: AVX2 + F16C row decoders for the CPU reference's hot loops (fp8 and kivi decode into
// fp16 / bf16). They compute exactly what the scalar code computes (the same fp32 products and
// sums, round-to-nearest-even narrowing), only 8 elements at a time; the scalar code remains the
// reference and the fallback on CPUs without these instructions. Not a public header.
#ifndef KVTIER_KERNELS_SRC_CODECS_CPU_SIMD_H_
#define KVTIER_KERNELS_SRC_CODECS_CPU_SIMD_H_

#include <cstdint>

namespace kvtier::kernels::internal {

// True when the CPU has AVX2 and F16C (checked once).
bool CpuHasAvx2F16c();

// dtype: 1 = fp16, 2 = bf16. `n` must be a multiple of 8.
// out[i] = narrow(E4M3ToFloat(codes[i]) * scale)
void Fp8DecodeRowAvx2(uint8_t dtype, const uint8_t* codes, float scale, void* out, uint32_t n);
// out[i] = narrow(code_i * scale + mn) with code_i = bits [b*i, b*i + b) of the u32 words at
// `words` (kivi value packing), one (scale, mn) for all n elements.
void KiviDequantPackedAvx2(uint8_t dtype, uint32_t bits, const uint32_t* words, float scale,
                           float mn, void* out, uint32_t n);
// out[c] = narrow(((words[c] >> shift) & mask) * scale[c] + mn[c]) for c < n (kivi key rows).
void KiviDequantColumnsAvx2(uint8_t dtype, uint32_t bits, uint32_t shift, const uint32_t* words,
                            const float* scale, const float* mn, void* out, uint32_t n);

}  // namespace kvtier::kernels::internal

#endif  // KVTIER_KERNELS_SRC_CODECS_CPU_SIMD_H_
