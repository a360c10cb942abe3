#include "latency.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

namespace kvtier::cli {

void LatencyRecorder::Add(std::chrono::nanoseconds latency) {
  std::lock_guard<std::mutex> lock(mu_);
  us_.push_back(latency.count() / 1000.0);
}

LatencySummary LatencyRecorder::Summarize() const {
  std::vector<double> v;
  {
    std::lock_guard<std::mutex> lock(mu_);
    v = us_;
  }
  LatencySummary s;
  s.count = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  auto rank = [&](double p) {
    const size_t i = static_cast<size_t>(std::ceil(p * v.size()));
    return v[std::min(v.size() - 1, i == 0 ? 0 : i - 1)];
  };
  s.mean_us = std::accumulate(v.begin(), v.end(), 0.0) / v.size();
  s.p50_us = rank(0.50);
  s.p90_us = rank(0.90);
  s.p99_us = rank(0.99);
  s.max_us = v.back();
  return s;
}

namespace {
std::string Ms(double us) { return fmt::format("{:.3f} ms", us / 1000.0); }
}  // namespace

std::string FormatLatency(const LatencySummary& s) {
  if (s.count == 0) return "no calls";
  return fmt::format("n={:<7} mean {:>10}  p50 {:>10}  p90 {:>10}  p99 {:>10}  max {:>10}",
                     s.count, Ms(s.mean_us), Ms(s.p50_us), Ms(s.p90_us), Ms(s.p99_us),
                     Ms(s.max_us));
}

std::string LatencyJson(const LatencySummary& s) {
  return fmt::format(
      "{{\"count\": {}, \"mean_us\": {:.1f}, \"p50_us\": {:.1f}, \"p90_us\": {:.1f}, "
      "\"p99_us\": {:.1f}, \"max_us\": {:.1f}}}",
      s.count, s.mean_us, s.p50_us, s.p90_us, s.p99_us, s.max_us);
}

}  // namespace kvtier::cli
