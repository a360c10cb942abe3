// server.max_connections against the real kvtierd: with a cap of 2, two clients on their own
// connections are served, a third connection is closed at once (UNAVAILABLE, counted in
// kvtier_connections_refused_total), and once a client goes away the third one gets in. Every
// listener counts: the Unix socket, plaintext TCP, and TLS (shut down just after gRPC accepts).
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "daemon_process.h"
#include "kvtier.grpc.pb.h"

namespace kvtier {
namespace {

using testing::DaemonProcess;
using testing::TempDir;

// A channel with its own connection (no subchannel sharing with other channels) and a short
// reconnect backoff; TLS when `root_pem` is given (the daemon's certificate, for "localhost").
std::shared_ptr<grpc::Channel> OwnChannel(const std::string& target,
                                          const std::string& root_pem = "") {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  if (root_pem.empty()) {
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  }
  args.SetSslTargetNameOverride("localhost");
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = root_pem;
  return grpc::CreateCustomChannel(target, grpc::SslCredentials(ssl), args);
}

// Self-signed certificate for "localhost" through the openssl CLI; false when unavailable.
bool MakeCert(const std::string& dir) {
  const std::string cmd =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
      "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " + dir + "/key.pem -out " +
      dir + "/cert.pem >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

grpc::Status List(const std::shared_ptr<grpc::Channel>& ch, bool wait_for_ready,
                  std::chrono::milliseconds timeout) {
  auto stub = v1::KvTier::NewStub(ch);
  grpc::ClientContext ctx;
  ctx.set_wait_for_ready(wait_for_ready);
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  v1::ListNamespacesRequest req;
  v1::ListNamespacesResponse resp;
  return stub->ListNamespaces(&ctx, req, &resp);
}

TEST(ConnectionsTest, CapIsEnforcedAndFreedPlacesAreReused) {
  TempDir dir;
  DaemonProcess d(KVTIER_KVTIERD, dir.path());
  d.flags.push_back("--server.max_connections=2");
  ASSERT_TRUE(d.Start()) << d.ReadLog();
  // Start() polled health on channels of its own; let their connections close.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  const std::string unix_target = "unix:" + d.socket_path();
  const std::string tcp_target = "127.0.0.1:" + std::to_string(d.tcp_port());
  auto a = OwnChannel(unix_target);
  auto b = OwnChannel(tcp_target);
  ASSERT_TRUE(List(a, true, std::chrono::seconds(10)).ok());
  ASSERT_TRUE(List(b, true, std::chrono::seconds(10)).ok());

  // A third connection: refused at connect, so the call fails fast with UNAVAILABLE.
  auto c = OwnChannel(unix_target);
  const grpc::Status refused = List(c, false, std::chrono::seconds(5));
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
  // The two admitted clients keep working.
  EXPECT_TRUE(List(a, false, std::chrono::seconds(5)).ok());
  EXPECT_TRUE(List(b, false, std::chrono::seconds(5)).ok());

  auto m = d.ScrapeMetrics();  // over HTTP: not a gRPC connection
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(testing::MetricValue(*m, "kvtier_connections_open"), 2);
  EXPECT_GE(testing::MetricValue(*m, "kvtier_connections_refused_total"), 1);

  // The Unix client goes away; its place is free and the waiting client connects.
  a.reset();
  const grpc::Status admitted = List(c, true, std::chrono::seconds(15));
  EXPECT_TRUE(admitted.ok()) << admitted.error_message();
  m = d.ScrapeMetrics();
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(testing::MetricValue(*m, "kvtier_connections_open"), 2);

  c.reset();
  b.reset();
  d.Signal(SIGTERM);
  EXPECT_EQ(d.WaitExit(), 0) << d.ReadLog();
}

// TLS connections, which gRPC accepts itself, count against the same cap: with a cap of 2, a
// third TLS connection is shut down shortly after its accept (counted as refused, never counted
// as open), the two admitted ones keep working, and once one goes away the third gets in.
TEST(ConnectionsTest, TlsConnectionsAreCappedToo) {
  TempDir dir;
  if (!MakeCert(dir.path())) GTEST_SKIP() << "openssl CLI unavailable";
  std::ifstream cert_file(dir.path() + "/cert.pem");
  const std::string cert((std::istreambuf_iterator<char>(cert_file)),
                         std::istreambuf_iterator<char>());
  DaemonProcess d(KVTIER_KVTIERD, dir.path());
  d.flags = {"--server.max_connections=2", "--server.unix_socket=" + dir.path() + "/kvtierd.sock",
             "--server.tls_cert_file=" + dir.path() + "/cert.pem",
             "--server.tls_key_file=" + dir.path() + "/key.pem"};
  ASSERT_TRUE(d.Start()) << d.ReadLog();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // Start()'s health channels close
  const std::string target = "127.0.0.1:" + std::to_string(d.tcp_port());
  auto a = OwnChannel(target, cert);
  auto b = OwnChannel(target, cert);
  ASSERT_TRUE(List(a, true, std::chrono::seconds(10)).ok());
  ASSERT_TRUE(List(b, true, std::chrono::seconds(10)).ok());
  auto open_and_refused = [&] {
    auto m = d.ScrapeMetrics();
    EXPECT_TRUE(m.ok()) << m.status();
    return std::make_pair(testing::MetricValue(*m, "kvtier_connections_open"),
                          testing::MetricValue(*m, "kvtier_connections_refused_total"));
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(250));  // TLS is looked at every 100 ms
  EXPECT_EQ(open_and_refused().first, 2);

  // A third TLS client: its connection is shut down within about 100 ms, again at each reconnect.
  auto c = OwnChannel(target, cert);
  c->GetState(/*try_to_connect=*/true);
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  for (int i = 0; i < 3; ++i) {
    const auto [open, refused] = open_and_refused();
    EXPECT_EQ(open, 2);
    EXPECT_GE(refused, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
  }
  EXPECT_TRUE(List(a, false, std::chrono::seconds(5)).ok());
  EXPECT_TRUE(List(b, false, std::chrono::seconds(5)).ok());

  // One admitted client goes away: the third one gets its place and keeps it.
  a.reset();
  ASSERT_TRUE(List(c, true, std::chrono::seconds(15)).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_TRUE(List(c, false, std::chrono::seconds(5)).ok());
  EXPECT_EQ(open_and_refused().first, 2);
  c.reset();
  b.reset();
  d.Signal(SIGTERM);
  EXPECT_EQ(d.WaitExit(), 0) << d.ReadLog();
}

}  // namespace
}  // namespace kvtier
