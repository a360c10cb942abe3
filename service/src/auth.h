// Token authentication of calls: every call carries "authorization: Bearer <token>" in its
// metadata when the daemon has a token. The comparison takes time independent of where the
// candidate differs (no early exit), so response timing does not leak the token.
//
// Handlers call Check() first, before reading any request message of a stream.
//
// Thread-safety: immutable after construction; Check() is safe from any thread.
#ifndef KVTIER_SERVICE_SRC_AUTH_H_
#define KVTIER_SERVICE_SRC_AUTH_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace kvtier::service {

// Constant-time equality of two byte strings (time depends only on the lengths).
bool ConstantTimeEquals(std::string_view a, std::string_view b);

class TokenAuthenticator {
 public:
  // An empty token disables authentication (every call passes).
  explicit TokenAuthenticator(std::string token) : token_(std::move(token)) {}
  bool enabled() const { return !token_.empty(); }

  // `authorization` is the value of the "authorization" metadata entry, or nullptr when absent.
  // Unauthenticated (without echoing anything of the candidate) when missing or wrong.
  absl::Status Check(const std::string_view* authorization) const;

 private:
  std::string token_;
};

}  // namespace kvtier::service

#endif  // KVTIER_SERVICE_SRC_AUTH_H_
