// Small helpers over the raw kvtier.v1 gRPC stub, shared by kvtier_demo, the RPC benchmark and the
// service integration tests: chunked streaming Put and Get with CRC-32C, synthetic fp16 tensors,
// keys. Applications should use the client SDK (client/); these exist so the daemon's own tools
// and tests exercise the wire protocol directly.
//
// Thread-safety: free functions; a stub may be shared between threads.
#ifndef KVTIER_SERVICE_TOOLS_RPC_UTIL_H_
#define KVTIER_SERVICE_TOOLS_RPC_UTIL_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "kvtier.grpc.pb.h"

namespace kvtier::rpc {

// Per-call settings.
struct CallSettings {
  std::string token;                          // sent as "authorization: Bearer <token>"
  std::optional<std::chrono::milliseconds> timeout;
  size_t message_bytes = 1 << 20;             // Put data bytes per message
};

void Prepare(grpc::ClientContext* ctx, const CallSettings& call);

v1::Layout MhaLayout(uint32_t layers, uint32_t kv_heads, uint32_t query_heads, uint32_t head_dim,
                     v1::DType dtype = v1::DTYPE_FP16);
// Bytes of `tokens` tokens of an MHA/MLA layout.
uint64_t TensorBytes(const v1::Layout& layout, uint32_t tokens);

// Deterministic pseudo-random finite fp16 values (magnitudes about 1/32..32), like real KV.
std::string SyntheticFp16(uint64_t bytes, uint64_t seed);
// A 32-byte key derived from `seed` (tests and benchmarks; real keys come from token ids).
std::string SeedKey(uint64_t seed);

struct PutOutcome {
  grpc::Status status;
  v1::PutResponse response;
};
// Streams `data` as one value (header in the first message, then message_bytes pieces).
PutOutcome Put(v1::KvTier::Stub* stub, const std::string& ns, const std::string& key,
               const std::string& data, v1::DataFormat format, uint32_t num_tokens,
               const CallSettings& call = {});

struct GetOutcome {
  grpc::Status status;
  v1::GetHeader header;
  std::string data;
  bool crc_ok = false;  // data matched header.crc32c and header.total_bytes
};
GetOutcome Get(v1::KvTier::Stub* stub, const std::string& ns, const std::string& key,
               v1::DataFormat format, const CallSettings& call = {}, uint64_t release_lease = 0);

uint32_t Crc32c(const std::string& data);

}  // namespace kvtier::rpc

#endif  // KVTIER_SERVICE_TOOLS_RPC_UTIL_H_
