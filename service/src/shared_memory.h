// SharedMemoryRegistry: kvtierd's side of same-node shared memory (kvtier/common/shm_protocol.h,
// docs/API.md "Shared memory"). Clients on this node register a sealed memfd on a SOCK_SEQPACKET
// socket beside the gRPC Unix socket; Put and Get then name byte ranges of it, so the bytes of a
// value never cross the gRPC socket.
//
// Safety: a region is accepted only when its file is sealed against shrinking (F_SEAL_SHRINK), so
// no access inside the mapped size can fault; it is mapped read-write, shared. The client may
// still change the bytes at any moment: Put copies them out first and checks the copy (CRC-32C,
// payload checksums), Get writes into the range and the client checks what it reads. A region is
// usable only through its random 128-bit handle, which only the registering client learns, and
// every Put/Get naming it still passes the call's token check. The registration itself checks the
// daemon's token too (when one is set) and is open only to whoever may open the socket (mode 0600).
//
// A region is unregistered when its client closes the registration connection (or exits); calls
// still using it keep the mapping alive until they finish.
//
// The call channel (shm_protocol.h): a connection that attaches to a registered region (handle
// and token) gets a thread of its own that reads one call packet at a time, runs it through
// `Options::on_call` and writes the reply, with no other hand-off; the call names its ranges by
// handle like any gRPC call, so it can only reach regions its client knows the handle of.
//
// Thread-safety: Resolve() and the counters are safe from any thread; Start/destructor from one.
#ifndef KVTIER_SERVICE_SRC_SHARED_MEMORY_H_
#define KVTIER_SERVICE_SRC_SHARED_MEMORY_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvtier/common/shm_protocol.h"

namespace kvtier::service {

class SharedMemoryRegistry {
 public:
  struct Options {
    std::string socket_path;        // where to listen (SOCK_SEQPACKET, mode 0600)
    uint64_t max_region_bytes = 0;  // largest region accepted
    uint32_t max_regions = 0;       // regions registered at once
    std::string token;              // the daemon's token; empty = none
    uint32_t max_call_connections = 0;  // call-channel connections (threads) at once
    // Runs one call of the call channel; `reply_body` receives the answer's message.
    std::function<absl::Status(const shm::Call& call, std::string* reply_body)> on_call;
  };
  // A mapped region; unmapped when the last reference goes.
  struct Region {
    Region(uint8_t* base, uint64_t size) : base(base), size(size) {}
    ~Region();
    Region(const Region&) = delete;
    Region& operator=(const Region&) = delete;
    uint8_t* const base;
    const uint64_t size;
  };
  // [data, data + size) of a registered region, valid while `region` is held.
  struct View {
    std::shared_ptr<const Region> region;
    uint8_t* data = nullptr;
    uint64_t size = 0;
  };

  static absl::StatusOr<std::unique_ptr<SharedMemoryRegistry>> Start(Options options);
  ~SharedMemoryRegistry();  // stops listening, removes the socket, drops every region
  SharedMemoryRegistry(const SharedMemoryRegistry&) = delete;
  SharedMemoryRegistry& operator=(const SharedMemoryRegistry&) = delete;

  // The range [offset, offset + length) of region `handle`. FailedPrecondition when no such region
  // is registered (e.g. it was registered with a daemon that has since restarted), InvalidArgument
  // when the range does not lie inside it.
  absl::StatusOr<View> Resolve(const std::string& handle, uint64_t offset, uint64_t length) const;

  // Bytes Put read out of regions / Get wrote into them (for the metrics).
  void CountRead(uint64_t n) { read_bytes_.fetch_add(n, std::memory_order_relaxed); }
  void CountWritten(uint64_t n) { written_bytes_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t read_bytes() const { return read_bytes_.load(std::memory_order_relaxed); }
  uint64_t written_bytes() const { return written_bytes_.load(std::memory_order_relaxed); }

  int regions() const { return regions_.load(std::memory_order_relaxed); }
  uint64_t mapped_bytes() const { return mapped_bytes_.load(std::memory_order_relaxed); }
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }
  const std::string& socket_path() const { return options_.socket_path; }

 private:
  struct Conn;
  SharedMemoryRegistry(Options options, int listen_fd, int wake_fd);
  void Loop();
  // Handles the first packet of `conn` (a registration or an attach); returns the reply to send
  // (empty when the client closed the connection without a word). An accepted attach sets
  // conn->attached: the connection then goes to a call thread.
  std::string Hello(Conn* conn);
  std::string Register(Conn* conn, const std::string& packet, int fd);
  std::string Attach(Conn* conn, const std::string& packet);
  // Counts and logs a refused registration or attach; the reply carrying `status`.
  std::string Refuse(Conn* conn, const char* what, absl::Status status);
  void Drop(Conn* conn);
  // A call thread's loop over one attached connection.
  void ServeCalls(int fd);

  const Options options_;
  const int listen_fd_;
  const int wake_fd_;  // eventfd: the destructor wakes the loop through it
  std::thread thread_;
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<const Region>> by_handle_;  // Guarded by mu_.
  std::atomic<int> regions_{0};
  std::atomic<uint64_t> mapped_bytes_{0};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> read_bytes_{0};
  std::atomic<uint64_t> written_bytes_{0};
  // Call threads (detached): their connections, so the destructor can end them, and their count,
  // so it can wait for them.
  std::condition_variable calls_done_;
  absl::flat_hash_map<int, bool> call_fds_;  // Guarded by mu_.
  bool stopping_ = false;                    // Guarded by mu_.
};

}  // namespace kvtier::service

#endif  // KVTIER_SERVICE_SRC_SHARED_MEMORY_H_
