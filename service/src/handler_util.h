// Helpers shared by the kvtier.v1 handlers (kvtier_service.cc, put_handler.cc,
// get_handler.cc). Internal.
//
// Thread-safety: free functions; BudgetReservation is used by one handler at a time over a shared
// atomic counter.
#ifndef KVTIER_SERVICE_SRC_HANDLER_UTIL_H_
#define KVTIER_SERVICE_SRC_HANDLER_UTIL_H_

#include <atomic>
#include <chrono>
#include <cstdint>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvtier::service {

using Clock = std::chrono::steady_clock;

inline double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The status to return once the call is cancelled: DEADLINE_EXCEEDED when its deadline passed.
inline absl::Status CancelledStatus(grpc::ServerContextBase* ctx, const char* where) {
  if (ctx->deadline() <= std::chrono::system_clock::now()) {
    return absl::DeadlineExceededError(absl::StrCat("deadline exceeded ", where));
  }
  return absl::CancelledError(absl::StrCat("cancelled ", where));
}

// How a handler step asks whether its call is still wanted: through the gRPC call's context
// (cancellation and deadline), or, on the shared-memory call channel, through the deadline the
// caller sent.
struct CallLiveness {
  grpc::ServerContextBase* ctx = nullptr;
  Clock::time_point deadline = Clock::time_point::max();
  // OK, or CANCELLED / DEADLINE_EXCEEDED naming `where`.
  absl::Status Check(const char* where) const {
    if (ctx != nullptr) return ctx->IsCancelled() ? CancelledStatus(ctx, where) : absl::OkStatus();
    if (Clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("deadline exceeded ", where));
    }
    return absl::OkStatus();
  }
};

// Reserves bytes of a shared budget; released by the destructor.
class BudgetReservation {
 public:
  BudgetReservation(std::atomic<uint64_t>* used, uint64_t limit, uint64_t bytes)
      : used_(used), bytes_(bytes) {
    uint64_t prev = used_->fetch_add(bytes_, std::memory_order_acq_rel);
    if (prev + bytes_ > limit) {
      used_->fetch_sub(bytes_, std::memory_order_acq_rel);
      bytes_ = 0;
      ok_ = false;
    }
  }
  ~BudgetReservation() {
    if (bytes_ > 0) used_->fetch_sub(bytes_, std::memory_order_acq_rel);
  }
  bool ok() const { return ok_; }

 private:
  std::atomic<uint64_t>* used_;
  uint64_t bytes_;
  bool ok_ = true;
};

}  // namespace kvtier::service

#endif  // KVTIER_SERVICE_SRC_HANDLER_UTIL_H_
