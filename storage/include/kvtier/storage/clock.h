// Clock: the only source of time for storage (lease expiry, access statistics), so tests can
// drive time by hand instead of sleeping.
//
// Thread-safety: every implementation here is safe to call from any thread.
#ifndef KVTIER_STORAGE_CLOCK_H_
#define KVTIER_STORAGE_CLOCK_H_

#include <atomic>
#include <cstdint>
#include <memory>

namespace kvtier::storage {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic time in nanoseconds since an arbitrary epoch. Never goes backwards.
  virtual int64_t NowNanos() const = 0;
};

// std::chrono::steady_clock.
class SteadyClock final : public Clock {
 public:
  int64_t NowNanos() const override;
};

// A clock that moves only when told to; starts at `start_nanos`.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_nanos = 1'000'000'000) : now_(start_nanos) {}
  int64_t NowNanos() const override { return now_.load(std::memory_order_acquire); }
  void AdvanceNanos(int64_t delta) { now_.fetch_add(delta, std::memory_order_acq_rel); }
  void AdvanceMillis(int64_t ms) { AdvanceNanos(ms * 1'000'000); }

 private:
  std::atomic<int64_t> now_;
};

// Process-wide steady clock (never destroyed).
std::shared_ptr<Clock> DefaultClock();

}  // namespace kvtier::storage

#endif  // KVTIER_STORAGE_CLOCK_H_
