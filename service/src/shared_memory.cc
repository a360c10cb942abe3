#include "shared_memory.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "auth.h"
#include "connection_limiter.h"
#include "kvtier/common/logging.h"
#include "kvtier/common/shm_protocol.h"

namespace kvtier::service {

struct SharedMemoryRegistry::Conn {
  int fd = -1;
  std::string handle;     // set once a region is registered on this connection
  bool attached = false;  // an accepted call-channel connection (handed to a call thread)
  ucred peer{};
};

SharedMemoryRegistry::Region::~Region() { ::munmap(base, size); }

absl::StatusOr<std::unique_ptr<SharedMemoryRegistry>> SharedMemoryRegistry::Start(
    Options options) {
  if (options.max_regions == 0 || options.max_region_bytes == 0) {
    return absl::InvalidArgumentError("shared memory: max_regions and max_region_bytes must be > 0");
  }
  struct stat st {};
  if (::lstat(options.socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat(options.socket_path, " exists and is not a socket"));
    }
    ::unlink(options.socket_path.c_str());  // a stale socket of an earlier run
  }
  auto fd = ListenUnix(options.socket_path, SOCK_SEQPACKET);
  if (!fd.ok()) return fd.status();
  const int wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    ::close(*fd);
    return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
  }
  std::unique_ptr<SharedMemoryRegistry> r(new SharedMemoryRegistry(std::move(options), *fd, wake));
  r->thread_ = std::thread([p = r.get()] { p->Loop(); });
  return r;
}

SharedMemoryRegistry::SharedMemoryRegistry(Options options, int listen_fd, int wake_fd)
    : options_(std::move(options)), listen_fd_(listen_fd), wake_fd_(wake_fd) {}

SharedMemoryRegistry::~SharedMemoryRegistry() {
  const uint64_t one = 1;
  if (::write(wake_fd_, &one, sizeof(one)) < 0) {
    KVTIER_LOG(WARNING, "shared memory: cannot wake the registration thread: {}",
               std::strerror(errno));
  }
  if (thread_.joinable()) thread_.join();
  {
    // End the call threads: each is blocked reading its connection, or finishing one call.
    std::unique_lock<std::mutex> lock(mu_);
    stopping_ = true;
    for (const auto& [fd, unused] : call_fds_) ::shutdown(fd, SHUT_RDWR);
    calls_done_.wait(lock, [this] { return call_fds_.empty(); });
  }
  ::close(wake_fd_);
  ::close(listen_fd_);
  ::unlink(options_.socket_path.c_str());
}

absl::StatusOr<SharedMemoryRegistry::View> SharedMemoryRegistry::Resolve(
    const std::string& handle, uint64_t offset, uint64_t length) const {
  std::shared_ptr<const Region> region;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_handle_.find(handle);
    if (it != by_handle_.end()) region = it->second;
  }
  if (region == nullptr) {
    return absl::FailedPreconditionError(
        "shared memory region not registered with this kvtierd (it restarted, or the region's "
        "connection closed): register it again");
  }
  if (offset > region->size || length > region->size - offset) {
    return absl::InvalidArgumentError(absl::StrCat("shared memory range [", offset, ", +", length,
                                                   ") is outside the region of ", region->size,
                                                   " bytes"));
  }
  View v;
  v.data = region->base + offset;
  v.size = length;
  v.region = std::move(region);
  return v;
}

std::string SharedMemoryRegistry::Hello(Conn* conn) {
  std::string packet;
  int fd = -1;
  absl::Status received = shm::ReceivePacket(conn->fd, &packet, &fd);
  if (received.ok() && packet.empty() && fd < 0) return std::string();  // closed without a word
  if (received.ok() && shm::ClassifyHello(packet) == shm::Hello::kAttach) {
    if (fd >= 0) ::close(fd);
    return Attach(conn, packet);
  }
  if (!received.ok()) return Refuse(conn, "registration", received);
  return Register(conn, packet, fd);
}

