// replay: replays the Mooncake synthetic trace (512-token blocks) against the storage engine,
// in process, with a synthetic payload per block, and reports token hit rates per tier, bytes
// moved between tiers and evictions for each eviction policy, next to an exact-LRU model and the
// infinite-cache ceiling; then the hit rate that payload compression buys at equal bytes.
//
// usage: replay <trace.jsonl> [--bytes-per-token=N] [--disk-bytes-per-token=N] [--quick]
//                             [--json=FILE]
// Exit status: 0, 3 when policy "lru" does not match the exact-LRU model, 77 without the trace.
// Figures: docs/BENCHMARKS.md, "Trace replay".
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kvtier/storage/tier_manager.h"
#include "replay_trace.h"

namespace kvtier::bench {
namespace {

using storage::ChunkMeta;
using storage::LookupResult;
using storage::PutOptions;
using storage::TierIndex;
using storage::TierKind;
using storage::TierManager;
using storage::TierManagerOptions;

ChunkKey BlockKey(uint64_t id) {
  std::array<uint8_t, ChunkKey::kSize> b{};
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(id >> (8 * i));
  b[31] = 0xb1;
  return ChunkKey(b);
}

struct RunResult {
  double hit_rate = 0;                  // Token hit rate, all tiers.
  double tier_hit_rate[storage::kNumTiers] = {0, 0, 0};
  uint64_t evictions[storage::kNumTiers] = {0, 0, 0};
  uint64_t bytes_demoted = 0;
  uint64_t bytes_promoted = 0;
  uint64_t bytes_put = 0;
  double seconds = 0;
};

struct RunConfig {
  std::string policy = "lru";
  double small_fraction = 0.25;
  uint64_t host_bytes = 0;
  uint64_t disk_bytes = 0;  // 0: no disk tier.
  uint64_t payload_bytes = 1024;
};

RunResult Run(const std::vector<TraceRequest>& trace, const RunConfig& cfg) {
  TierManagerOptions o;
  o.policy = cfg.policy;
  o.s3fifo_small_fraction = cfg.small_fraction;
  o.host.capacity_bytes = cfg.host_bytes;
  o.host.alignment = 64;
  o.host.pin_memory = false;
  o.background_threads = 0;  // Deterministic: movement happens inline.
  o.max_chunk_bytes = cfg.payload_bytes;
  std::string dir;
  if (cfg.disk_bytes > 0) {
    char tmpl[] = "/tmp/kvtier-replay-XXXXXX";
    dir = mkdtemp(tmpl);
    o.disk.path = dir + "/db";
    o.disk.capacity_bytes = cfg.disk_bytes;
    o.disk.min_blob_size = 512;
  }
  RunResult result;
  {
    auto created = TierManager::Create(o);
    if (!created.ok()) {
      fmt::print(stderr, "replay: {}\n", created.status().ToString());
      std::exit(1);
    }
    auto tm = std::move(created).value();
    std::vector<uint8_t> payload(cfg.payload_bytes);
    for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 131 + 7);
    uint64_t total_tokens = 0;
    uint64_t tier_tokens[storage::kNumTiers] = {0, 0, 0};
    std::vector<ChunkKey> keys;
    const auto start = std::chrono::steady_clock::now();
    for (const TraceRequest& r : trace) {
      total_tokens += r.input_tokens;
      keys.clear();
      for (uint64_t b : r.blocks) keys.push_back(BlockKey(b));
      LookupResult lr = tm->Lookup(0, keys);
      for (uint32_t i = 0; i < lr.hits; ++i) {
        tier_tokens[TierIndex(lr.tiers[i])] += r.BlockTokens(i);
        // The engine fetches what it hits; a fetch from a lower tier promotes.
        if (lr.tiers[i] != TierKind::kHost && !tm->Get(0, keys[i]).ok()) {
          fmt::print(stderr, "replay: a looked-up chunk could not be read\n");
        }
      }
      // The engine computed the rest of the prompt; it stores every block not cached yet.
      for (size_t i = lr.hits; i < keys.size(); ++i) {
        if (tm->Contains(0, keys[i])) continue;
        PutOptions po;
        if (i > 0) po.parent = keys[i - 1];
        ChunkMeta meta{0, static_cast<uint32_t>(r.BlockTokens(i)), 0};
        absl::Status s = tm->Put(0, keys[i], payload, meta, po);
        if (s.ok()) result.bytes_put += payload.size();
      }
    }
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    auto s = tm->Stats();
    uint64_t hit_tokens = 0;
    for (int t = 0; t < storage::kNumTiers; ++t) {
      result.tier_hit_rate[t] = static_cast<double>(tier_tokens[t]) / total_tokens;
      hit_tokens += tier_tokens[t];
      result.evictions[t] = s.tiers[t].evictions;
    }
    result.hit_rate = static_cast<double>(hit_tokens) / total_tokens;
    result.bytes_demoted = s.bytes_demoted;
    result.bytes_promoted = s.bytes_promoted;
  }
  if (!dir.empty()) std::filesystem::remove_all(dir);
  return result;
}

double ModelHitRate(const std::vector<TraceRequest>& trace, uint64_t capacity_blocks,
                    uint64_t* evictions) {
  ExactLruModel model(capacity_blocks);
  uint64_t hit = 0, total = 0;
  for (const TraceRequest& r : trace) {
    total += r.input_tokens;
    const size_t hits = model.Request(r.blocks);
    for (size_t i = 0; i < hits; ++i) hit += r.BlockTokens(i);
  }
  if (evictions != nullptr) *evictions = model.evictions();
  return static_cast<double>(hit) / total;
}

std::string Pct(double x) { return fmt::format("{:.1f}%", 100 * x); }
std::string MiB(uint64_t b) { return fmt::format("{:.1f} MiB", b / 1048576.0); }

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) {
  using namespace kvtier::bench;
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: replay <trace.jsonl> [--bytes-per-token=N] [--disk-bytes-per-token=N] "
                 "[--quick] [--json=FILE]\n");
    return 2;
  }
  uint64_t bytes_per_token = 64;       // Host-only runs: 32 KiB per fp16 block.
  uint64_t disk_bytes_per_token = 4;   // Host+disk runs: small blocks keep RocksDB I/O modest.
  bool quick = false;
  std::string json_path;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--bytes-per-token=", 0) == 0) bytes_per_token = std::stoull(a.substr(18));
    else if (a.rfind("--disk-bytes-per-token=", 0) == 0) disk_bytes_per_token = std::stoull(a.substr(23));
    else if (a == "--quick") quick = true;
    else if (a.rfind("--json=", 0) == 0) json_path = a.substr(7);
    else {
      std::fprintf(stderr, "replay: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (!std::filesystem::exists(argv[1])) {
    std::fprintf(stderr, "replay: trace %s not found; skipping\n", argv[1]);
    return 77;  // ctest's "skipped".
  }
  std::vector<TraceRequest> trace;
  try {
    trace = LoadTrace(argv[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "replay: %s\n", e.what());
    return 1;
  }
  if (quick && trace.size() > 500) trace.resize(500);
  const uint64_t block_bytes = kTraceBlockTokens * bytes_per_token;
  const double infinite = InfiniteCacheTokenHitRate(trace);
  std::string json = "{\n";
  json += fmt::format("  \"requests\": {}, \"bytes_per_token\": {}, \"infinite_hit_rate\": {:.4f},\n",
                      trace.size(), bytes_per_token, infinite);

  // 1. Policies against the exact-LRU model, one host tier.
  fmt::print("## Policies vs exact LRU (host tier only, {} B/token, {} requests)\n\n",
             bytes_per_token, trace.size());
  fmt::print("infinite-cache ceiling: {}\n\n", Pct(infinite));
  fmt::print("| capacity (tokens) | exact-LRU model | lru | prefix_lru | s3fifo (small 10%) | s3fifo (small 25%, default) | lru == model |\n");
  fmt::print("| ---: | ---: | ---: | ---: | ---: | ---: | :---: |\n");
  json += "  \"policies\": [\n";
  bool all_match = true;
  const std::vector<uint64_t> capacities_tokens =
      quick ? std::vector<uint64_t>{1'000'000} : std::vector<uint64_t>{500'000, 1'000'000, 2'000'000, 3'000'000, 5'000'000};
  for (size_t ci = 0; ci < capacities_tokens.size(); ++ci) {
    const uint64_t tokens = capacities_tokens[ci];
    const uint64_t blocks = tokens / kTraceBlockTokens;
    uint64_t model_evictions = 0;
    const double model = ModelHitRate(trace, blocks, &model_evictions);
    RunConfig cfg;
    cfg.host_bytes = blocks * block_bytes;
    cfg.payload_bytes = block_bytes;
    std::vector<RunResult> runs;
    for (const char* p : {"lru", "prefix_lru", "s3fifo"}) {
      cfg.policy = p;
      runs.push_back(Run(trace, cfg));
    }
    cfg.small_fraction = 0.10;
    runs.push_back(Run(trace, cfg));  // S3-FIFO with the paper's 10% small queue.
    const bool match = std::fabs(runs[0].hit_rate - model) < 1e-12 &&
                       runs[0].evictions[TierIndex(TierKind::kHost)] == model_evictions;
    all_match = all_match && match;
    fmt::print("| {} | {} | {} | {} | {} | {} | {} |\n", tokens, Pct(model),
               Pct(runs[0].hit_rate), Pct(runs[1].hit_rate), Pct(runs[3].hit_rate),
               Pct(runs[2].hit_rate), match ? "yes" : "NO");
    json += fmt::format(
        "    {{\"capacity_tokens\": {}, \"model_lru\": {:.5f}, \"lru\": {:.5f}, \"prefix_lru\": "
        "{:.5f}, \"s3fifo_small10\": {:.5f}, \"s3fifo\": {:.5f}, \"lru_matches_model\": {}}}{}\n",
        tokens, model, runs[0].hit_rate, runs[1].hit_rate, runs[3].hit_rate, runs[2].hit_rate,
        match ? "true" : "false", ci + 1 < capacities_tokens.size() ? "," : "");
  }
  json += "  ],\n";

  // 2. Two tiers: host + RocksDB disk.
  const uint64_t disk_block = kTraceBlockTokens * disk_bytes_per_token;
  const uint64_t host_tokens = 1'000'000, disk_tokens = 4'000'000;
  fmt::print("\n## Host + disk tiers (host {} tokens, disk {} tokens, {} B/token)\n\n", host_tokens,
             disk_tokens, disk_bytes_per_token);
  fmt::print("| policy | host hits | disk hits | total | demoted | promoted | host evictions | disk evictions | replay time |\n");
  fmt::print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
  json += "  \"two_tier\": [\n";
  const std::vector<std::string> two_tier_policies =
      quick ? std::vector<std::string>{"prefix_lru"} : std::vector<std::string>{"lru", "prefix_lru", "s3fifo"};
  for (size_t pi = 0; pi < two_tier_policies.size(); ++pi) {
    RunConfig cfg;
    cfg.policy = two_tier_policies[pi];
    cfg.host_bytes = host_tokens / kTraceBlockTokens * disk_block;
    cfg.disk_bytes = disk_tokens / kTraceBlockTokens * disk_block;
    cfg.payload_bytes = disk_block;
    RunResult r = Run(trace, cfg);
    const int h = TierIndex(TierKind::kHost), d = TierIndex(TierKind::kDisk);
    fmt::print("| {} | {} | {} | {} | {} | {} | {} | {} | {:.1f} s |\n", cfg.policy,
               Pct(r.tier_hit_rate[h]), Pct(r.tier_hit_rate[d]), Pct(r.hit_rate),
               MiB(r.bytes_demoted), MiB(r.bytes_promoted), r.evictions[h], r.evictions[d],
               r.seconds);
    json += fmt::format(
        "    {{\"policy\": \"{}\", \"host\": {:.5f}, \"disk\": {:.5f}, \"total\": {:.5f}, "
        "\"bytes_demoted\": {}, \"bytes_promoted\": {}, \"host_evictions\": {}, "
        "\"disk_evictions\": {}}}{}\n",
        cfg.policy, r.tier_hit_rate[h], r.tier_hit_rate[d], r.hit_rate, r.bytes_demoted,
        r.bytes_promoted, r.evictions[h], r.evictions[d],
        pi + 1 < two_tier_policies.size() ? "," : "");
  }
  json += "  ],\n";

  // 3. Compression at equal bytes: the host tier holds what 1M fp16 tokens would take.
  struct Codec {
    const char* name;
    double ratio;
  };
  const Codec codecs[] = {{"fp16 (raw)", 1.0}, {"fp8", 2.0}, {"kivi-4", 3.2},
                          {"turboquant-3", 4.9}, {"kivi-2", 5.3}};
  const uint64_t equal_bytes = 1'000'000 / kTraceBlockTokens * block_bytes;
  fmt::print("\n## Compression at equal bytes (host tier = {} = 1M fp16 tokens at {} B/token)\n\n",
             MiB(equal_bytes), bytes_per_token);
  fmt::print("| codec | ratio | payload per block | blocks that fit | lru | s3fifo | gain vs fp16 (lru) |\n");
  fmt::print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
  json += "  \"compression\": [\n";
  double base = 0;
  for (size_t i = 0; i < std::size(codecs); ++i) {
    const Codec& c = codecs[i];
    RunConfig cfg;
    cfg.host_bytes = equal_bytes;
    cfg.payload_bytes = static_cast<uint64_t>(std::ceil(block_bytes / c.ratio / 64.0)) * 64;
    cfg.policy = "lru";
    const RunResult lru = Run(trace, cfg);
    cfg.policy = "s3fifo";
    const RunResult plru = Run(trace, cfg);
    if (i == 0) base = lru.hit_rate;
    fmt::print("| {} | {:.1f}x | {} B | {} | {} | {} | {:+.1f} pts |\n", c.name, c.ratio,
               cfg.payload_bytes, equal_bytes / cfg.payload_bytes, Pct(lru.hit_rate),
               Pct(plru.hit_rate), 100 * (lru.hit_rate - base));
    json += fmt::format(
        "    {{\"codec\": \"{}\", \"ratio\": {}, \"payload_bytes\": {}, \"lru\": {:.5f}, "
        "\"s3fifo\": {:.5f}}}{}\n",
        c.name, c.ratio, cfg.payload_bytes, lru.hit_rate, plru.hit_rate,
        i + 1 < std::size(codecs) ? "," : "");
  }
  json += "  ]\n}\n";
  if (!json_path.empty()) {
    std::FILE* f = std::fopen(json_path.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "replay: cannot write %s\n", json_path.c_str());
      return 1;
    }
    std::fputs(json.c_str(), f);
    std::fclose(f);
  }
  if (!all_match) {
    std::fprintf(stderr, "replay: the manager's lru differs from the exact-LRU model\n");
    return 3;
  }
  return 0;
}
