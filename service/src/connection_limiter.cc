#include "connection_limiter.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "kvtier/common/logging.h"

namespace kvtier::service {

namespace {

// Inodes of the sockets this process has open, from /proc/self/fd ("socket:[12345]").
absl::flat_hash_set<ino_t> OpenSocketInodes() {
  absl::flat_hash_set<ino_t> out;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return out;
  char link[64];
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const std::string path = std::string("/proc/self/fd/") + e->d_name;
    const ssize_t n = ::readlink(path.c_str(), link, sizeof(link) - 1);
    if (n <= 8 || std::strncmp(link, "socket:[", 8) != 0) continue;
    link[n] = '\0';
    out.insert(static_cast<ino_t>(std::strtoull(link + 8, nullptr, 10)));
  }
  ::closedir(dir);
  return out;
}

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

}  // namespace

absl::StatusOr<int> ListenUnix(const std::string& path, int type) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unix socket path too long (", path.size(), " bytes, at most ",
                     sizeof(addr.sun_path) - 1, "): ", path));
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(Errno("socket"));
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::chmod(path.c_str(), 0600) != 0 || ::listen(fd, SOMAXCONN) != 0) {
    const std::string e = Errno("cannot listen on unix:" + path);
    ::close(fd);
    return absl::UnavailableError(e);
  }
  return fd;
}

absl::StatusOr<std::pair<int, int>> ListenTcp(const std::string& host_port) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("'", host_port, "' is not host:port"));
  }
  std::string host = host_port.substr(0, colon);
  const std::string port = host_port.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve '", host_port, "': ", ::gai_strerror(rc)));
  }
  std::string last = "no address";
  for (const addrinfo* a = res; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last = Errno("socket");
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, SOMAXCONN) != 0) {
      last = Errno("bind/listen");
      ::close(fd);
      continue;
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof(bound);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
    const int p = bound.ss_family == AF_INET6
                      ? ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port)
                      : ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
    ::freeaddrinfo(res);
    return std::make_pair(fd, p);
  }
  ::freeaddrinfo(res);
  return absl::UnavailableError(absl::StrCat("cannot listen on ", host_port, ": ", last));
}

absl::StatusOr<std::unique_ptr<ConnectionLimiter>> ConnectionLimiter::Start(
    std::vector<int> listen_fds, int max_connections, std::function<void(int fd)> hand_over,
    int tls_port) {
  auto close_all = [&] {
    for (int fd : listen_fds) ::close(fd);
  };
  if (max_connections < 1) {
    close_all();
    return absl::InvalidArgumentError(
        absl::StrCat("max_connections = ", max_connections, ", must be >= 1"));
  }
  for (int fd : listen_fds) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
      close_all();
      return absl::InternalError(absl::StrCat("listening socket: ", std::strerror(errno)));
    }
  }
  const int wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    close_all();
    return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
  }
  std::unique_ptr<ConnectionLimiter> l(new ConnectionLimiter(
      std::move(listen_fds), max_connections, std::move(hand_over), wake, tls_port));
  l->thread_ = std::thread([p = l.get()] { p->Loop(); });
  return l;
}

ConnectionLimiter::ConnectionLimiter(std::vector<int> listen_fds, int max_connections,
                                     std::function<void(int)> hand_over, int wake_fd,
                                     int tls_port)
    : listen_fds_(std::move(listen_fds)),
      max_connections_(max_connections),
      hand_over_(std::move(hand_over)),
      wake_fd_(wake_fd),
      tls_port_(tls_port) {}

ConnectionLimiter::~ConnectionLimiter() {
  Stop();
  ::close(wake_fd_);
}

void ConnectionLimiter::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  const uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  for (int fd : listen_fds_) ::close(fd);
}

int ConnectionLimiter::Recount() {
  const absl::flat_hash_set<ino_t> alive = OpenSocketInodes();
  std::lock_guard<std::mutex> lock(mu_);
  return PruneLocked(alive);
}

int ConnectionLimiter::PruneLocked(const absl::flat_hash_set<ino_t>& alive) {
  for (auto* set : {&sockets_, &tls_, &tls_shut_}) {
    for (auto it = set->begin(); it != set->end();) {
      if (!alive.contains(*it)) {
        set->erase(it++);
      } else {
        ++it;
      }
    }
  }
  const int open = static_cast<int>(sockets_.size() + tls_.size());
  open_.store(open, std::memory_order_relaxed);
  tls_open_.store(static_cast<int>(tls_.size()), std::memory_order_relaxed);
  return open;
}

