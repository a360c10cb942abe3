#include "shared_arena.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "kvtier/common/shm_protocol.h"

namespace kvtier::client::internal {
namespace {

constexpr uint64_t kAlign = 4096;

std::string Errno(const char* what) { return fmt::format("{}: {}", what, std::strerror(errno)); }

// A SOCK_SEQPACKET connection to `path`, or Unavailable.
absl::StatusOr<int> ConnectSeqpacket(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError("shared-memory socket path too long");
  }
  const int sock = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (sock < 0) return absl::InternalError(Errno("socket"));
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::connect(sock, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const std::string e = Errno(("connect " + path).c_str());
    ::close(sock);
    return absl::UnavailableError(e);
  }
  return sock;
}

// Waits until `fd` is readable or `deadline` passes.
bool WaitReadable(int fd, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() < 0) return false;
    pollfd p{fd, POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30)));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

constexpr size_t kMaxIdleConnections = 64;

}  // namespace

std::string UnixSocketPath(const std::string& target) {
  if (target.rfind("unix:", 0) != 0) return "";
  std::string path = target.substr(5);
  if (path.rfind("///", 0) == 0) path = path.substr(2);
  return path;
}

absl::StatusOr<std::unique_ptr<SharedArena>> SharedArena::Register(const std::string& socket_path,
                                                                   uint64_t bytes,
                                                                   const std::string& token) {
  bytes = (bytes + kAlign - 1) / kAlign * kAlign;
  if (bytes == 0) return absl::InvalidArgumentError("shared memory size is 0");
  absl::StatusOr<int> connected = ConnectSeqpacket(socket_path);
  if (!connected.ok()) return connected.status();
  const int sock = *connected;
  const int memfd = ::memfd_create("kvtier-client", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (memfd < 0) {
    ::close(sock);
    return absl::InternalError(Errno("memfd_create"));
  }
  uint8_t* base = nullptr;
  absl::Status status;
  if (::ftruncate(memfd, static_cast<off_t>(bytes)) != 0 ||
      ::fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    status = absl::InternalError(Errno("sizing or sealing the memfd"));
  } else {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (p == MAP_FAILED) {
      status = absl::ResourceExhaustedError(Errno("mmap"));
    } else {
      base = static_cast<uint8_t*>(p);
    }
  }
  std::string reply_packet;
  int no_fd = -1;
  if (status.ok()) status = shm::SendPacket(sock, shm::EncodeRequest(token), memfd);
  if (status.ok()) status = shm::ReceivePacket(sock, &reply_packet, &no_fd);
  if (no_fd >= 0) ::close(no_fd);
  absl::StatusOr<shm::Reply> reply = absl::UnavailableError("the daemon closed the connection");
  if (status.ok() && !reply_packet.empty()) reply = shm::DecodeReply(reply_packet);
  if (status.ok()) status = reply.ok() ? reply->status : reply.status();
  if (status.ok() && reply->region_bytes != bytes) {
    status = absl::InternalError("the daemon mapped a different region size");
  }
  if (!status.ok()) {
    if (base != nullptr) ::munmap(base, bytes);
    ::close(memfd);
    ::close(sock);
    return status;
  }
  return std::unique_ptr<SharedArena>(
      new SharedArena(memfd, sock, base, bytes, reply->handle, socket_path, token));
}

SharedArena::SharedArena(int memfd, int sock, uint8_t* base, uint64_t size, std::string handle,
                         std::string socket_path, std::string token)
    : memfd_(memfd),
      sock_(sock),
      base_(base),
      size_(size),
      handle_(std::move(handle)),
      socket_path_(std::move(socket_path)),
      token_(std::move(token)) {
  free_[0] = size;
}

SharedArena::~SharedArena() {
  for (int fd : idle_) ::close(fd);
  ::close(sock_);
  ::munmap(base_, size_);
  ::close(memfd_);
}

std::optional<SharedArena::Block> SharedArena::Allocate(uint64_t size) {
  size = std::max<uint64_t>(kAlign, (size + kAlign - 1) / kAlign * kAlign);
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < size) continue;
    Block b{it->first, size, base_ + it->first};
    const uint64_t rest = it->second - size;
    const uint64_t rest_at = it->first + size;
    free_.erase(it);
    if (rest > 0) free_[rest_at] = rest;
    return b;
  }
  return std::nullopt;
}

