// ConnectionLimiter: kvtierd's own acceptor for its plaintext listeners (the Unix socket, and TCP
// without TLS), so that the number of open client connections is capped. gRPC 1.51 (Debian 12)
// has no connection-count limit of its own; streams per connection and calls in flight are
// capped by gRPC and KvTierService.
//
// A thread accepts on the listening sockets. While fewer than `max_connections` connections are
// open, each new one goes to `hand_over` (in kvtierd: grpc::AddInsecureChannelFrom
// Fd, which gives the descriptor to the gRPC server); beyond the cap it is closed at once, so the
// client sees UNAVAILABLE and retries with backoff. A connection is open while its socket exists:
// the limiter remembers each handed-over socket's inode and, when the cap is reached, recounts
// the sockets this process still has (/proc/self/fd), so connections gRPC has closed (idle
// timeout, client gone) free their places.
//
// TLS connections count against the same cap, but gRPC accepts them itself (it can only be handed
// plaintext sockets). With `tls_port` set, the thread looks every 100 ms for sockets of this
// process on that local port that are not listening (gRPC's accepted TLS connections); a new one
// that finds the cap reached is shut down (shutdown(2): gRPC then closes it as a client gone), so
// an excess TLS connection lives at most about 100 ms and is counted as refused.
//
// Thread-safety: Start/Stop from one thread; the counters may be read from any thread.
#ifndef KVTIER_SERVICE_SRC_CONNECTION_LIMITER_H_
#define KVTIER_SERVICE_SRC_CONNECTION_LIMITER_H_

#include <sys/socket.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvtier::service {

// A listening Unix-domain socket at `path` (mode 0600, close-on-exec); `type` is SOCK_STREAM
// (gRPC) or SOCK_SEQPACKET (the shared-memory registration socket).
absl::StatusOr<int> ListenUnix(const std::string& path, int type = SOCK_STREAM);
// A listening TCP socket on "host:port" ("[v6]:port" for IPv6 literals); port 0 picks one.
// Returns the descriptor and the port bound.
absl::StatusOr<std::pair<int, int>> ListenTcp(const std::string& host_port);

class ConnectionLimiter {
 public:
  // Takes ownership of `listen_fds` (bound, listening stream sockets). `hand_over` receives each
  // accepted descriptor (non-blocking, close-on-exec) and owns it from then on.
  // `tls_port` (0 = none): the local TCP port of gRPC's own TLS listener, whose connections are
  // counted and capped too.
  static absl::StatusOr<std::unique_ptr<ConnectionLimiter>> Start(
      std::vector<int> listen_fds, int max_connections, std::function<void(int fd)> hand_over,
      int tls_port = 0);
  ~ConnectionLimiter();  // Stop()
  ConnectionLimiter(const ConnectionLimiter&) = delete;
  ConnectionLimiter& operator=(const ConnectionLimiter&) = delete;

  // Stops accepting and closes the listening sockets. Handed-over connections are not touched.
  void Stop();

  // Connections still open when last counted (an upper bound between recounts), TLS included.
  int open_connections() const { return open_.load(std::memory_order_relaxed); }
  // TLS connections open at the last look.
  int open_tls_connections() const { return tls_open_.load(std::memory_order_relaxed); }
  uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

  // Forgets handed-over connections whose socket this process no longer has; the new count
  // (TLS connections included).
  int Recount();

 private:
  ConnectionLimiter(std::vector<int> listen_fds, int max_connections,
                    std::function<void(int)> hand_over, int wake_fd, int tls_port);
  void Loop();
  void OnAccepted(int fd);
  // Counts gRPC's TLS connections and shuts down new ones beyond the cap.
  void ScanTls();
  // Forgets connections (of every kind) whose socket is not in `alive`; the open count.
  int PruneLocked(const absl::flat_hash_set<ino_t>& alive);

  const std::vector<int> listen_fds_;
  const int max_connections_;
  const std::function<void(int)> hand_over_;
  const int wake_fd_;  // eventfd: Stop() wakes the loop through it
  const int tls_port_;
  std::thread thread_;
  std::mutex mu_;
  absl::flat_hash_set<ino_t> sockets_;  // Guarded by mu_: inodes of handed-over sockets.
  absl::flat_hash_set<ino_t> tls_;      // Guarded by mu_: inodes of admitted TLS connections.
  absl::flat_hash_set<ino_t> tls_shut_; // Guarded by mu_: TLS connections shut down, not yet gone.
  std::atomic<int> open_{0};
  std::atomic<int> tls_open_{0};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> refused_{0};
  bool stopped_ = false;
  // When the acceptor last recounted at the cap (acceptor thread only).
  std::chrono::steady_clock::time_point last_recount_{};
};

}  // namespace kvtier::service

#endif  // KVTIER_SERVICE_SRC_CONNECTION_LIMITER_H_