void ConnectionLimiter::OnAccepted(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return;
  }
  bool full;
  {
    std::lock_guard<std::mutex> lock(mu_);
    full = static_cast<int>(sockets_.size() + tls_.size()) >= max_connections_;
  }
  if (full) {
    // Recount (a /proc/self/fd scan) at most every 20 ms, so a storm of connection attempts at
    // the cap costs little; a place freed meanwhile is found by the client's next retry.
    const auto now = std::chrono::steady_clock::now();
    if (now - last_recount_ >= std::chrono::milliseconds(20)) {
      last_recount_ = now;
      full = Recount() >= max_connections_;
    }
  }
  if (full) {
    ::close(fd);
    if (refused_.fetch_add(1, std::memory_order_relaxed) % 100 == 0) {
      KVTIER_LOG(WARNING, "connection refused: {} connections open (server.max_connections)",
                 max_connections_);
    }
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    sockets_.insert(st.st_ino);
    open_.store(static_cast<int>(sockets_.size() + tls_.size()), std::memory_order_relaxed);
  }
  accepted_.fetch_add(1, std::memory_order_relaxed);
  hand_over_(fd);
}

void ConnectionLimiter::ScanTls() {
  // gRPC's accepted TLS connections: this process's sockets on the TLS port, not listening.
  struct Found {
    int fd;
    ino_t ino;
  };
  std::vector<Found> found;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return;
  const int dir_fd = ::dirfd(dir);
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const int fd = std::atoi(e->d_name);
    struct stat st;
    if (fd == dir_fd || ::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) continue;
    int port = 0;
    if (addr.ss_family == AF_INET) {
      port = ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);
    } else if (addr.ss_family == AF_INET6) {
      port = ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port);
    }
    int listening = 0;
    socklen_t optlen = sizeof(listening);
    if (port != tls_port_ ||
        ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) != 0 || listening) {
      continue;
    }
    found.push_back({fd, st.st_ino});
  }
  ::closedir(dir);
  // Connections gRPC closed (plaintext or TLS) free their places.
  const absl::flat_hash_set<ino_t> alive = OpenSocketInodes();
  std::vector<Found> excess;
  {
    std::lock_guard<std::mutex> lock(mu_);
    PruneLocked(alive);
    for (const Found& f : found) {
      if (tls_.contains(f.ino) || tls_shut_.contains(f.ino)) continue;
      if (static_cast<int>(sockets_.size() + tls_.size()) < max_connections_) {
        tls_.insert(f.ino);
      } else {
        tls_shut_.insert(f.ino);  // shut down once; gRPC closes it soon after
        excess.push_back(f);
      }
    }
    open_.store(static_cast<int>(sockets_.size() + tls_.size()), std::memory_order_relaxed);
    tls_open_.store(static_cast<int>(tls_.size()), std::memory_order_relaxed);
  }
  for (const Found& f : excess) {
    struct stat st;
    // Still the same socket (gRPC may have closed it and reused the number meanwhile).
    if (::fstat(f.fd, &st) == 0 && st.st_ino == f.ino) ::shutdown(f.fd, SHUT_RDWR);
    if (refused_.fetch_add(1, std::memory_order_relaxed) % 100 == 0) {
      KVTIER_LOG(WARNING, "TLS connection closed: {} connections open (server.max_connections)",
                 max_connections_);
    }
  }
}

void ConnectionLimiter::Loop() {
  std::vector<pollfd> fds;
  fds.push_back({wake_fd_, POLLIN, 0});
  for (int fd : listen_fds_) fds.push_back({fd, POLLIN, 0});
  while (true) {
    const int n = ::poll(fds.data(), fds.size(), tls_port_ != 0 ? 100 : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      KVTIER_LOG(ERROR, "connection acceptor: poll: {}", std::strerror(errno));
      return;
    }
    if (fds[0].revents != 0) return;  // Stop()
    if (tls_port_ != 0) ScanTls();
    for (size_t i = 1; i < fds.size(); ++i) {
      if ((fds[i].revents & POLLIN) == 0) continue;
      while (true) {
        const int fd = ::accept4(fds[i].fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          if (errno != EAGAIN && errno != EWOULDBLOCK) {
            KVTIER_LOG(WARNING, "connection acceptor: accept: {}", std::strerror(errno));
            // Out of descriptors (EMFILE) and the like: the connection stays queued; do not
            // spin on a listener that stays readable.
            ::poll(nullptr, 0, 10);
          }
          break;
        }
        OnAccepted(fd);
      }
    }
  }
}

}  // namespace kvtier::service
