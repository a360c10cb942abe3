// Retry policy of the client SDK on a fake clock: only UNAVAILABLE is retried, waits grow
// exponentially with jitter, and nothing waits past the deadline.
#include "kvtier/client/retry.h"

#include <gtest/gtest.h>

#include <vector>

namespace kvtier::client {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using TimePoint = std::chrono::steady_clock::time_point;

class FakeClock final : public RetryClock {
 public:
  TimePoint Now() override { return now; }
  void SleepFor(nanoseconds d) override {
    sleeps.push_back(d);
    now += d;
  }
  double UnitRandom() override { return random; }
  TimePoint now{};
  double random = 0.0;
  std::vector<nanoseconds> sleeps;
};

RetryPolicy Policy() {
  RetryPolicy p;
  p.max_attempts = 5;
  p.initial_backoff = milliseconds(10);
  p.max_backoff = milliseconds(50);
  p.multiplier = 2.0;
  p.jitter = 0.5;
  return p;
}

TEST(BackoffTest, GrowsExponentiallyUpToTheCap) {
  const RetryPolicy p = Policy();
  EXPECT_EQ(BackoffDelay(p, 1, 0.0), milliseconds(10));
  EXPECT_EQ(BackoffDelay(p, 2, 0.0), milliseconds(20));
  EXPECT_EQ(BackoffDelay(p, 3, 0.0), milliseconds(40));
  EXPECT_EQ(BackoffDelay(p, 4, 0.0), milliseconds(50));
  EXPECT_EQ(BackoffDelay(p, 1000, 0.0), milliseconds(50));
  // Jitter removes up to `jitter` of the wait.
  EXPECT_EQ(BackoffDelay(p, 1, 1.0), milliseconds(5));
  EXPECT_EQ(BackoffDelay(p, 2, 0.5), milliseconds(15));
}

TEST(RetryTest, RetriesUnavailableUntilSuccess) {
  FakeClock clock;
  int calls = 0;
  uint32_t attempts = 0;
  const absl::Status st = RunWithRetries(
      Policy(), clock.now + std::chrono::seconds(10), clock,
      [&](TimePoint) {
        return ++calls < 3 ? absl::UnavailableError("down") : absl::OkStatus();
      },
      &attempts);
  EXPECT_TRUE(st.ok());
  EXPECT_EQ(attempts, 3u);
  ASSERT_EQ(clock.sleeps.size(), 2u);
  EXPECT_EQ(clock.sleeps[0], milliseconds(10));
  EXPECT_EQ(clock.sleeps[1], milliseconds(20));
}

TEST(RetryTest, OtherErrorsAreNotRetried) {
  for (auto err : {absl::NotFoundError("x"), absl::DeadlineExceededError("x"),
                   absl::InvalidArgumentError("x"), absl::ResourceExhaustedError("x"),
                   absl::UnauthenticatedError("x"), absl::InternalError("x")}) {
    FakeClock clock;
    uint32_t attempts = 0;
    const absl::Status st = RunWithRetries(
        Policy(), clock.now + std::chrono::seconds(10), clock, [&](TimePoint) { return err; },
        &attempts);
    EXPECT_EQ(st.code(), err.code());
    EXPECT_EQ(attempts, 1u);
    EXPECT_TRUE(clock.sleeps.empty());
  }
}

TEST(RetryTest, StopsAtMaxAttempts) {
  FakeClock clock;
  uint32_t attempts = 0;
  const absl::Status st = RunWithRetries(
      Policy(), clock.now + std::chrono::seconds(10), clock,
      [&](TimePoint) { return absl::UnavailableError("down"); }, &attempts);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(attempts, 5u);
  EXPECT_EQ(clock.sleeps.size(), 4u);
}

TEST(RetryTest, NeverSleepsPastTheDeadline) {
  FakeClock clock;
  uint32_t attempts = 0;
  const TimePoint deadline = clock.now + milliseconds(25);
  std::vector<TimePoint> seen_deadlines;
  const absl::Status st = RunWithRetries(
      Policy(), deadline, clock,
      [&](TimePoint d) {
        seen_deadlines.push_back(d);
        return absl::UnavailableError("down");
      },
      &attempts);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  // t=0 attempt, sleep 10 -> t=10 attempt; the next wait (20) would end at 30 > 25: stop.
  EXPECT_EQ(attempts, 2u);
  EXPECT_LE(clock.now, deadline);
  for (auto d : seen_deadlines) EXPECT_EQ(d, deadline);  // every attempt shares the deadline
}

TEST(RetryTest, PolicyValidation) {
  EXPECT_TRUE(Policy().Validate().ok());
  RetryPolicy p = Policy();
  p.max_attempts = 0;
  EXPECT_FALSE(p.Validate().ok());
  p = Policy();
  p.multiplier = 0.5;
  EXPECT_FALSE(p.Validate().ok());
  p = Policy();
  p.jitter = 1.5;
  EXPECT_FALSE(p.Validate().ok());
  p = Policy();
  p.max_backoff = milliseconds(1);
  EXPECT_FALSE(p.Validate().ok());
  ClientOptions o;
  EXPECT_TRUE(o.Validate().ok());
  o.tls = true;  // with a unix: target
  EXPECT_FALSE(o.Validate().ok());
  o = ClientOptions();
  o.target = "";
  EXPECT_FALSE(o.Validate().ok());
}

}  // namespace
}  // namespace kvtier::client
