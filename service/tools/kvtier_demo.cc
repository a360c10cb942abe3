// kvtier_demo: stores and fetches the KV cache of a synthetic multi-turn conversation through a
// running kvtierd, the way an inference engine would, and prints compression ratio and hit rate.
//
// Each turn's prompt is the whole conversation so far plus a new user message, so its chunk keys
// (chained SHA-256 over token ids, common/chunk_key.h) share the previous turn's prefix: Lookup
// finds that prefix, the engine fetches it (decoded at the last step) instead of recomputing it,
// and "prefills" only the new chunks, which it stores with Put. The KV values are synthetic
// (deterministic per chunk key), with the shape of a small GQA model.
//
// Uses the raw gRPC stub (service/tools/rpc_util.h); applications use the client SDK (client/).
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "grpc/health/v1/health.grpc.pb.h"
#include "kvtier/common/chunk_key.h"
#include "rpc_util.h"

namespace {

float HalfToFloat(uint16_t h) {
  const int exp = (h >> 10) & 0x1F;
  const int man = h & 0x3FF;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(man), -24);
  } else if (exp == 31) {
    v = man ? NAN : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(man + 1024), exp - 25);
  }
  return (h & 0x8000) ? -v : v;
}

// Relative RMS error of fp16 tensor `got` against `want`.
double RelativeRmse(const std::string& want, const std::string& got) {
  double num = 0, den = 0;
  for (size_t i = 0; i + 1 < want.size() && i + 1 < got.size(); i += 2) {
    uint16_t a = static_cast<uint8_t>(want[i]) | static_cast<uint8_t>(want[i + 1]) << 8;
    uint16_t b = static_cast<uint8_t>(got[i]) | static_cast<uint8_t>(got[i + 1]) << 8;
    double x = HalfToFloat(a), y = HalfToFloat(b);
    num += (x - y) * (x - y);
    den += x * x;
  }
  return den > 0 ? std::sqrt(num / den) : 0;
}

