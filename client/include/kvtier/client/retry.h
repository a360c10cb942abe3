// Retry timing of the client SDK, exposed so it can be tested (and reused by tools) without a
// daemon: the backoff schedule and the loop that runs attempts against a deadline.
//
// Thread-safety: Backoff is thread-compatible; RunWithRetries is reentrant.
#ifndef KVTIER_CLIENT_RETRY_H_
#define KVTIER_CLIENT_RETRY_H_

#include <chrono>
#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "kvtier/client/options.h"

namespace kvtier::client {

// Wait before retry number `retry` (1 = first retry) under `policy`, with `unit_random` in [0, 1)
// choosing the jitter: min(max, initial * multiplier^(retry-1)) * (1 - jitter * unit_random).
std::chrono::nanoseconds BackoffDelay(const RetryPolicy& policy, uint32_t retry,
                                      double unit_random);

// Time source and sleeper, injectable so tests run retries on a fake clock.
class RetryClock {
 public:
  virtual ~RetryClock() = default;
  virtual std::chrono::steady_clock::time_point Now() = 0;
  virtual void SleepFor(std::chrono::nanoseconds d) = 0;
  virtual double UnitRandom() = 0;  // uniform in [0, 1)
};
RetryClock& RealRetryClock();  // steady_clock, this_thread::sleep_for, a thread-local PRNG

// Runs attempt(deadline) until it returns a status other than UNAVAILABLE, max_attempts is
// reached, or the next wait would pass `deadline` (then the last UNAVAILABLE is returned).
// `attempts`, when set, receives the number of attempts made.
absl::Status RunWithRetries(
    const RetryPolicy& policy, std::chrono::steady_clock::time_point deadline, RetryClock& clock,
    const std::function<absl::Status(std::chrono::steady_clock::time_point deadline)>& attempt,
    uint32_t* attempts = nullptr);

}  // namespace kvtier::client

#endif  // KVTIER_CLIENT_RETRY_H_
