#include "bench.h"

#include <atomic>
#include <mutex>
#include <random>
#include <thread>

#include <fmt/format.h>

#include "kvtier/common/chunk_key.h"
#include "synthetic.h"

namespace kvtier::cli {
namespace {

using Clock = std::chrono::steady_clock;

// A key no real prompt produces: the chain of one token, the run's seed and a counter.
ChunkKey BenchKey(uint64_t seed, uint64_t n) {
  const uint32_t tokens[4] = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                              static_cast<uint32_t>(n), static_cast<uint32_t>(n >> 32)};
  return NextChunkKey(ChunkKey(), "kvtier-bench", tokens);
}

}  // namespace

absl::StatusOr<BenchReport> RunBench(client::Client& client, const client::NamespaceSpec& ns,
                                     const BenchOptions& options) {
  if (options.sizes_tokens.empty()) return absl::InvalidArgumentError("bench: no sizes given");
  for (uint32_t t : options.sizes_tokens) {
    if (t == 0 || (ns.tokens_per_chunk > 0 && t > ns.tokens_per_chunk)) {
      return absl::InvalidArgumentError(fmt::format(
          "bench: size {} tokens is outside [1, tokens_per_chunk={}]", t, ns.tokens_per_chunk));
    }
  }
  if (options.concurrency == 0) return absl::InvalidArgumentError("bench: concurrency is 0");
  // One synthetic tensor per size, shared by every Put (keys differ, bytes need not).
  std::vector<std::vector<uint8_t>> data;
  for (uint32_t t : options.sizes_tokens) data.push_back(SyntheticKv(ns.layout, t, t));

  std::atomic<uint64_t> counter{0}, puts{0}, gets{0}, errors{0}, put_bytes{0}, get_bytes{0};
  std::mutex err_mu;
  std::string first_error;
  LatencyRecorder put_lat, get_lat;
  // The first error names its call, key number and time, so a failure can be matched with the
  // daemon's log and counters.
  const auto t0 = Clock::now();
  auto record_error = [&](const char* op, uint64_t n, const absl::Status& st) {
    errors.fetch_add(1);
    std::lock_guard<std::mutex> lock(err_mu);
    if (first_error.empty()) {
      first_error = fmt::format("{} of key #{} at {:.3f} s: {}", op, n,
                                std::chrono::duration<double>(Clock::now() - t0).count(),
                                st.ToString());
    }
  };
  bool recording = true;  // off during the warm-up (set before any worker starts)
  auto do_put = [&](uint64_t n) -> bool {
    const size_t which = n % data.size();
    client::PutOptions put;
    put.num_tokens = options.sizes_tokens[which];
    client::CallStats st;
    auto r = client.Put(ns.name, BenchKey(options.seed, n), data[which], put, {{}, &st});
    if (!r.ok()) {
      record_error("put", n, r.status());
      return false;
    }
    if (!recording) return true;
    put_lat.Add(st.latency);
    puts.fetch_add(1);
    put_bytes.fetch_add(data[which].size());
    return true;
  };
  auto do_get = [&](uint64_t n) {
    client::GetOptions get;
    get.format = options.get_format;
    client::CallStats st;
    auto r = client.Get(ns.name, BenchKey(options.seed, n), get, {{}, &st});
    get_lat.Add(st.latency);
    if (!r.ok()) return record_error("get", n, r.status());
    gets.fetch_add(1);
    get_bytes.fetch_add(r->data.size());
  };

  uint64_t warm = 0;
  if (options.mode == BenchMode::kGet) {
    recording = false;
    for (; warm < std::max<uint32_t>(1, options.warm_keys); ++warm) do_put(warm);
    recording = true;
    counter = warm;
    if (errors > 0) return absl::UnavailableError("bench: warm-up Puts failed: " + first_error);
  }
  const auto start = Clock::now();
  const auto end = start + options.duration;
  std::vector<std::thread> workers;
  for (uint32_t w = 0; w < options.concurrency; ++w) {
    workers.emplace_back([&, w] {
      std::mt19937_64 rng(options.seed * 1000003 + w);
      std::vector<uint64_t> mine;
      while (Clock::now() < end) {
        switch (options.mode) {
          case BenchMode::kPut:
            do_put(counter.fetch_add(1));
            break;
          case BenchMode::kGet:
            do_get(rng() % warm);
            break;
          case BenchMode::kMixed: {
            // Get one of this worker's own earlier keys: another worker's newest key may still
            // be in flight (a Get of it would be a miss, not a measurement).
            const uint64_t n = counter.fetch_add(1);
            if (do_put(n)) mine.push_back(n);
            if (!mine.empty()) do_get(mine[rng() % mine.size()]);
            break;
          }
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  BenchReport r;
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  r.puts = puts;
  r.gets = gets;
  r.errors = errors;
  r.put_bytes = put_bytes;
  r.get_bytes = get_bytes;
  r.put = put_lat.Summarize();
  r.get = get_lat.Summarize();
  r.first_error = first_error;
  return r;
}

std::string BenchReport::ToText() const {
  const double mib = 1024.0 * 1024.0;
  std::string out = fmt::format(
      "duration   {:.2f} s\n"
      "put        {:>9.1f} ops/s {:>9.1f} MiB/s   {}\n"
      "get        {:>9.1f} ops/s {:>9.1f} MiB/s   {}\n",
      seconds, puts / seconds, put_bytes / mib / seconds, FormatLatency(put), gets / seconds,
      get_bytes / mib / seconds, FormatLatency(get));
  if (errors > 0) out += fmt::format("errors     {} (first: {})\n", errors, first_error);
  return out;
}

std::string BenchReport::ToJson() const {
  return fmt::format(
      "{{\"seconds\": {:.3f}, \"puts\": {}, \"gets\": {}, \"errors\": {}, \"put_bytes\": {}, "
      "\"get_bytes\": {}, \"put\": {}, \"get\": {}}}",
      seconds, puts, gets, errors, put_bytes, get_bytes, LatencyJson(put), LatencyJson(get));
}

}  // namespace kvtier::cli