uint64_t KeySeed(const kvtier::ChunkKey& k) {
  uint64_t s = 0;
  for (int i = 0; i < 8; ++i) s |= static_cast<uint64_t>(k.bytes()[i]) << (8 * i);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvtier_demo: a synthetic multi-turn conversation's KV cache through kvtierd"};
  std::string target = "unix:./data/kvtierd.sock";
  std::string token, metrics_url = "http://127.0.0.1:7471/metrics";
  std::string codec = "fp8";
  std::string ns_name;
  uint32_t turns = 6, tpc = 64, layers = 8, kv_heads = 8, q_heads = 32, head_dim = 128;
  int wait_s = 60;
  bool health_only = false;
  app.add_option("--target", target, "gRPC target of kvtierd")->capture_default_str();
  app.add_option("--token", token, "Token, when kvtierd requires one");
  app.add_option("--metrics-url", metrics_url, "Where kvtierd's metrics are (printed only)")
      ->capture_default_str();
  app.add_option("--codec", codec, "Namespace codec")->capture_default_str();
  app.add_option("--namespace", ns_name, "Namespace name (default demo-<codec>)");
  app.add_option("--turns", turns, "Conversation turns")->capture_default_str();
  app.add_option("--tokens-per-chunk", tpc, "Tokens per chunk")->capture_default_str();
  app.add_option("--layers", layers, "Model layers")->capture_default_str();
  app.add_option("--kv-heads", kv_heads, "KV heads")->capture_default_str();
  app.add_option("--query-heads", q_heads, "Query heads")->capture_default_str();
  app.add_option("--head-dim", head_dim, "Head dimension")->capture_default_str();
  app.add_option("--wait", wait_s, "Seconds to wait for kvtierd to be SERVING")
      ->capture_default_str();
  app.add_flag("--health-only", health_only, "Only wait for SERVING, then exit 0");
  CLI11_PARSE(app, argc, argv);
  if (ns_name.empty()) {
    ns_name = "demo-" + codec;
    for (char& c : ns_name) {
      if (c == ':' || c == ',' || c == '=') c = '-';
    }
  }

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  kvtier::rpc::CallSettings call;
  call.token = token;

  // Wait for health SERVING (the disk tier opens first).
  auto health = grpc::health::v1::Health::NewStub(channel);
  bool serving = false;
  for (int i = 0; i < wait_s * 10 && !serving; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    grpc::health::v1::HealthCheckResponse r;
    grpc::Status s = health->Check(&ctx, {}, &r);
    serving = s.ok() && r.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    if (!serving) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!serving) {
    std::fprintf(stderr, "kvtier_demo: %s is not SERVING after %d s\n", target.c_str(), wait_s);
    return 1;
  }
  if (health_only) return 0;
  auto stub = kvtier::v1::KvTier::NewStub(channel);

  const kvtier::v1::Layout layout = kvtier::rpc::MhaLayout(layers, kv_heads, q_heads, head_dim);
  const std::string salt = "demo-tenant";
  {
    grpc::ClientContext ctx;
    kvtier::rpc::Prepare(&ctx, call);
    kvtier::v1::CreateNamespaceRequest req;
    auto* ns = req.mutable_namespace_();
    ns->set_name(ns_name);
    ns->set_model_id("synthetic-gqa-8l");
    *ns->mutable_layout() = layout;
    ns->set_codec(codec);
    ns->set_tokens_per_chunk(tpc);
    ns->set_salt(salt);
    kvtier::v1::CreateNamespaceResponse resp;
    grpc::Status s = stub->CreateNamespace(&ctx, req, &resp);
    if (!s.ok()) {
      std::fprintf(stderr, "CreateNamespace: %s\n", s.error_message().c_str());
      return 1;
    }
    std::printf("namespace %s: %u layers x %u KV heads x %u dims fp16, %u tokens/chunk "
                "(%.1f MiB raw per chunk), codec %s%s\n",
                ns_name.c_str(), layers, kv_heads, head_dim, tpc,
                kvtier::rpc::TensorBytes(layout, tpc) / 1048576.0, resp.namespace_().codec().c_str(),
                resp.created() ? "" : " (existing)");
  }

  // The conversation: a system prompt, then user/assistant turns; token ids are synthetic.
  std::mt19937 rng(7);
  std::vector<uint32_t> conversation(700);
  for (auto& t : conversation) t = rng() % 128000;
  uint64_t tokens_requested = 0, tokens_hit = 0, tensor_bytes = 0, stored_bytes = 0;
  uint64_t fetched_bytes = 0, chunks_put = 0, chunks_fetched = 0;
  double rmse_sum = 0;
  const uint64_t chunk_bytes = kvtier::rpc::TensorBytes(layout, tpc);
  std::printf("%-5s %-14s %-14s %-10s %-12s %-10s\n", "turn", "prompt tokens", "cached tokens",
              "hit rate", "fetched", "stored");
  for (uint32_t turn = 1; turn <= turns; ++turn) {
    for (int i = 0; i < 250; ++i) conversation.push_back(rng() % 128000);  // user message
    std::vector<kvtier::ChunkKey> keys =
        kvtier::ComputeChunkKeys(conversation, salt, tpc, /*include_partial_tail=*/false);
    grpc::ClientContext ctx;
    kvtier::rpc::Prepare(&ctx, call);
    kvtier::v1::LookupRequest lreq;
    lreq.set_namespace_(ns_name);
    for (const auto& k : keys) lreq.add_keys(std::string(k.view()));
    lreq.set_lease_ms(10000);
    kvtier::v1::LookupResponse lresp;
    grpc::Status s = stub->Lookup(&ctx, lreq, &lresp);
    if (!s.ok()) {
      std::fprintf(stderr, "Lookup: %s\n", s.error_message().c_str());
      return 1;
    }
    const uint32_t hit = lresp.prefix_chunks();
    // Fetch the cached prefix, decoded by the daemon into the engine's layout.
    for (uint32_t i = 0; i < hit; ++i) {
      auto g = kvtier::rpc::Get(stub.get(), ns_name, std::string(keys[i].view()),
                                kvtier::v1::DATA_FORMAT_TENSOR, call,
                                i + 1 == hit ? lresp.lease_id() : 0);
      if (!g.status.ok() || !g.crc_ok) {
        std::fprintf(stderr, "Get chunk %u: %s\n", i, g.status.error_message().c_str());
        return 1;
      }
      fetched_bytes += g.data.size();
      ++chunks_fetched;
      rmse_sum += RelativeRmse(kvtier::rpc::SyntheticFp16(chunk_bytes, KeySeed(keys[i])), g.data);
    }
    // "Prefill" the rest and store it.
    uint64_t turn_stored = 0;
    for (uint32_t i = hit; i < keys.size(); ++i) {
      const std::string kv = kvtier::rpc::SyntheticFp16(chunk_bytes, KeySeed(keys[i]));
      auto p = kvtier::rpc::Put(stub.get(), ns_name, std::string(keys[i].view()), kv,
                                kvtier::v1::DATA_FORMAT_TENSOR, tpc, call);
      if (!p.status.ok()) {
        std::fprintf(stderr, "Put chunk %u: %s\n", i, p.status.error_message().c_str());
        return 1;
      }
      tensor_bytes += p.response.tensor_bytes();
      stored_bytes += p.response.stored_bytes();
      turn_stored += p.response.stored_bytes();
      ++chunks_put;
    }
    tokens_requested += static_cast<uint64_t>(keys.size()) * tpc;
    tokens_hit += static_cast<uint64_t>(hit) * tpc;
    std::printf("%-5u %-14zu %-14u %-10s %-12s %-10s\n", turn, conversation.size(), hit * tpc,
                (std::to_string(keys.empty() ? 0 : 100 * hit / keys.size()) + "%").c_str(),
                (std::to_string(hit) + " chunks").c_str(),
                (std::to_string(keys.size() - hit) + " chunks").c_str());
    for (int i = 0; i < 180; ++i) conversation.push_back(rng() % 128000);  // assistant answer
  }

  kvtier::v1::StatsResponse stats;
  {
    grpc::ClientContext ctx;
    kvtier::rpc::Prepare(&ctx, call);
    stub->Stats(&ctx, {}, &stats);
  }
  std::printf("\n");
  std::printf("chunks stored:      %llu (%.1f MiB of KV in %.1f MiB of payloads)\n",
              static_cast<unsigned long long>(chunks_put), tensor_bytes / 1048576.0,
              stored_bytes / 1048576.0);
  std::printf("compression ratio:  %.2fx (codec %s)\n",
              stored_bytes ? static_cast<double>(tensor_bytes) / stored_bytes : 0.0,
              codec.c_str());
  std::printf("prefix hit rate:    %.1f%% of prompt tokens (%llu of %llu) served from the cache\n",
              tokens_requested ? 100.0 * tokens_hit / tokens_requested : 0.0,
              static_cast<unsigned long long>(tokens_hit),
              static_cast<unsigned long long>(tokens_requested));
  std::printf("fetched:            %llu chunks, %.1f MiB decoded; relative RMS error vs the "
              "original KV %.4f\n",
              static_cast<unsigned long long>(chunks_fetched), fetched_bytes / 1048576.0,
              chunks_fetched ? rmse_sum / chunks_fetched : 0.0);
  for (const auto& t : stats.tiers()) {
    std::printf("tier %-5s          %llu chunks, %.1f MiB used\n",
                kvtier::v1::Tier_Name(t.tier()).c_str() + 5,
                static_cast<unsigned long long>(t.chunks()), t.used_bytes() / 1048576.0);
  }
  std::printf("metrics:            %s\n", metrics_url.c_str());
  return 0;
}
