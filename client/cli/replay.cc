#include "replay.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "progress.h"
#include "synthetic.h"

namespace kvtier::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct Shared {
  std::atomic<uint64_t> next{0}, done{0};
  std::atomic<uint64_t> input_tokens{0}, cacheable_tokens{0}, hit_tokens{0};
  std::atomic<uint64_t> looked_up{0}, hit{0}, put{0}, get_misses{0}, verify_failures{0},
      errors{0}, bytes_got{0}, bytes_put{0};
  std::mutex error_mu;
  std::string first_error;
  LatencyRecorder lookup, get, put_lat;

  void Error(const absl::Status& st, const char* what) {
    errors.fetch_add(1);
    std::lock_guard<std::mutex> lock(error_mu);
    if (first_error.empty()) first_error = fmt::format("{}: {}", what, st.ToString());
  }
};

void RunRequest(client::Client& client, const client::NamespaceSpec& ns, const TraceRequest& req,
                const ReplayOptions& options, Shared& s) {
  const uint32_t tpc = ns.tokens_per_chunk;
  const size_t full = std::min<uint64_t>(req.hash_ids.size(), req.input_length / tpc);
  s.input_tokens.fetch_add(req.input_length);
  s.cacheable_tokens.fetch_add(full * tpc);
  if (full == 0) return;
  const auto ids = absl::MakeConstSpan(req.hash_ids).subspan(0, full);
  const auto keys = client::Client::ComputeKeys(ns, RequestTokens(ids, tpc));

  client::CallStats stats;
  client::CallOptions call;
  call.stats = &stats;
  auto looked = client.Lookup(ns.name, keys, options.lease_ms, call);
  s.lookup.Add(stats.latency);
  s.looked_up.fetch_add(full);
  if (!looked.ok()) {
    s.Error(looked.status(), "Lookup");
    return;
  }
  const uint32_t prefix = looked->prefix_chunks;
  s.hit.fetch_add(prefix);
  s.hit_tokens.fetch_add(uint64_t{prefix} * tpc);

  client::GetOptions get;
  get.format = options.verify ? client::DataFormat::kTensor : options.get_format;
  for (uint32_t i = 0; i < prefix; ++i) {
    if (i + 1 == prefix) get.release_lease_id = looked->lease_id;
    auto got = client.Get(ns.name, keys[i], get, call);
    s.get.Add(stats.latency);
    if (!got.ok()) {
      if (got.status().code() == absl::StatusCode::kNotFound) {
        s.get_misses.fetch_add(1);
      } else {
        s.Error(got.status(), "Get");
      }
      continue;
    }
    s.bytes_got.fetch_add(got->data.size());
    if (options.verify && got->data != SyntheticKv(ns.layout, tpc, ids[i])) {
      s.verify_failures.fetch_add(1);
    }
  }

  client::PutOptions put;
  put.num_tokens = tpc;
  for (size_t i = prefix; i < full; ++i) {
    const auto kv = SyntheticKv(ns.layout, tpc, ids[i]);
    put.first_position = i * tpc;
    auto stored = client.Put(ns.name, keys[i], kv, put, call);
    s.put_lat.Add(stats.latency);
    if (!stored.ok()) {
      s.Error(stored.status(), "Put");
      continue;
    }
    s.put.fetch_add(1);
    s.bytes_put.fetch_add(kv.size());
  }
}

}  // namespace