void SharedArena::Free(const Block& block) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t offset = block.offset, size = block.size;
  auto next = free_.lower_bound(offset);
  if (next != free_.end() && offset + size == next->first) {  // merge with the range after
    size += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {  // merge with the range before
      prev->second += size;
      return;
    }
  }
  free_[offset] = size;
}

uint64_t SharedArena::LargestFree() const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t best = 0;
  for (const auto& [offset, size] : free_) best = std::max(best, size);
  return best;
}

absl::StatusOr<int> SharedArena::TakeConnection() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      const int fd = idle_.back();
      idle_.pop_back();
      return fd;
    }
  }
  absl::StatusOr<int> fd = ConnectSeqpacket(socket_path_);
  if (!fd.ok()) return fd.status();
  std::string packet;
  int no_fd = -1;
  absl::Status s = shm::SendPacket(*fd, shm::EncodeAttach(handle_, token_), -1);
  if (s.ok()) s = shm::ReceivePacket(*fd, &packet, &no_fd);
  if (no_fd >= 0) ::close(no_fd);
  if (s.ok()) {
    absl::StatusOr<shm::Reply> reply = absl::UnavailableError("the daemon closed the connection");
    if (!packet.empty()) reply = shm::DecodeReply(packet);
    s = reply.ok() ? reply->status : reply.status();
  }
  if (!s.ok()) {
    ::close(*fd);
    return absl::UnavailableError(fmt::format("shared-memory call channel: {}", s.ToString()));
  }
  return fd;
}

void SharedArena::ReturnConnection(int fd) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (idle_.size() < kMaxIdleConnections) {
      idle_.push_back(fd);
      return;
    }
  }
  ::close(fd);
}

absl::StatusOr<std::string> SharedArena::Call(shm::Op op, const std::string& body,
                                              std::chrono::steady_clock::time_point deadline) {
  absl::StatusOr<int> fd = TakeConnection();
  if (!fd.ok()) return fd.status();
  // The time left travels with the call, so the daemon gives up on it when the caller has.
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  const uint32_t timeout_ms = static_cast<uint32_t>(
      std::clamp<int64_t>(left.count(), 1, std::numeric_limits<uint32_t>::max()));
  absl::Status s = shm::SendPacket(*fd, shm::EncodeCall(op, timeout_ms, body), -1);
  if (!s.ok()) {
    ::close(*fd);
    return absl::UnavailableError(fmt::format("shared-memory call channel: {}", s.ToString()));
  }
  if (!WaitReadable(*fd, deadline)) {
    // The answer may still come: this connection can no longer be paired with calls.
    ::close(*fd);
    return absl::DeadlineExceededError("no answer from kvtierd before the call's deadline");
  }
  std::string packet;
  int no_fd = -1;
  s = shm::ReceivePacket(*fd, &packet, &no_fd);
  if (no_fd >= 0) ::close(no_fd);
  if (!s.ok() || packet.empty()) {
    ::close(*fd);
    return absl::UnavailableError("shared-memory call channel closed by kvtierd");
  }
  absl::StatusOr<shm::CallReply> reply = shm::DecodeCallReply(packet);
  if (!reply.ok()) {
    ::close(*fd);
    return reply.status();
  }
  ReturnConnection(*fd);
  if (!reply->status.ok()) return reply->status;
  return std::move(reply->body);
}

bool SharedArena::alive() const {
  pollfd p{sock_, POLLIN, 0};
  // The daemon never writes after the reply: readable means it closed the connection.
  return ::poll(&p, 1, 0) == 0;
}

}  // namespace kvtier::client::internal
