// Deterministic synthetic inputs for the CLI's replay and bench: token ids derived from a trace's
// block hash ids, and KV tensors derived from a seed. Any process on any machine derives the same
// bytes, so a replay can verify what it reads back without keeping copies.
// Thread-safe (pure functions).
#ifndef KVTIER_CLIENT_CLI_SYNTHETIC_H_
#define KVTIER_CLIENT_CLI_SYNTHETIC_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "kvtier/kernels/layout.h"

namespace kvtier::cli {

// SplitMix64 finalizer: a well-mixed 64-bit hash of x.
uint64_t Mix64(uint64_t x);

// Token ids of trace block `hash_id`: block_tokens ids in [0, vocab), a function of hash_id alone.
// Because chunk keys chain, equal hash-id prefixes then give equal key prefixes.
std::vector<uint32_t> BlockTokens(uint64_t hash_id, uint32_t block_tokens, uint32_t vocab = 128256);

// Tokens of a whole request: BlockTokens of each id, concatenated.
std::vector<uint32_t> RequestTokens(absl::Span<const uint64_t> hash_ids, uint32_t block_tokens);

// KV of `num_tokens` tokens in `layout` (canonical order), values uniform in [-2, 2) rounded to
// the layout's dtype, determined by `seed`.
std::vector<uint8_t> SyntheticKv(const kernels::KvLayout& layout, uint32_t num_tokens,
                                 uint64_t seed);

// IEEE binary16 / bfloat16 bits of a float, round to nearest even.
uint16_t FloatToHalf(float f);
uint16_t FloatToBf16(float f);

}  // namespace kvtier::cli

#endif  // KVTIER_CLIENT_CLI_SYNTHETIC_H_
