#include "auth.h"

namespace kvtier::service {

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  // Compare over the longer length so the loop count does not depend on a prefix match; the
  // length difference is folded into the result.
  size_t n = a.size() > b.size() ? a.size() : b.size();
  unsigned char diff = static_cast<unsigned char>(a.size() != b.size());
  for (size_t i = 0; i < n; ++i) {
    unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  // Keep the compiler from turning the loop into an early-exit comparison.
  volatile unsigned char result = diff;
  return result == 0;
}

absl::Status TokenAuthenticator::Check(const std::string_view* authorization) const {
  if (token_.empty()) return absl::OkStatus();
  if (authorization == nullptr) {
    return absl::UnauthenticatedError("missing 'authorization: Bearer <token>' metadata");
  }
  constexpr std::string_view kPrefix = "Bearer ";
  std::string_view value = *authorization;
  if (value.size() < kPrefix.size() || value.substr(0, kPrefix.size()) != kPrefix) {
    return absl::UnauthenticatedError("authorization metadata is not 'Bearer <token>'");
  }
  if (!ConstantTimeEquals(value.substr(kPrefix.size()), token_)) {
    return absl::UnauthenticatedError("wrong token");
  }
  return absl::OkStatus();
}

}  // namespace kvtier::service
