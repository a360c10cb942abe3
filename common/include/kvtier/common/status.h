// Status helpers for kvtier's single error model: absl::Status / absl::StatusOr<T>.
//
// Debian's Abseil (20220623) has no RETURN_IF_ERROR / ASSIGN_OR_RETURN; these are defined here,
// once, for every component. Thread-safe: they are macros over values.
#ifndef KVTIER_COMMON_STATUS_H_
#define KVTIER_COMMON_STATUS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define KVTIER_CONCAT_INNER_(a, b) a##b
#define KVTIER_CONCAT_(a, b) KVTIER_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the enclosing function when not OK.
#define KVTIER_RETURN_IF_ERROR(expr)                      \
  do {                                                    \
    ::absl::Status kvtier_status_ = (expr);               \
    if (!kvtier_status_.ok()) return kvtier_status_;      \
  } while (0)

// `lhs` = value of `rexpr` (an absl::StatusOr<T>), or returns its error status.
// `lhs` may be a declaration: KVTIER_ASSIGN_OR_RETURN(auto x, MakeX());
#define KVTIER_ASSIGN_OR_RETURN(lhs, rexpr) \
  KVTIER_ASSIGN_OR_RETURN_IMPL_(KVTIER_CONCAT_(kvtier_statusor_, __LINE__), lhs, rexpr)

#define KVTIER_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                  \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = std::move(statusor).value()

// Aborts with the status message when `expr` is not OK. For broken invariants only, never for
// input that a client, a peer or the disk could get wrong.
#define KVTIER_CHECK_OK(expr) ::kvtier::internal::CheckOk((expr), #expr, __FILE__, __LINE__)

namespace kvtier::internal {
[[noreturn]] void CheckOkFailed(const absl::Status& status, const char* expr, const char* file,
                                int line);
inline void CheckOk(const absl::Status& status, const char* expr, const char* file, int line) {
  if (!status.ok()) CheckOkFailed(status, expr, file, line);
}
}  // namespace kvtier::internal

#endif  // KVTIER_COMMON_STATUS_H_
