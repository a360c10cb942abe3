// Latency samples and their percentiles, for `kvtier bench` and `kvtier replay`.
// Thread-safe: Add may be called from many threads.
#ifndef KVTIER_CLIENT_CLI_LATENCY_H_
#define KVTIER_CLIENT_CLI_LATENCY_H_

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace kvtier::cli {

struct LatencySummary {
  uint64_t count = 0;
  double mean_us = 0, p50_us = 0, p90_us = 0, p99_us = 0, max_us = 0;
};

class LatencyRecorder {
 public:
  void Add(std::chrono::nanoseconds latency);
  // Nearest-rank percentiles over every sample so far.
  LatencySummary Summarize() const;

 private:
  mutable std::mutex mu_;
  std::vector<double> us_;
};

// "p50 1.23 ms  p90 ...", a compact human form.
std::string FormatLatency(const LatencySummary& s);
// {"count":..,"mean_us":..,"p50_us":..,...}
std::string LatencyJson(const LatencySummary& s);

}  // namespace kvtier::cli

#endif  // KVTIER_CLIENT_CLI_LATENCY_H_