std::string SharedMemoryRegistry::Refuse(Conn* conn, const char* what, absl::Status status) {
  refused_.fetch_add(1, std::memory_order_relaxed);
  KVTIER_LOG(WARNING, "shared memory {} from pid {} refused: {}", what, conn->peer.pid,
             status.ToString());
  shm::Reply reply;
  reply.status = std::move(status);
  return shm::EncodeReply(reply);
}

std::string SharedMemoryRegistry::Attach(Conn* conn, const std::string& packet) {
  auto fail = [&](absl::Status s) { return Refuse(conn, "call channel", std::move(s)); };
  auto attach = shm::DecodeAttach(packet);
  if (!attach.ok()) return fail(attach.status());
  if (!options_.token.empty() && !ConstantTimeEquals(attach->token, options_.token)) {
    return fail(absl::UnauthenticatedError("missing or wrong token"));
  }
  auto view = Resolve(attach->handle, 0, 0);
  if (!view.ok()) return fail(view.status());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (call_fds_.size() >= options_.max_call_connections) {
      return fail(absl::ResourceExhaustedError(
          absl::StrCat(options_.max_call_connections, " call-channel connections are open "
                       "(server.shared_memory_max_call_connections)")));
    }
  }
  if (options_.on_call == nullptr) {
    return fail(absl::UnimplementedError("this kvtierd serves no shared-memory calls"));
  }
  conn->attached = true;
  shm::Reply reply;
  reply.handle = attach->handle;
  reply.region_bytes = view->region->size;
  return shm::EncodeReply(reply);
}

std::string SharedMemoryRegistry::Register(Conn* conn, const std::string& packet, int fd) {
  auto fail = [&](absl::Status s) {
    if (fd >= 0) ::close(fd);
    return Refuse(conn, "registration", std::move(s));
  };
  auto token = shm::DecodeRequest(packet);
  if (!token.ok()) return fail(token.status());
  if (!options_.token.empty() && !ConstantTimeEquals(*token, options_.token)) {
    return fail(absl::UnauthenticatedError("missing or wrong token"));
  }
  if (fd < 0) return fail(absl::InvalidArgumentError("no file descriptor attached"));
  if (regions_.load() >= static_cast<int>(options_.max_regions)) {
    return fail(absl::ResourceExhaustedError(absl::StrCat(
        options_.max_regions, " regions are registered (server.shared_memory_max_regions)")));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
    return fail(absl::InvalidArgumentError("the descriptor is not a non-empty memfd"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > options_.max_region_bytes) {
    return fail(absl::ResourceExhaustedError(
        absl::StrCat("region of ", size, " bytes exceeds server.shared_memory_max_region_bytes (",
                     options_.max_region_bytes, ")")));
  }
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & F_SEAL_SHRINK) == 0) {
    return fail(absl::FailedPreconditionError(
        "the region must be a memfd sealed against shrinking (memfd_create with "
        "MFD_ALLOW_SEALING, then fcntl F_ADD_SEALS F_SEAL_SHRINK)"));
  }
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("cannot map the region read-write: ", std::strerror(errno))));
  }
  ::close(fd);
  fd = -1;
  std::string handle(shm::kHandleBytes, '\0');
  if (::getrandom(handle.data(), handle.size(), 0) != static_cast<ssize_t>(handle.size())) {
    ::munmap(base, size);
    return fail(absl::InternalError("getrandom failed"));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    by_handle_[handle] = std::make_shared<const Region>(static_cast<uint8_t*>(base), size);
  }
  conn->handle = handle;
  regions_.fetch_add(1, std::memory_order_relaxed);
  mapped_bytes_.fetch_add(size, std::memory_order_relaxed);
  KVTIER_LOG(INFO, "shared memory region of {} bytes registered by pid {} (uid {})", size,
             conn->peer.pid, conn->peer.uid);
  shm::Reply reply;
  reply.handle = handle;
  reply.region_bytes = size;
  return shm::EncodeReply(reply);
}

