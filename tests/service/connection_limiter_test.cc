// ConnectionLimiter on a real Unix socket, with a stand-in for gRPC that keeps each handed-over
// descriptor: connections beyond the cap are closed at once (the client reads EOF), and a
// connection whose descriptor the server closed frees its place.
#include "connection_limiter.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.h"

namespace kvtier::service {
namespace {

int Listen(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << std::strerror(errno);
  EXPECT_EQ(::listen(fd, 16), 0);
  return fd;
}

int Connect(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool WaitFor(const std::function<bool()>& cond) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return cond();
}

// True when the server side closed the connection (EOF or reset), within a few seconds.
bool ClosedByServer(int fd) {
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char b;
  const ssize_t n = ::recv(fd, &b, 1, 0);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

TEST(ConnectionLimiterTest, CapsOpenConnectionsAndFreesClosedOnes) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/s.sock";
  std::mutex mu;
  std::vector<int> handed;  // The "server's" descriptors.
  auto limiter = ConnectionLimiter::Start({Listen(path)}, 2, [&](int fd) {
    std::lock_guard<std::mutex> lock(mu);
    handed.push_back(fd);
  });
  ASSERT_TRUE(limiter.ok()) << limiter.status();
  ConnectionLimiter& l = **limiter;

  const int c1 = Connect(path), c2 = Connect(path);
  ASSERT_GE(c1, 0);
  ASSERT_GE(c2, 0);
  ASSERT_TRUE(WaitFor([&] { return l.accepted() == 2; }));
  EXPECT_EQ(l.open_connections(), 2);

  // A third connection is over the cap: closed by the server, the other two untouched.
  const int c3 = Connect(path);
  ASSERT_GE(c3, 0);
  ASSERT_TRUE(WaitFor([&] { return l.refused() == 1; }));
  EXPECT_TRUE(ClosedByServer(c3));
  ::close(c3);
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(handed.size(), 2u);
    ASSERT_EQ(::write(handed[1], "x", 1), 1);  // c2 still works
  }
  char b = 0;
  ASSERT_EQ(::read(c2, &b, 1), 1);
  EXPECT_EQ(b, 'x');

  // The server closes c1 (as gRPC does on idle timeout): its place is free again.
  {
    std::lock_guard<std::mutex> lock(mu);
    ::close(handed[0]);
  }
  ::close(c1);
  // As a client would, retry until admitted (the limiter recounts at most every 20 ms, so an
  // attempt right after the refusal above may be refused too).
  int c4 = -1;
  for (int attempt = 0; attempt < 100 && l.accepted() < 3; ++attempt) {
    if (c4 >= 0) ::close(c4);
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    c4 = Connect(path);
    ASSERT_GE(c4, 0);
    WaitFor([&] { return l.accepted() + l.refused() >= static_cast<uint64_t>(attempt) + 4; });
  }
  ASSERT_EQ(l.accepted(), 3u);
  EXPECT_GE(l.refused(), 1u);
  EXPECT_EQ(l.open_connections(), 2);
  EXPECT_EQ(l.Recount(), 2);

  // After Stop nothing listens any more.
  l.Stop();
  EXPECT_LT(Connect(path), 0);
  ::close(c2);
  ::close(c4);
  std::lock_guard<std::mutex> lock(mu);
  for (size_t i = 1; i < handed.size(); ++i) ::close(handed[i]);
}

TEST(ConnectionLimiterTest, RejectsANonPositiveCap) {
  testing::TempDir dir;
  auto limiter = ConnectionLimiter::Start({Listen(dir.path() + "/s.sock")}, 0, [](int fd) {
    ::close(fd);
  });
  EXPECT_EQ(limiter.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::service
