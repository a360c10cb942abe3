// Prints the chunk keys of tokens[i] = i * 2654435761 (mod 2^32), one hex key a line.
// Usage: chunk_key_tool TOKENS_PER_CHUNK SALT NUM_TOKENS. Used by chunk_key_test.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kvtier/common/chunk_key.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s TOKENS_PER_CHUNK SALT NUM_TOKENS\n", argv[0]);
    return 2;
  }
  const uint32_t per_chunk = static_cast<uint32_t>(std::strtoul(argv[1], nullptr, 10));
  std::vector<uint32_t> tokens(std::strtoul(argv[3], nullptr, 10));
  for (uint32_t i = 0; i < tokens.size(); ++i) tokens[i] = i * 2654435761u;
  for (const auto& k : kvtier::ComputeChunkKeys(tokens, argv[2], per_chunk)) {
    std::printf("%s\n", k.ToHex().c_str());
  }
  return 0;
}