absl::StatusOr<ReplayReport> Replay(client::Client& client, const client::NamespaceSpec& ns,
                                    const std::vector<TraceRequest>& trace,
                                    const ReplayOptions& options) {
  if (ns.tokens_per_chunk == 0) {
    return absl::InvalidArgumentError("replay: namespace tokens_per_chunk is unresolved (0)");
  }
  if (options.concurrency == 0) return absl::InvalidArgumentError("replay: concurrency is 0");
  if (options.speed < 0) return absl::InvalidArgumentError("replay: speed must be >= 0");
  Shared s;
  const auto start = Clock::now();
  const int64_t t0 = trace.empty() ? 0 : trace.front().timestamp_ms;
  {
    ProgressBar bar(
        trace.size(),
        [&] {
          const uint64_t in = s.input_tokens.load();
          return fmt::format("hit {:.3f}", in == 0 ? 0.0 : double(s.hit_tokens.load()) / in);
        },
        options.progress);
    std::vector<std::thread> workers;
    for (uint32_t w = 0; w < options.concurrency; ++w) {
      workers.emplace_back([&] {
        while (true) {
          const uint64_t i = s.next.fetch_add(1);
          if (i >= trace.size()) return;
          if (options.speed > 0) {
            const double offset_ms = (trace[i].timestamp_ms - t0) / options.speed;
            std::this_thread::sleep_until(
                start + std::chrono::microseconds(static_cast<int64_t>(offset_ms * 1000)));
          }
          RunRequest(client, ns, trace[i], options, s);
          bar.Set(s.done.fetch_add(1) + 1);
        }
      });
    }
    for (auto& w : workers) w.join();
  }
  ReplayReport r;
  r.requests = trace.size();
  r.input_tokens = s.input_tokens;
  r.cacheable_tokens = s.cacheable_tokens;
  r.hit_tokens = s.hit_tokens;
  r.blocks_looked_up = s.looked_up;
  r.blocks_hit = s.hit;
  r.blocks_put = s.put;
  r.get_misses = s.get_misses;
  r.verify_failures = s.verify_failures;
  r.errors = s.errors;
  r.first_error = s.first_error;
  r.bytes_got = s.bytes_got;
  r.bytes_put = s.bytes_put;
  r.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  r.lookup = s.lookup.Summarize();
  r.get = s.get.Summarize();
  r.put = s.put_lat.Summarize();
  return r;
}

std::string ReplayReport::ToText() const {
  const double mib = 1024.0 * 1024.0;
  std::string out = fmt::format(
      "requests          {}\n"
      "token hit rate    {:.4f}  ({} of {} input tokens; {} in full blocks)\n"
      "blocks            looked up {}, hit {}, put {}, hits gone before Get {}\n"
      "bytes moved       get {:.1f} MiB, put {:.1f} MiB\n"
      "wall time         {:.2f} s ({:.1f} requests/s)\n"
      "lookup latency    {}\n"
      "get latency       {}\n"
      "put latency       {}\n",
      requests, TokenHitRate(), hit_tokens, input_tokens, cacheable_tokens, blocks_looked_up,
      blocks_hit, blocks_put, get_misses, bytes_got / mib, bytes_put / mib, wall_seconds,
      wall_seconds > 0 ? requests / wall_seconds : 0.0, FormatLatency(lookup), FormatLatency(get),
      FormatLatency(put));
  if (verify_failures > 0) out += fmt::format("VERIFY FAILURES   {}\n", verify_failures);
  if (errors > 0) out += fmt::format("errors            {} (first: {})\n", errors, first_error);
  return out;
}

std::string ReplayReport::ToJson() const {
  return fmt::format(
      "{{\"requests\": {}, \"token_hit_rate\": {:.6f}, \"input_tokens\": {}, "
      "\"cacheable_tokens\": {}, \"hit_tokens\": {}, \"blocks_looked_up\": {}, "
      "\"blocks_hit\": {}, \"blocks_put\": {}, \"get_misses\": {}, \"verify_failures\": {}, "
      "\"errors\": {}, \"bytes_got\": {}, \"bytes_put\": {}, \"wall_seconds\": {:.3f}, "
      "\"lookup\": {}, \"get\": {}, \"put\": {}}}",
      requests, TokenHitRate(), input_tokens, cacheable_tokens, hit_tokens, blocks_looked_up,
      blocks_hit, blocks_put, get_misses, verify_failures, errors, bytes_got, bytes_put,
      wall_seconds, LatencyJson(lookup), LatencyJson(get), LatencyJson(put));
}

}  // namespace kvtier::cli
