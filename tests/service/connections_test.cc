// server.max_connections against the real kvtierd: with a cap of 2, two clients on their own
// connections are served, a third connection is closed at once (UNAVAILABLE, counted in
// kvtier_connections_refused_total), and once a client goes away the third one gets in. Both
// listeners count: the Unix socket and plaintext TCP.
#include <gtest/gtest.h>

#include <csignal>
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
// reconnect backoff.
std::shared_ptr<grpc::Channel> OwnChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
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

}  // namespace
}  // namespace kvtier