void SharedMemoryRegistry::Drop(Conn* conn) {
  if (!conn->handle.empty()) {
    std::shared_ptr<const Region> region;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = by_handle_.find(conn->handle);
      if (it != by_handle_.end()) {
        region = std::move(it->second);
        by_handle_.erase(it);
      }
    }
    if (region != nullptr) {
      regions_.fetch_sub(1, std::memory_order_relaxed);
      mapped_bytes_.fetch_sub(region->size, std::memory_order_relaxed);
      KVTIER_LOG(INFO, "shared memory region of {} bytes of pid {} unregistered", region->size,
                 conn->peer.pid);
    }
    conn->handle.clear();
  }
  ::close(conn->fd);
  conn->fd = -1;
}

void SharedMemoryRegistry::Loop() {
  std::vector<std::unique_ptr<Conn>> conns;
  // Connections beyond this are closed at once: registered regions plus a few registering.
  const size_t max_conns = static_cast<size_t>(options_.max_regions) + 16;
  for (;;) {
    std::vector<pollfd> fds = {{wake_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    for (const auto& c : conns) fds.push_back({c->fd, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      KVTIER_LOG(ERROR, "shared memory: poll failed: {}", std::strerror(errno));
      break;
    }
    if (fds[0].revents != 0) break;  // shutting down
    for (size_t i = 0; i < conns.size(); ++i) {
      Conn* c = conns[i].get();
      const short ev = fds[i + 2].revents;
      if (ev == 0) continue;
      if (c->handle.empty() && (ev & POLLIN) != 0) {
        // The first packet: answer it; a refused one ends the connection.
        const std::string reply = Hello(c);
        const bool ok = !c->handle.empty() || c->attached;
        if (reply.empty() || !shm::SendPacket(c->fd, reply, -1).ok() || !ok) {
          Drop(c);
        } else if (c->attached) {
          // A call channel: from now on its own thread reads it.
          const int fd = c->fd;
          c->fd = -1;
          bool started = false;
          {
            std::lock_guard<std::mutex> lock(mu_);
            if (!stopping_) {
              call_fds_[fd] = true;
              started = true;
            }
          }
          if (started) {
            std::thread([this, fd] { ServeCalls(fd); }).detach();
          } else {
            ::close(fd);
          }
        }
      } else {
        // EOF, an error, or an unexpected second packet: the client is gone or misbehaves.
        Drop(c);
      }
    }
    conns.erase(std::remove_if(conns.begin(), conns.end(),
                               [](const std::unique_ptr<Conn>& c) { return c->fd < 0; }),
                conns.end());
    if ((fds[1].revents & POLLIN) != 0) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        if (conns.size() >= max_conns) {
          refused_.fetch_add(1, std::memory_order_relaxed);
          ::close(fd);
        } else {
          auto c = std::make_unique<Conn>();
          c->fd = fd;
          socklen_t len = sizeof(c->peer);
          ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c->peer, &len);
          conns.push_back(std::move(c));
        }
      }
    }
  }
  for (auto& c : conns) Drop(c.get());
}

void SharedMemoryRegistry::ServeCalls(int fd) {
  std::string packet, reply_body;
  for (;;) {
    int extra_fd = -1;
    if (!shm::ReceivePacket(fd, &packet, &extra_fd).ok() || packet.empty()) break;
    if (extra_fd >= 0) ::close(extra_fd);
    absl::StatusOr<shm::Call> call = shm::DecodeCall(packet);
    absl::Status status = call.status();
    reply_body.clear();
    if (call.ok()) status = options_.on_call(*call, &reply_body);
    if (!shm::SendPacket(fd, shm::EncodeCallReply(status, status.ok() ? reply_body : ""), -1)
             .ok()) {
      break;  // the client gave up on the call (its deadline) or went away
    }
  }
  // Closed under the lock, so the destructor never shuts down a number reused meanwhile.
  std::lock_guard<std::mutex> lock(mu_);
  call_fds_.erase(fd);
  ::close(fd);
  calls_done_.notify_all();
}

}  // namespace kvtier::service
