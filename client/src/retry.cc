// Exponential backoff with jitter, bounded by the call's deadline.
#include "kvtier/client/retry.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>

namespace kvtier::client {

std::chrono::nanoseconds BackoffDelay(const RetryPolicy& policy, uint32_t retry,
                                      double unit_random) {
  if (retry == 0) return std::chrono::nanoseconds(0);
  const double initial = std::chrono::duration<double, std::nano>(policy.initial_backoff).count();
  const double cap = std::chrono::duration<double, std::nano>(policy.max_backoff).count();
  // multiplier^(retry-1) grows fast; clamp the exponent so it cannot overflow to inf.
  const double grown = initial * std::pow(policy.multiplier, std::min<uint32_t>(retry - 1, 64));
  const double base = std::min(cap, grown);
  const double scaled = base * (1.0 - policy.jitter * std::clamp(unit_random, 0.0, 1.0));
  return std::chrono::nanoseconds(static_cast<int64_t>(scaled));
}

namespace {
class RealClock final : public RetryClock {
 public:
  std::chrono::steady_clock::time_point Now() override { return std::chrono::steady_clock::now(); }
  void SleepFor(std::chrono::nanoseconds d) override { std::this_thread::sleep_for(d); }
  double UnitRandom() override {
    thread_local std::mt19937_64 rng(std::random_device{}());
    return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  }
};
}  // namespace

RetryClock& RealRetryClock() {
  static RealClock* clock = new RealClock();
  return *clock;
}

absl::Status RunWithRetries(
    const RetryPolicy& policy, std::chrono::steady_clock::time_point deadline, RetryClock& clock,
    const std::function<absl::Status(std::chrono::steady_clock::time_point deadline)>& attempt,
    uint32_t* attempts) {
  uint32_t made = 0;
  absl::Status status;
  while (true) {
    ++made;
    status = attempt(deadline);
    if (status.code() != absl::StatusCode::kUnavailable || made >= policy.max_attempts) break;
    const auto wait = BackoffDelay(policy, made, clock.UnitRandom());
    if (clock.Now() + wait >= deadline) break;  // no time left for another attempt
    clock.SleepFor(wait);
  }
  if (attempts != nullptr) *attempts = made;
  return status;
}

}  // namespace kvtier::client
