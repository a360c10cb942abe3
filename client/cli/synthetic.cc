#include "synthetic.h"

#include <cstring>

namespace kvtier::cli {

uint64_t Mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::vector<uint32_t> BlockTokens(uint64_t hash_id, uint32_t block_tokens, uint32_t vocab) {
  std::vector<uint32_t> out(block_tokens);
  const uint64_t base = Mix64(hash_id ^ 0x6b7674696572ull);  // "kvtier"
  for (uint32_t j = 0; j < block_tokens; ++j) {
    out[j] = static_cast<uint32_t>(Mix64(base + j) % vocab);
  }
  return out;
}

std::vector<uint32_t> RequestTokens(absl::Span<const uint64_t> hash_ids, uint32_t block_tokens) {
  std::vector<uint32_t> out;
  out.reserve(hash_ids.size() * block_tokens);
  for (uint64_t id : hash_ids) {
    const auto t = BlockTokens(id, block_tokens);
    out.insert(out.end(), t.begin(), t.end());
  }
  return out;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) return static_cast<uint16_t>(sign | (abs > 0x7F800000u ? 0x7E00u : 0x7C00u));
  if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds to inf
  if (abs < 0x38800000u) {  // subnormal or zero in half
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);
    const uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
    const int shift = 126 - static_cast<int>(abs >> 23);  // value / 2^-24, the subnormal unit
    uint32_t v = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (v & 1))) ++v;
    return static_cast<uint16_t>(sign | v);
  }
  uint32_t v = ((abs - 0x38000000u) >> 13);
  const uint32_t rem = abs & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (v & 1))) ++v;
  return static_cast<uint16_t>(sign | v);
}

uint16_t FloatToBf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40);
  x += 0x7FFFu + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

std::vector<uint8_t> SyntheticKv(const kernels::KvLayout& layout, uint32_t num_tokens,
                                 uint64_t seed) {
  const size_t n = layout.ElementsPerToken() * num_tokens;
  const size_t es = kernels::DTypeSize(layout.dtype);
  std::vector<uint8_t> out(n * es);
  uint64_t state = Mix64(seed ^ 0x5eed5eed5eedull);
  for (size_t i = 0; i < n; ++i) {
    state = Mix64(state);
    // 24 random bits -> [-2, 2).
    const float v = static_cast<float>(static_cast<int64_t>(state >> 40) - (1 << 23)) /
                    static_cast<float>(1 << 22);
    switch (layout.dtype) {
      case kernels::DType::kFloat32: std::memcpy(&out[i * 4], &v, 4); break;
      case kernels::DType::kBFloat16: {
        const uint16_t b = FloatToBf16(v);
        std::memcpy(&out[i * 2], &b, 2);
        break;
      }
      default: {
        const uint16_t h = FloatToHalf(v);
        std::memcpy(&out[i * 2], &h, 2);
        break;
      }
    }
  }
  return out;
}

}  // namespace kvtier::cli
