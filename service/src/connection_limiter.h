// ConnectionLimiter: kvtierd's own acceptor for its plaintext listeners (the Unix socket, and TCP
// without TLS), so that the number of open client connections is capped. gRPC 1.51 (Debian 12)
// has no connection-count limit of its own; streams per connection and calls in flight are
// capped by gRPC and KvTierService.
//
// A thread accepts on the listening sockets. While fewer than `max_connections` handed-over
// connections are open, each new one goes to `hand_over` (in kvtierd: grpc::AddInsecureChannelFrom
// Fd, which gives the descriptor to the gRPC server); beyond the cap it is closed at once, so the
// client sees UNAVAILABLE and retries with backoff. A connection is open while its socket exists:
// the limiter remembers each handed-over socket's inode and, when the cap is reached, recounts
// the sockets this process still has (/proc/self/fd), so connections gRPC has closed (idle
// timeout, client gone) free their places.
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
  static absl::StatusOr<std::unique_ptr<ConnectionLimiter>> Start(
      std::vector<int> listen_fds, int max_connections, std::function<void(int fd)> hand_over);
  ~ConnectionLimiter();  // Stop()
  ConnectionLimiter(const ConnectionLimiter&) = delete;
  ConnectionLimiter& operator=(const ConnectionLimiter&) = delete;

  // Stops accepting and closes the listening sockets. Handed-over connections are not touched.
  void Stop();

  // Handed-over connections still open when last counted (an upper bound between recounts).
  int open_connections() const { return open_.load(std::memory_order_relaxed); }
  uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

  // Forgets handed-over connections whose socket this process no longer has; the new count.
  int Recount();

 private:
  ConnectionLimiter(std::vector<int> listen_fds, int max_connections,
                    std::function<void(int)> hand_over, int wake_fd);
  void Loop();
  void OnAccepted(int fd);

  const std::vector<int> listen_fds_;
  const int max_connections_;
  const std::function<void(int)> hand_over_;
  const int wake_fd_;  // eventfd: Stop() wakes the loop through it
  std::thread thread_;
  std::mutex mu_;
  absl::flat_hash_set<ino_t> sockets_;  // Guarded by mu_: inodes of handed-over sockets.
  std::atomic<int> open_{0};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> refused_{0};
  bool stopped_ = false;
  // When the acceptor last recounted at the cap (acceptor thread only).
  std::chrono::steady_clock::time_point last_recount_{};
};

}  // namespace kvtier::service

#endif  // KVTIER_SERVICE_SRC_CONNECTION_LIMITER_H_
