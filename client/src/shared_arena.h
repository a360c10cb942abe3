// SharedArena: the client SDK's side of same-node shared memory (kvtier/common/shm_protocol.h,
// docs/API.md "Shared memory"). One memfd per Client, sealed against shrinking, registered with
// kvtierd; Put copies a value into a block of it and names the block instead of streaming the
// bytes, Get names a block for the daemon to write the answer into.
//
// Calls: Put and Get naming the region can go through gRPC, or through the call channel
// (shm_protocol.h): Call() sends one request packet on a connection attached to the region and
// waits for the reply. Connections are opened on demand, one per concurrent call, and reused.
//
// Memory: the region is created at its full size but its pages are only allocated as blocks are
// first used; first-fit allocation keeps reusing the low addresses.
//
// Thread-safety: Allocate/Free/alive are thread-safe.
#ifndef KVTIER_CLIENT_SRC_SHARED_ARENA_H_
#define KVTIER_CLIENT_SRC_SHARED_ARENA_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <chrono>
#include <vector>

#include "absl/status/statusor.h"
#include "kvtier/common/shm_protocol.h"

namespace kvtier::client::internal {

class SharedArena {
 public:
  // A range of the region.
  struct Block {
    uint64_t offset = 0;
    uint64_t size = 0;
    uint8_t* data = nullptr;
  };

  // Creates a region of `bytes` and registers it on the daemon's shared-memory socket
  // `socket_path`. Unavailable when nothing listens there (the daemon has shared memory off, or
  // runs on another node); the daemon's refusal otherwise.
  static absl::StatusOr<std::unique_ptr<SharedArena>> Register(const std::string& socket_path,
                                                               uint64_t bytes,
                                                               const std::string& token);
  ~SharedArena();  // closes the registration (the daemon unregisters the region) and unmaps
  SharedArena(const SharedArena&) = delete;
  SharedArena& operator=(const SharedArena&) = delete;

  // A free block of at least `size` bytes (rounded up to 4 KiB), or nullopt when none is free.
  std::optional<Block> Allocate(uint64_t size);
  void Free(const Block& block);
  // The largest block Allocate could return now.
  uint64_t LargestFree() const;

  // One call on the call channel. The call's own status (and the reply body) when the daemon
  // answered; Unavailable when the channel could not be used (attach refused, connection broken:
  // use gRPC instead); DeadlineExceeded when no answer came by `deadline` (that connection is
  // dropped).
  absl::StatusOr<std::string> Call(shm::Op op, const std::string& body,
                                   std::chrono::steady_clock::time_point deadline);

  const std::string& handle() const { return handle_; }
  uint64_t size() const { return size_; }
  // False once the daemon closed the registration (it stopped or restarted): register again.
  bool alive() const;

 private:
  SharedArena(int memfd, int sock, uint8_t* base, uint64_t size, std::string handle,
              std::string socket_path, std::string token);
  // An idle call-channel connection, or a new attached one.
  absl::StatusOr<int> TakeConnection();
  void ReturnConnection(int fd);

  const int memfd_;
  const int sock_;
  uint8_t* const base_;
  const uint64_t size_;
  const std::string handle_;
  const std::string socket_path_;
  const std::string token_;
  mutable std::mutex mu_;
  std::map<uint64_t, uint64_t> free_;  // Guarded by mu_: offset -> size of each free range.
  std::vector<int> idle_;              // Guarded by mu_: idle call-channel connections.
};

// The path of a "unix:" target ("unix:/abs", "unix:///abs", "unix:rel"), or "" for other targets.
std::string UnixSocketPath(const std::string& target);

}  // namespace kvtier::client::internal

#endif  // KVTIER_CLIENT_SRC_SHARED_ARENA_H_
