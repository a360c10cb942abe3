// Compaction (the Compact RPC): token selection over a prompt's KV (SnapKV, PyramidKV, H2O,
// StreamingLLM from kernels/selection.h) and encoding of the kept tokens into a compacted-context
// payload (kernels/compacted.h) with the namespace's codec as the inner codec.
//
// Method specs: "snapkv:budget=512,window=32[,kernel=7][,pool=max|avg]",
// "pyramidkv:budget=512,window=32[,beta=20][,kernel=7][,pool=max|avg]",
// "h2o:heavy=256,recent=256", "streamingllm:sink=4,recent=508". Unknown methods or keys are
// InvalidArgument.
//
// Thread-safety: pure functions.
#ifndef KVTIER_SERVICE_SRC_COMPACTION_H_
#define KVTIER_SERVICE_SRC_COMPACTION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kvtier/kernels/layout.h"
#include "namespace_registry.h"

namespace kvtier::service {

struct CompactionInput {
  std::string method;
  const std::string* kv = nullptr;       // canonical chunk layout, num_tokens tokens
  uint32_t num_tokens = 0;
  const std::string* queries = nullptr;  // [layer][query_head][window][head_dim], layout dtype
  uint32_t window = 0;
  const std::string* scores = nullptr;   // fp32 [layer][score_heads][token]
};

struct CompactionOutput {
  std::vector<uint8_t> payload;
  double mean_kept = 0;  // kept tokens per (layer, KV head), averaged over layers
};

absl::StatusOr<CompactionOutput> Compact(const NamespaceInfo& ns, const CompactionInput& in);

}  // namespace kvtier::service

#endif  // KVTIER_SERVICE_SRC_COMPACTION_H_
