// kvtier: the command-line client of kvtierd (status, namespaces, lookup, put/get of .npy
// tensors, stats, a load generator and a Mooncake trace replayer). docs/API.md, "## CLI".
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "bench.h"
#include "kvtier/client/client.h"
#include "kvtier/common/logging.h"
#include "npy.h"
#include "replay.h"
#include "tensor_io.h"

namespace kvtier::cli {
namespace {

using client::Client;
using client::ClientOptions;
using client::NamespaceSpec;

// Options shared by every subcommand that talks to the daemon.
struct Connection {
  std::string target;
  bool tls = false;
  std::string ca_file;
  std::string server_name;
  std::string token_file;
  uint32_t timeout_ms = 10000;
  uint32_t attempts = 4;
};

struct LayoutFlags {
  bool mla = false;
  uint32_t layers = 32, kv_heads = 8, q_heads = 0, head_dim = 128, latent_dim = 512, rope_dim = 64;
  std::string dtype = "fp16";

  void Add(CLI::App* app) {
    app->add_flag("--mla", mla, "MLA latent layout (uses --latent-dim/--rope-dim)");
    app->add_option("--layers", layers, "number of layers")->capture_default_str();
    app->add_option("--kv-heads", kv_heads, "KV heads (MHA/GQA)")->capture_default_str();
    app->add_option("--q-heads", q_heads, "query heads (default: = kv heads)");
    app->add_option("--head-dim", head_dim, "head dimension (MHA/GQA)")->capture_default_str();
    app->add_option("--latent-dim", latent_dim, "MLA latent dimension")->capture_default_str();
    app->add_option("--rope-dim", rope_dim, "MLA rope dimension")->capture_default_str();
    app->add_option("--dtype", dtype, "fp16, bf16 or fp32")->capture_default_str();
  }
  absl::StatusOr<kernels::KvLayout> Build() const {
    kernels::DType dt;
    if (dtype == "fp16") {
      dt = kernels::DType::kFloat16;
    } else if (dtype == "bf16") {
      dt = kernels::DType::kBFloat16;
    } else if (dtype == "fp32") {
      dt = kernels::DType::kFloat32;
    } else {
      return absl::InvalidArgumentError(
          fmt::format("--dtype {} is not one of fp16, bf16, fp32", dtype));
    }
    kernels::KvLayout l = mla ? kernels::KvLayout::Mla(layers, latent_dim, rope_dim, dt)
                              : kernels::KvLayout::Mha(layers, kv_heads,
                                                       q_heads ? q_heads : kv_heads, head_dim, dt);
    if (auto st = l.Validate(); !st.ok()) return st;
    return l;
  }
};

int Fail(const absl::Status& st) {
  std::fprintf(stderr, "kvtier: error: %s\n", st.ToString().c_str());
  return 1;
}

std::string ReadFileOr(const std::string& path, absl::Status* st) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *st = absl::NotFoundError(fmt::format("cannot read {}", path));
    return {};
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::unique_ptr<Client>> Dial(const Connection& c) {
  ClientOptions o;
  o.target = c.target;
  o.tls = c.tls;
  o.tls_server_name = c.server_name;
  o.default_deadline = std::chrono::milliseconds(c.timeout_ms);
  o.connect_timeout = std::chrono::milliseconds(std::min<uint32_t>(c.timeout_ms, 5000));
  o.retry.max_attempts = c.attempts;
  absl::Status st;
  if (!c.ca_file.empty()) {
    o.tls_root_certs_pem = ReadFileOr(c.ca_file, &st);
    if (!st.ok()) return st;
  }
  if (!c.token_file.empty()) {
    std::string tok = ReadFileOr(c.token_file, &st);
    if (!st.ok()) return st;
    while (!tok.empty() && (tok.back() == '\n' || tok.back() == '\r' || tok.back() == ' ')) {
      tok.pop_back();
    }
    o.token = tok;
  }
  auto client = Client::Connect(o);
  if (!client.ok() && client.status().code() == absl::StatusCode::kUnavailable) {
    return absl::UnavailableError(fmt::format(
        "{}; point the CLI at the daemon with --target (or KVTIER_TARGET), e.g. "
        "--target unix:./data/kvtierd.sock for a kvtierd started with default settings",
        std::string(client.status().message())));
  }
  return client;
}

std::string LayoutText(const kernels::KvLayout& l) {
  if (l.kind == kernels::LayoutKind::kMla) {
    return fmt::format("mla layers={} latent_dim={} rope_dim={} dtype={}", l.num_layers,
                       l.latent_dim, l.rope_dim, kernels::DTypeName(l.dtype));
  }
  return fmt::format("mha layers={} kv_heads={} q_heads={} head_dim={} dtype={}", l.num_layers,
                     l.num_kv_heads, l.num_query_heads, l.head_dim, kernels::DTypeName(l.dtype));
}

void PrintNamespace(const NamespaceSpec& ns, bool json) {
  if (json) {
    std::printf(
        "{\"name\": \"%s\", \"model_id\": \"%s\", \"codec\": \"%s\", \"tokens_per_chunk\": %u, "
        "\"layout\": \"%s\", \"bytes_per_token\": %zu}\n",
        ns.name.c_str(), ns.model_id.c_str(), ns.codec.c_str(), ns.tokens_per_chunk,
        LayoutText(ns.layout).c_str(), ns.layout.BytesPerToken());
    return;
  }
  std::printf("%-20s codec=%-24s tokens_per_chunk=%-5u %s%s%s\n", ns.name.c_str(),
              ns.codec.c_str(), ns.tokens_per_chunk, LayoutText(ns.layout).c_str(),
              ns.model_id.empty() ? "" : " model=", ns.model_id.c_str());
}

// Key selection shared by put and get: an explicit --key, or chunk --chunk of --tokens/--tokens-file.
struct KeyFlags {
  std::string key_hex, tokens, tokens_file;
  int64_t chunk = -1;
  void Add(CLI::App* app) {
    app->add_option("--key", key_hex, "chunk key, 64 hex digits");
    app->add_option("--tokens", tokens, "prompt token ids, e.g. \"1,2,3\" (key = chained hash)");
    app->add_option("--tokens-file", tokens_file, "prompt token ids: .npy of ints or text file");
    app->add_option("--chunk", chunk, "which chunk of the prompt (default: the last full one)");
  }
  absl::StatusOr<ChunkKey> Resolve(const NamespaceSpec& ns) const {
    if (!key_hex.empty()) return ChunkKey::FromHex(key_hex);
    absl::StatusOr<std::vector<uint32_t>> toks =
        !tokens_file.empty() ? ReadTokens(tokens_file) : ParseTokens(tokens);
    if (!toks.ok()) return toks.status();
    if (toks->empty()) {
      return absl::InvalidArgumentError("give the chunk with --key HEX, --tokens or --tokens-file");
    }
    const auto keys = Client::ComputeKeys(ns, *toks);
    if (keys.empty()) {
      return absl::InvalidArgumentError(fmt::format(
          "{} tokens make no full chunk of {} tokens", toks->size(), ns.tokens_per_chunk));
    }
    const int64_t i = chunk < 0 ? static_cast<int64_t>(keys.size()) - 1 : chunk;
    if (i >= static_cast<int64_t>(keys.size())) {
      return absl::InvalidArgumentError(
          fmt::format("--chunk {} but the prompt has {} full chunks", i, keys.size()));
    }
    return keys[static_cast<size_t>(i)];
  }
};

int Main(int argc, char** argv) {
  CLI::App app{"kvtier: command-line client of the kvtierd KV-cache service"};
  app.require_subcommand(1);
  Connection conn;
  const char* env_target = std::getenv("KVTIER_TARGET");
  conn.target = env_target != nullptr ? env_target : "unix:/run/kvtier/kvtierd.sock";
  bool json = false;
  app.add_option("-t,--target", conn.target,
                 "daemon address: unix:/path/to.sock or host:port (env KVTIER_TARGET)")
      ->capture_default_str();
  app.add_flag("--tls", conn.tls, "use TLS (TCP targets)");
  app.add_option("--ca-file", conn.ca_file, "PEM file of CA certificates for TLS")
      ->check(CLI::ExistingFile);
  app.add_option("--server-name", conn.server_name, "TLS name to check (override)");
  app.add_option("--token-file", conn.token_file, "file holding the bearer token")
      ->check(CLI::ExistingFile);
  app.add_option("--timeout-ms", conn.timeout_ms, "deadline of each call")->capture_default_str();
  app.add_option("--attempts", conn.attempts, "attempts per call (retries on UNAVAILABLE only)")
      ->capture_default_str();
  app.add_flag("--json", json, "machine-readable output");

  int rc = 0;
  auto with_client = [&](const std::function<int(Client&)>& fn) {
    auto c = Dial(conn);
    if (!c.ok()) {
      rc = Fail(c.status());
      return;
    }
    rc = fn(**c);
  };

  // ---- status ----
  auto* status = app.add_subcommand("status", "health, version and tier usage of the daemon");
  status->callback([&] {
    with_client([&](Client& c) {
      auto healthy = c.Healthy();
      if (!healthy.ok()) return Fail(healthy.status());
      auto stats = c.Stats();
      if (!stats.ok()) return Fail(stats.status());
      if (json) {
        std::printf("{\"serving\": %s, \"version\": \"%s\", \"namespaces\": %u, \"gpu_tier\": %s}\n",
                    *healthy ? "true" : "false", stats->version.c_str(), stats->namespaces,
                    stats->gpu_tier ? "true" : "false");
      } else {
        std::printf("kvtierd %s at %s: %s\n", stats->version.c_str(), conn.target.c_str(),
                    *healthy ? "SERVING" : "NOT SERVING");
        std::printf("namespaces %u, gpu tier %s\n", stats->namespaces,
                    stats->gpu_tier ? "on" : "off");
        for (const auto& t : stats->tiers) {
          std::printf("  %-5s %12llu / %12llu bytes, %llu chunks\n", client::TierName(t.tier),
                      static_cast<unsigned long long>(t.used_bytes),
                      static_cast<unsigned long long>(t.capacity_bytes),
                      static_cast<unsigned long long>(t.chunks));
        }
      }
      return *healthy ? 0 : 3;
    });
  });

  // ---- ns ----
  auto* ns_cmd = app.add_subcommand("ns", "namespaces: create, list, show");
  ns_cmd->require_subcommand(1);
  NamespaceSpec create_spec;
  LayoutFlags create_layout;
  auto* ns_create = ns_cmd->add_subcommand("create", "create a namespace (idempotent)");
  ns_create->add_option("name", create_spec.name, "namespace name [A-Za-z0-9._-]")->required();
  ns_create->add_option("--model", create_spec.model_id, "model id (informational)");
  ns_create->add_option("--codec", create_spec.codec, "codec: raw, fp8, kivi:b=2,g=32, ...")
      ->capture_default_str();
  ns_create->add_option("--tokens-per-chunk", create_spec.tokens_per_chunk,
                        "tokens per chunk (0 = daemon default, 256)");
  ns_create->add_option("--salt", create_spec.salt, "tenant salt folded into keys");
  create_layout.Add(ns_create);
  ns_create->callback([&] {
    with_client([&](Client& c) {
      auto layout = create_layout.Build();
      if (!layout.ok()) return Fail(layout.status());
      create_spec.layout = *layout;
      auto r = c.CreateNamespace(create_spec);
      if (!r.ok()) return Fail(r.status());
      PrintNamespace(*r, json);
      return 0;
    });
  });
  auto* ns_list = ns_cmd->add_subcommand("list", "list namespaces");
  ns_list->callback([&] {
    with_client([&](Client& c) {
      auto r = c.ListNamespaces();
      if (!r.ok()) return Fail(r.status());
      for (const auto& ns : *r) PrintNamespace(ns, json);
      if (r->empty() && !json) std::printf("no namespaces (create one with: kvtier ns create)\n");
      return 0;
    });
  });
  std::string show_name;
  auto* ns_show = ns_cmd->add_subcommand("show", "show one namespace");
  ns_show->add_option("name", show_name, "namespace name")->required();
  ns_show->callback([&] {
    with_client([&](Client& c) {
      auto r = c.GetNamespace(show_name);
      if (!r.ok()) return Fail(r.status());
      PrintNamespace(*r, json);
      if (!json) {
        std::printf("bytes per token %zu, chunk bytes %zu (uncompressed)\n",
                    r->layout.BytesPerToken(), r->layout.ChunkBytes(r->tokens_per_chunk));
      }
      return 0;
    });
  });

  // ---- lookup ----
  std::string lookup_ns, lookup_tokens, lookup_tokens_file;
  uint32_t lookup_lease = 0;
  auto* lookup = app.add_subcommand("lookup", "longest cached prefix of a prompt");
  lookup->add_option("namespace", lookup_ns, "namespace name")->required();
  lookup->add_option("--tokens", lookup_tokens, "token ids, e.g. \"1,2,3\"");
  lookup->add_option("--tokens-file", lookup_tokens_file, "token ids: .npy of ints or text file");
  lookup->add_option("--lease-ms", lookup_lease, "pin the hits for this long");
  lookup->callback([&] {
    with_client([&](Client& c) {
      auto ns = c.GetNamespace(lookup_ns);
      if (!ns.ok()) return Fail(ns.status());
      auto toks = !lookup_tokens_file.empty() ? ReadTokens(lookup_tokens_file)
                                              : ParseTokens(lookup_tokens);
      if (!toks.ok()) return Fail(toks.status());
      if (toks->empty()) {
        return Fail(absl::InvalidArgumentError("give the prompt with --tokens or --tokens-file"));
      }
      const auto keys = Client::ComputeKeys(*ns, *toks);
      client::CallStats st;
      auto r = c.Lookup(lookup_ns, keys, lookup_lease, {{}, &st});
      if (!r.ok()) return Fail(r.status());
      if (json) {
        std::printf("{\"chunks\": %zu, \"prefix_chunks\": %u, \"prefix_tokens\": %llu, "
                    "\"lease_id\": %llu, \"latency_us\": %.1f}\n",
                    keys.size(), r->prefix_chunks,
                    static_cast<unsigned long long>(r->prefix_tokens),
                    static_cast<unsigned long long>(r->lease_id), st.latency.count() / 1e3);
      } else {
        std::printf("%u of %zu full chunks cached (%llu tokens)%s\n", r->prefix_chunks,
                    keys.size(), static_cast<unsigned long long>(r->prefix_tokens),
                    r->lease_id ? fmt::format(", lease {}", r->lease_id).c_str() : "");
        for (size_t i = 0; i < keys.size(); ++i) {
          std::printf("  chunk %-4zu %s %s\n", i, keys[i].ToHex().c_str(),
                      i < r->tiers.size() ? client::TierName(r->tiers[i]) : "miss");
        }
      }
      return 0;
    });
  });

  // ---- put ----
  std::string put_ns, put_in;
  KeyFlags put_key;
  client::PutOptions put_opts;
  auto* put = app.add_subcommand("put", "store one chunk from an .npy tensor");
  put->add_option("namespace", put_ns, "namespace name")->required();
  put->add_option("--in", put_in,
                  "tensor .npy shaped (layers, 2, kv_heads, tokens, head_dim) or MLA "
                  "(layers, tokens, latent+rope), in the namespace dtype")
      ->required()
      ->check(CLI::ExistingFile);
  put_key.Add(put);
  put->add_option("--first-position", put_opts.first_position, "position of the first token");
  put->add_flag("--ends-sequence", put_opts.ends_sequence, "the chunk ends its sequence");
  put->add_flag("--pin", put_opts.pin, "keep it unevictable until unpinned");
  put->callback([&] {
    with_client([&](Client& c) {
      auto ns = c.GetNamespace(put_ns);
      if (!ns.ok()) return Fail(ns.status());
      auto key = put_key.Resolve(*ns);
      if (!key.ok()) return Fail(key.status());
      auto arr = ReadNpy(put_in);
      if (!arr.ok()) return Fail(arr.status());
      auto tokens = ChunkTokens(*arr, ns->layout);
      if (!tokens.ok()) return Fail(tokens.status());
      put_opts.num_tokens = *tokens;
      client::CallStats st;
      auto r = c.Put(put_ns, *key, arr->data, put_opts, {{}, &st});
      if (!r.ok()) return Fail(r.status());
      if (json) {
        std::printf("{\"key\": \"%s\", \"tensor_bytes\": %llu, \"stored_bytes\": %llu, "
                    "\"tier\": \"%s\", \"replaced\": %s, \"latency_us\": %.1f}\n",
                    key->ToHex().c_str(), static_cast<unsigned long long>(r->tensor_bytes),
                    static_cast<unsigned long long>(r->stored_bytes), client::TierName(r->tier),
                    r->replaced ? "true" : "false", st.latency.count() / 1e3);
      } else {
        std::printf("stored %s: %llu bytes -> %llu (%.2fx) in %s%s\n", key->ToHex().c_str(),
                    static_cast<unsigned long long>(r->tensor_bytes),
                    static_cast<unsigned long long>(r->stored_bytes),
                    r->stored_bytes ? double(r->tensor_bytes) / r->stored_bytes : 0.0,
                    client::TierName(r->tier), r->replaced ? " (replaced)" : "");
      }
      return 0;
    });
  });

  // ---- get ----
  std::string get_ns, get_out;
  KeyFlags get_key;
  bool get_payload = false;
  auto* get = app.add_subcommand("get", "fetch one chunk into an .npy file");
  get->add_option("namespace", get_ns, "namespace name")->required();
  get->add_option("--out", get_out, "output .npy path")->required();
  get_key.Add(get);
  get->add_flag("--payload", get_payload,
                "write the compressed payload (uint8 array) instead of the decoded tensor");
  get->callback([&] {
    with_client([&](Client& c) {
      auto ns = c.GetNamespace(get_ns);
      if (!ns.ok()) return Fail(ns.status());
      auto key = get_key.Resolve(*ns);
      if (!key.ok()) return Fail(key.status());
      client::GetOptions g;
      g.format = get_payload ? client::DataFormat::kPayload : client::DataFormat::kTensor;
      auto r = c.Get(get_ns, *key, g);
      if (!r.ok()) return Fail(r.status());
      NpyArray arr;
      if (get_payload) {
        arr.descr = "|u1";
        arr.shape = {r->data.size()};
      } else {
        arr.descr = NpyDescr(r->layout.dtype);
        arr.shape = ChunkShape(r->layout, r->num_tokens);
      }
      arr.data = std::move(r->data);
      if (auto st = WriteNpy(get_out, arr); !st.ok()) return Fail(st);
      if (json) {
        std::printf("{\"out\": \"%s\", \"bytes\": %zu, \"num_tokens\": %u, \"codec\": \"%s\", "
                    "\"tier\": \"%s\", \"payload_bytes\": %llu}\n",
                    get_out.c_str(), arr.data.size(), r->num_tokens, r->codec.c_str(),
                    client::TierName(r->tier), static_cast<unsigned long long>(r->payload_bytes));
      } else {
        std::printf("wrote %s: %u tokens, %zu bytes (stored %llu bytes as %s, from %s)\n",
                    get_out.c_str(), r->num_tokens, arr.data.size(),
                    static_cast<unsigned long long>(r->payload_bytes), r->codec.c_str(),
                    client::TierName(r->tier));
      }
      return 0;
    });
  });

  // ---- stats ----
  auto* stats = app.add_subcommand("stats", "daemon counters: tiers, hits, ingest");
  stats->callback([&] {
    with_client([&](Client& c) {
      auto s = c.Stats();
      if (!s.ok()) return Fail(s.status());
      const double hit = s->lookup_tokens_requested
                             ? double(s->lookup_tokens_hit) / s->lookup_tokens_requested
                             : 0.0;
      if (json) {
        std::string tiers;
        for (const auto& t : s->tiers) {
          tiers += fmt::format(
              "{}{{\"tier\": \"{}\", \"capacity_bytes\": {}, \"used_bytes\": {}, \"chunks\": {}, "
              "\"hits\": {}, \"misses\": {}, \"evictions\": {}}}",
              tiers.empty() ? "" : ", ", client::TierName(t.tier), t.capacity_bytes,
              t.used_bytes, t.chunks, t.hits, t.misses, t.evictions);
        }
        std::printf("{\"version\": \"%s\", \"namespaces\": %u, \"pinned_chunks\": %llu, "
                    "\"active_leases\": %llu, \"lookup_tokens_requested\": %llu, "
                    "\"lookup_tokens_hit\": %llu, \"ingest_tensor_bytes\": %llu, "
                    "\"ingest_payload_bytes\": %llu, \"tiers\": [%s]}\n",
                    s->version.c_str(), s->namespaces,
                    static_cast<unsigned long long>(s->pinned_chunks),
                    static_cast<unsigned long long>(s->active_leases),
                    static_cast<unsigned long long>(s->lookup_tokens_requested),
                    static_cast<unsigned long long>(s->lookup_tokens_hit),
                    static_cast<unsigned long long>(s->ingest_tensor_bytes),
                    static_cast<unsigned long long>(s->ingest_payload_bytes), tiers.c_str());
        return 0;
      }
      std::printf("version %s, %u namespaces, %llu pinned chunks, %llu active leases\n",
                  s->version.c_str(), s->namespaces,
                  static_cast<unsigned long long>(s->pinned_chunks),
                  static_cast<unsigned long long>(s->active_leases));
      std::printf("lookup tokens: %llu requested, %llu hit (%.3f)\n",
                  static_cast<unsigned long long>(s->lookup_tokens_requested),
                  static_cast<unsigned long long>(s->lookup_tokens_hit), hit);
      std::printf("ingest: %llu tensor bytes -> %llu payload bytes\n",
                  static_cast<unsigned long long>(s->ingest_tensor_bytes),
                  static_cast<unsigned long long>(s->ingest_payload_bytes));
      std::printf("%-5s %14s %14s %10s %10s %10s %10s\n", "tier", "used", "capacity", "chunks",
                  "hits", "misses", "evictions");
      for (const auto& t : s->tiers) {
        std::printf("%-5s %14llu %14llu %10llu %10llu %10llu %10llu\n", client::TierName(t.tier),
                    static_cast<unsigned long long>(t.used_bytes),
                    static_cast<unsigned long long>(t.capacity_bytes),
                    static_cast<unsigned long long>(t.chunks),
                    static_cast<unsigned long long>(t.hits),
                    static_cast<unsigned long long>(t.misses),
                    static_cast<unsigned long long>(t.evictions));
      }
      return 0;
    });
  });

  // ---- bench ----
  NamespaceSpec bench_ns;
  bench_ns.name = "kvtier-bench";
  LayoutFlags bench_layout;
  bench_layout.layers = 8;
  BenchOptions bench_opts;
  std::string bench_sizes = "256", bench_mode = "mixed", bench_json;
  double bench_seconds = 5;
  auto* bench = app.add_subcommand("bench", "load generator: throughput and latency percentiles");
  bench->add_option("--ns", bench_ns.name, "namespace to use (created if missing)")
      ->capture_default_str();
  bench->add_option("--codec", bench_ns.codec, "codec of a namespace the bench creates")
      ->capture_default_str();
  bench_layout.Add(bench);
  bench->add_option("--sizes", bench_sizes, "chunk sizes in tokens, comma-separated")
      ->capture_default_str();
  bench->add_option("--concurrency", bench_opts.concurrency, "parallel callers")
      ->capture_default_str();
  bench->add_option("--duration", bench_seconds, "seconds to run")->capture_default_str();
  bench->add_option("--mode", bench_mode, "put, get or mixed")->capture_default_str();
  bench->add_option("--seed", bench_opts.seed, "key seed (distinct runs use distinct keys)");
  bench->add_option("--json-out", bench_json, "also write the report as JSON to this file");
  bench->callback([&] {
    with_client([&](Client& c) {
      auto sizes = ParseTokens(bench_sizes);
      if (!sizes.ok()) return Fail(sizes.status());
      bench_opts.sizes_tokens = *sizes;
      bench_opts.duration = std::chrono::milliseconds(static_cast<int64_t>(bench_seconds * 1000));
      if (bench_mode == "put") {
        bench_opts.mode = BenchMode::kPut;
      } else if (bench_mode == "get") {
        bench_opts.mode = BenchMode::kGet;
      } else if (bench_mode == "mixed") {
        bench_opts.mode = BenchMode::kMixed;
      } else {
        return Fail(absl::InvalidArgumentError("--mode must be put, get or mixed"));
      }
      auto layout = bench_layout.Build();
      if (!layout.ok()) return Fail(layout.status());
      bench_ns.layout = *layout;
      auto ns = c.GetNamespace(bench_ns.name);
      if (!ns.ok() && ns.status().code() == absl::StatusCode::kNotFound) {
        ns = c.CreateNamespace(bench_ns);
      }
      if (!ns.ok()) return Fail(ns.status());
      auto r = RunBench(c, *ns, bench_opts);
      if (!r.ok()) return Fail(r.status());
      std::printf("%s", json ? (r->ToJson() + "\n").c_str() : r->ToText().c_str());
      if (!bench_json.empty()) std::ofstream(bench_json) << r->ToJson() << "\n";
      return r->errors == 0 ? 0 : 4;
    });
  });

  // ---- replay ----
  std::string trace_path, replay_json, replay_format = "payload";
  NamespaceSpec replay_ns;
  replay_ns.name = "kvtier-replay";
  replay_ns.tokens_per_chunk = 512;
  LayoutFlags replay_layout;
  replay_layout.layers = 2;
  replay_layout.kv_heads = 1;
  replay_layout.head_dim = 64;
  ReplayOptions replay_opts;
  size_t replay_limit = 0;
  bool no_progress = false;
  auto* replay = app.add_subcommand(
      "replay", "replay a Mooncake-format trace (JSON lines) against the daemon");
  replay->add_option("trace", trace_path, "TRACE.jsonl (timestamp, input_length, hash_ids)")
      ->required()
      ->check(CLI::ExistingFile);
  replay->add_option("--ns", replay_ns.name, "namespace (created if missing)")
      ->capture_default_str();
  replay->add_option("--codec", replay_ns.codec, "codec of a namespace replay creates")
      ->capture_default_str();
  replay->add_option("--block-tokens", replay_ns.tokens_per_chunk,
                     "tokens per trace block = tokens per chunk")
      ->capture_default_str();
  replay_layout.Add(replay);
  replay->add_option("--speed", replay_opts.speed,
                     "honour timestamps sped up by this factor; 0 = as fast as possible")
      ->capture_default_str();
  replay->add_option("--concurrency", replay_opts.concurrency, "requests in flight")
      ->capture_default_str();
  replay->add_option("--limit", replay_limit, "replay only the first N requests (0 = all)");
  replay->add_option("--get-format", replay_format, "payload (compressed) or tensor (decoded)")
      ->capture_default_str();
  replay->add_flag("--verify", replay_opts.verify,
                   "fetch tensors and compare with the synthetic KV (raw codec only)");
  replay->add_option("--lease-ms", replay_opts.lease_ms, "lease hits between Lookup and Get");
  replay->add_flag("--no-progress", no_progress, "no progress bar");
  replay->add_option("--json-out", replay_json, "also write the report as JSON to this file");
  replay->callback([&] {
    with_client([&](Client& c) {
      if (replay_format == "payload") {
        replay_opts.get_format = client::DataFormat::kPayload;
      } else if (replay_format == "tensor") {
        replay_opts.get_format = client::DataFormat::kTensor;
      } else {
        return Fail(absl::InvalidArgumentError("--get-format must be payload or tensor"));
      }
      replay_opts.progress = !no_progress;
      auto trace = ReadTrace(trace_path, replay_limit);
      if (!trace.ok()) return Fail(trace.status());
      auto layout = replay_layout.Build();
      if (!layout.ok()) return Fail(layout.status());
      replay_ns.layout = *layout;
      auto ns = c.GetNamespace(replay_ns.name);
      if (!ns.ok() && ns.status().code() == absl::StatusCode::kNotFound) {
        ns = c.CreateNamespace(replay_ns);
      }
      if (!ns.ok()) return Fail(ns.status());
      if (replay_opts.verify && ns->codec != "raw") {
        return Fail(absl::InvalidArgumentError(fmt::format(
            "--verify compares exact bytes, but namespace {} uses the lossy codec {}; replay "
            "into a raw namespace (--ns NEW --codec raw) or drop --verify",
            ns->name, ns->codec)));
      }
      auto r = Replay(c, *ns, *trace, replay_opts);
      if (!r.ok()) return Fail(r.status());
      std::printf("%s", json ? (r->ToJson() + "\n").c_str() : r->ToText().c_str());
      if (!replay_json.empty()) std::ofstream(replay_json) << r->ToJson() << "\n";
      if (r->verify_failures > 0) return 5;
      return r->errors == 0 ? 0 : 4;
    });
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help prints and exits 0; any other parse error is a usage error (exit 2).
    return app.exit(e) == 0 ? 0 : 2;
  }
  return rc;
}

}  // namespace
}  // namespace kvtier::cli

int main(int argc, char** argv) { return kvtier::cli::Main(argc, argv); }
