#include "kvtier/storage/clock.h"

#include <chrono>

namespace kvtier::storage {

int64_t SteadyClock::NowNanos() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::shared_ptr<Clock> DefaultClock() {
  // Leaked on purpose: lives as long as the process, usable from static destructors.
  static auto* clock = new std::shared_ptr<Clock>(std::make_shared<SteadyClock>());
  return *clock;
}

}  // namespace kvtier::storage
