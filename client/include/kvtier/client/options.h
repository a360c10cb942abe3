// Options of the kvtier client SDK: how to reach the daemon, default deadlines and the retry
// policy, plus the per-call options and statistics every call accepts.
//
// Value types; thread-compatible (copy them freely, do not mutate one from several threads).
#ifndef KVTIER_CLIENT_OPTIONS_H_
#define KVTIER_CLIENT_OPTIONS_H_

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace kvtier::client {

// Retries apply to UNAVAILABLE only (the daemon is starting, draining, or the connection broke
// before the call ran); every other error is returned at once. Attempt k (k >= 1 counts retries)
// waits min(max_backoff, initial_backoff * multiplier^(k-1)) scaled by a random factor in
// [1 - jitter, 1], and never past the call's deadline.
struct RetryPolicy {
  // Total attempts including the first; 1 disables retries. Default 4.
  uint32_t max_attempts = 4;
  // Wait before the first retry. Default 20 ms.
  std::chrono::milliseconds initial_backoff{20};
  // Upper bound of one wait. Default 1 s.
  std::chrono::milliseconds max_backoff{1000};
  // Growth factor between waits, >= 1. Default 2.
  double multiplier = 2.0;
  // Fraction of each wait that is randomized away, in [0, 1]. Default 0.2.
  double jitter = 0.2;

  absl::Status Validate() const;
};

struct ClientOptions {
  // Where the daemon listens: "unix:/run/kvtier/kvtierd.sock" (or "unix:///abs/path"), or
  // "host:port" for TCP. Default: the daemon's default socket.
  std::string target = "unix:/run/kvtier/kvtierd.sock";
  // TCP only: use TLS. The daemon refuses public addresses without it.
  bool tls = false;
  // TLS: PEM contents (not a path) of the CA certificates that sign the daemon's certificate;
  // empty = the system roots.
  std::string tls_root_certs_pem;
  // TLS: override of the name checked against the certificate (testing with IP targets); empty =
  // the target's host.
  std::string tls_server_name;
  // Bearer token sent as "authorization: Bearer <token>" on every call; empty = none. Never logged.
  std::string token;
  // Deadline of a call whose CallOptions leave it at zero. Default 10 s.
  std::chrono::milliseconds default_deadline{10000};
  // Deadline of Connect's readiness wait. Default 5 s.
  std::chrono::milliseconds connect_timeout{5000};
  // Size of each Put stream message. Default 1 MiB (the daemon's recommended size).
  uint32_t put_message_bytes = 1u << 20;
  // Largest message accepted from the daemon (Get streams about 1 MiB messages). Default 64 MiB.
  int32_t max_receive_message_bytes = 64 << 20;
  // Same-node shared memory (docs/API.md, "Shared memory"): with a "unix:" target the client
  // registers a shared memory region of this many bytes with the daemon at Connect and moves Put
  // and Get data through it instead of the socket. 0 = off. Falls back to the socket, per call,
  // when the daemon offers none, when the region has no room, and after a daemon restart (it
  // registers again). The region is address space: its pages are allocated only as calls first
  // touch them (about the bytes of the calls in flight at once), so the default is generous.
  // Default 1 GiB.
  uint64_t shared_memory_bytes = 1ull << 30;
  // Room a Get reserves in the region for its answer (only the answer's own bytes are touched);
  // a larger answer is streamed through the socket. Default 64 MiB, the daemon's default
  // server.max_value_bytes.
  uint64_t shared_memory_get_bytes = 64ull << 20;
  RetryPolicy retry;

  // Rejects an empty target, a "unix:" target with TLS, zero deadlines, zero message size and an
  // invalid retry policy.
  absl::Status Validate() const;
};

// What one call cost, filled in when the call finishes (successfully or not).
struct CallStats {
  std::chrono::nanoseconds latency{0};  // wall time of the whole call, retries and waits included
  uint64_t bytes_sent = 0;              // request payload bytes of the successful (or last) attempt
  uint64_t bytes_received = 0;          // response payload bytes of that attempt
  uint32_t attempts = 0;                // 1 + retries
  absl::Status status;                  // the call's final status
  uint32_t retries() const { return attempts > 0 ? attempts - 1 : 0; }
};

// Per-call options.
struct CallOptions {
  // Deadline for the whole call (all attempts); zero = ClientOptions::default_deadline.
  std::chrono::milliseconds deadline{0};
  // When set, receives the call's statistics. For async calls it must stay valid until the
  // returned future is ready.
  CallStats* stats = nullptr;
};

}  // namespace kvtier::client

#endif  // KVTIER_CLIENT_OPTIONS_H_
