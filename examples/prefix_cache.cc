// A complete kvtier client: the prefix-cache loop an inference worker runs for each prompt.
//
//   1. compute the prompt's chained chunk keys (no daemon needed),
//   2. Lookup the longest cached prefix (with a lease so it is not evicted before the fetch),
//   3. Get the cached chunks (here as decoded tensors; a GPU worker would fetch payloads and
//      decode them straight into its paged KV buffers with Client::GetIntoPaged),
//   4. "prefill" the rest and Put the new chunks.
//
// Run a daemon (scripts/run.sh or build/service/kvtierd) and then:
//   build/client/kvtier_example_prefix_cache unix:./data/kvtierd.sock
// Running it twice shows the second run hitting every chunk the first one stored.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kvtier/client/client.h"

using kvtier::client::CallOptions;
using kvtier::client::CallStats;
using kvtier::client::Client;
using kvtier::client::ClientOptions;
using kvtier::client::NamespaceSpec;

namespace {

// Stand-in for the engine's prefill: deterministic bytes for chunk `index` (real code would copy
// the KV the model just computed, e.g. with kernels::GatherChunks from its paged cache).
std::vector<uint8_t> PrefillChunk(const NamespaceSpec& ns, size_t index) {
  std::vector<uint8_t> kv(ns.layout.ChunkBytes(ns.tokens_per_chunk));
  for (size_t i = 0; i < kv.size(); i += 2) {
    kv[i] = static_cast<uint8_t>(i + index);  // low byte
    kv[i + 1] = 0x3c;                         // fp16 values near 1.0
  }
  return kv;
}

int Fail(const char* what, const absl::Status& st) {
  std::fprintf(stderr, "%s: %s\n", what, st.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  ClientOptions options;
  options.target = argc > 1 ? argv[1] : "unix:./data/kvtierd.sock";
  options.default_deadline = std::chrono::seconds(5);
  auto client = Client::Connect(options);
  if (!client.ok()) return Fail("connect", client.status());

  // One namespace per model: its layout fixes the chunk shape; the salt isolates tenants.
  NamespaceSpec spec;
  spec.name = "example-llama";
  spec.model_id = "example/llama-like-4-layers";
  spec.layout = kvtier::kernels::KvLayout::Mha(/*layers=*/4, /*kv_heads=*/2, /*query_heads=*/8,
                                               /*head_dim=*/64);
  spec.codec = "raw";
  spec.tokens_per_chunk = 256;
  spec.salt = "tenant-a";
  auto ns = (*client)->CreateNamespace(spec);  // idempotent
  if (!ns.ok()) return Fail("create namespace", ns.status());

  // A 1000-token prompt: 3 full chunks of 256 get keys; the 232-token tail is not cached.
  std::vector<uint32_t> prompt(1000);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<uint32_t>(i * 31 % 32000);
  const auto keys = Client::ComputeKeys(*ns, prompt);

  CallStats stats;
  auto hit = (*client)->Lookup(ns->name, keys, /*lease_ms=*/2000, CallOptions{{}, &stats});
  if (!hit.ok()) return Fail("lookup", hit.status());
  std::printf("lookup: %u of %zu chunks cached (%llu tokens), %.0f us\n", hit->prefix_chunks,
              keys.size(), static_cast<unsigned long long>(hit->prefix_tokens),
              stats.latency.count() / 1e3);

  for (uint32_t i = 0; i < hit->prefix_chunks; ++i) {
    kvtier::client::GetOptions get;
    if (i + 1 == hit->prefix_chunks) get.release_lease_id = hit->lease_id;  // done with the lease
    auto chunk = (*client)->Get(ns->name, keys[i], get, CallOptions{{}, &stats});
    if (!chunk.ok()) return Fail("get", chunk.status());  // e.g. evicted: recompute instead
    std::printf("get chunk %u: %zu bytes from %s tier, %.0f us\n", i, chunk->data.size(),
                kvtier::client::TierName(chunk->tier), stats.latency.count() / 1e3);
  }
  for (size_t i = hit->prefix_chunks; i < keys.size(); ++i) {
    const auto kv = PrefillChunk(*ns, i);
    kvtier::client::PutOptions put;
    put.num_tokens = ns->tokens_per_chunk;
    put.first_position = i * ns->tokens_per_chunk;
    auto stored = (*client)->Put(ns->name, keys[i], kv, put, CallOptions{{}, &stats});
    if (!stored.ok()) return Fail("put", stored.status());
    std::printf("put chunk %zu: %llu bytes stored in %s tier, %.0f us\n", i,
                static_cast<unsigned long long>(stored->stored_bytes),
                kvtier::client::TierName(stored->tier), stats.latency.count() / 1e3);
  }
  const auto totals = (*client)->Totals();
  std::printf("%llu calls, %llu retries, %llu bytes sent, %llu received\n",
              static_cast<unsigned long long>(totals.calls),
              static_cast<unsigned long long>(totals.retries),
              static_cast<unsigned long long>(totals.bytes_sent),
              static_cast<unsigned long long>(totals.bytes_received));
  return 0;
}
