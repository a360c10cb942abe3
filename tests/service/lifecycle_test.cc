// Integration: the daemon's lifecycle and security surface, against the real kvtierd process.
//   RELIABILITY.md 2  : kill -9 then restart; every acknowledged (disk) chunk is readable.
//   RELIABILITY.md 17 : SIGTERM -> NOT_SERVING, in-flight Put finishes, RocksDB closed, exit 0.
//   RELIABILITY.md 18 : non-loopback TCP without TLS + token refuses to start.
//   RELIABILITY.md 19 : missing/wrong token -> UNAUTHENTICATED before any payload is read;
//                       the token never appears in the log. TLS + token over TCP works.
#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "daemon_process.h"
#include "kvtier/kernels/device.h"
#include "gtest/gtest.h"
#include "rpc_util.h"

namespace kvtier {
namespace {

using testing::DaemonProcess;
using testing::TempDir;
using v1::DATA_FORMAT_TENSOR;

constexpr uint32_t kTpc = 16;
const v1::Layout kLayout = rpc::MhaLayout(2, 2, 2, 64);

grpc::Status CreateNs(v1::KvTier::Stub* stub, const std::string& name,
                      const rpc::CallSettings& call = {}) {
  grpc::ClientContext ctx;
  rpc::Prepare(&ctx, call);
  return testing::CreateNamespace(stub, &ctx, name, "fp8", kLayout, kTpc);
}

std::string Chunk(uint64_t seed) {
  return rpc::SyntheticFp16(rpc::TensorBytes(kLayout, kTpc), seed);
}

TEST(LifecycleTest, KillNineThenRestartKeepsAcknowledgedChunks) {
  TempDir dir;
  DaemonProcess d(KVTIER_KVTIERD, dir.path());
  // Host tier off: every Put is acknowledged from the disk tier (RocksDB WAL).
  d.flags = {"--storage.host.capacity_bytes=0"};
  ASSERT_TRUE(d.Start()) << d.ReadLog();
  auto stub = d.Stub();
  ASSERT_TRUE(CreateNs(stub.get(), "kv").ok());
  std::vector<std::string> tensors;
  constexpr int kChunks = 40;
  for (int i = 0; i < kChunks; ++i) {
    auto put = rpc::Put(stub.get(), "kv", rpc::SeedKey(i), Chunk(i), DATA_FORMAT_TENSOR, kTpc);
    ASSERT_TRUE(put.status.ok()) << put.status.error_message();
    auto g = rpc::Get(stub.get(), "kv", rpc::SeedKey(i), DATA_FORMAT_TENSOR);
    ASSERT_TRUE(g.status.ok());
    tensors.push_back(g.data);  // what the daemon acknowledged and served
  }
  d.Kill9();
  ASSERT_TRUE(d.Start()) << d.ReadLog();
  stub = d.Stub();
  grpc::ClientContext ctx;
  v1::GetNamespaceRequest gn;
  gn.set_name("kv");
  v1::GetNamespaceResponse gnr;
  ASSERT_TRUE(stub->GetNamespace(&ctx, gn, &gnr).ok());  // namespaces survive too
  for (int i = 0; i < kChunks; ++i) {
    auto g = rpc::Get(stub.get(), "kv", rpc::SeedKey(i), DATA_FORMAT_TENSOR);
    ASSERT_TRUE(g.status.ok()) << "chunk " << i << ": " << g.status.error_message();
    EXPECT_TRUE(g.crc_ok);
    EXPECT_EQ(g.data, tensors[i]) << "chunk " << i;
  }
}

TEST(LifecycleTest, SigtermDrainsGracefully) {
  TempDir dir;
  DaemonProcess d(KVTIER_KVTIERD, dir.path());
  // Host tier off, so the drained Put lands on disk and must be there after the restart (memory
  // tiers are a cache: their contents are not carried over a restart).
  d.flags = {"--storage.host.capacity_bytes=0"};
  ASSERT_TRUE(d.Start()) << d.ReadLog();
  auto stub = d.Stub();
  ASSERT_TRUE(CreateNs(stub.get(), "kv").ok());
  // Start a Put stream, SIGTERM in the middle, then finish it: it must succeed.
  const std::string data = Chunk(1);
  const std::string key = rpc::SeedKey(1);
  grpc::ClientContext ctx;
  v1::PutResponse resp;
  auto w = stub->Put(&ctx, &resp);
  v1::PutRequest m;
  auto* h = m.mutable_header();
  h->set_namespace_("kv");
  h->set_key(key);
  h->set_format(DATA_FORMAT_TENSOR);
  h->set_num_tokens(kTpc);
  h->set_total_bytes(data.size());
  h->set_crc32c(rpc::Crc32c(data));
  m.set_data(data.substr(0, data.size() / 2));
  ASSERT_TRUE(w->Write(m));
  // Make sure the handler is running before the signal.
  for (int i = 0; i < 200; ++i) {
    auto metrics = d.ScrapeMetrics();
    if (metrics.ok() && testing::MetricValue(*metrics, "kvtier_rpcs_in_flight") >= 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  d.Signal(SIGTERM);
  // Health turns NOT_SERVING (or the listener is already gone) while the Put is still open.
  bool not_serving = false;
  for (int i = 0; i < 200 && !not_serving; ++i) {
    auto health = d.Health();
    not_serving = !health.ok() || *health != grpc::health::v1::HealthCheckResponse::SERVING;
    if (!not_serving) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(not_serving);
  // A new call is refused.
  {
    grpc::ClientContext c2;
    c2.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::StatsResponse sr;
    EXPECT_FALSE(stub->Stats(&c2, {}, &sr).ok());
  }
  m.clear_header();
  m.set_data(data.substr(data.size() / 2));
  ASSERT_TRUE(w->Write(m));
  w->WritesDone();
  grpc::Status s = w->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(d.WaitExit(), 0) << d.ReadLog();
  const std::string log = d.ReadLog();
  EXPECT_NE(log.find("storage closed"), std::string::npos) << log;
  // Restart: the drained Put was stored and RocksDB reopens cleanly.
  ASSERT_TRUE(d.Start()) << d.ReadLog();
  auto stub2 = d.Stub();
  auto g = rpc::Get(stub2.get(), "kv", key, v1::DATA_FORMAT_PAYLOAD);
  EXPECT_TRUE(g.status.ok()) << g.status.error_message();
  d.Signal(SIGTERM);
  EXPECT_EQ(d.WaitExit(), 0);
}

TEST(LifecycleTest, PublicAddressWithoutTlsAndTokenRefusesToStart) {
  TempDir dir;
  {
    DaemonProcess d(KVTIER_KVTIERD, dir.path());
    d.flags = {"--server.tcp_address=0.0.0.0:0"};
    ASSERT_TRUE(d.Start(/*wait=*/false));
    EXPECT_EQ(d.WaitExit(), 1);
    EXPECT_NE(d.ReadLog().find("refusing to listen"), std::string::npos) << d.ReadLog();
  }
  {
    DaemonProcess d(KVTIER_KVTIERD, dir.path());
    d.flags = {"--server.tcp_address=0.0.0.0:0"};
    d.env = {"KVTIER_TOKEN=only-a-token"};
    ASSERT_TRUE(d.Start(/*wait=*/false));
    EXPECT_EQ(d.WaitExit(), 1);
    EXPECT_EQ(d.ReadLog().find("only-a-token"), std::string::npos);
  }
}

// service.codec_device = gpu is a requirement: without a usable GPU the daemon does not start
// (auto falls back to the CPU; kvtier_codec_calls_total{device} shows which ran).
TEST(LifecycleTest, CodecDeviceGpuWithoutAGpuRefusesToStart) {
  if (kernels::CudaBuilt() && kernels::CudaDeviceCount() > 0) GTEST_SKIP() << "a GPU is visible";
  TempDir dir;
  DaemonProcess d(KVTIER_KVTIERD, dir.path());
  d.flags = {"--service.codec_device=gpu"};
  ASSERT_TRUE(d.Start(/*wait=*/false));
  EXPECT_EQ(d.WaitExit(), 1);
  EXPECT_NE(d.ReadLog().find("service.codec_device = gpu"), std::string::npos) << d.ReadLog();
  DaemonProcess bad(KVTIER_KVTIERD, dir.path());
  bad.flags = {"--service.codec_device=tpu"};
  ASSERT_TRUE(bad.Start(/*wait=*/false));
  EXPECT_EQ(bad.WaitExit(), 1);
  EXPECT_NE(bad.ReadLog().find("must be auto, gpu or cpu"), std::string::npos) << bad.ReadLog();
}

// Self-signed certificate for "localhost" through the openssl CLI; false when unavailable.
bool MakeCert(const std::string& dir) {
  std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
                    "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
                    dir + "/key.pem -out " + dir + "/cert.pem >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

TEST(LifecycleTest, TokenIsCheckedBeforePayloadsAndNeverLogged) {
  TempDir dir;
  const std::string token = "tok-" + std::to_string(::getpid()) + "-Zq8";
  {
    std::ofstream f(dir.path() + "/token");
    f << token << "\n";
  }
  const bool tls = MakeCert(dir.path());
  DaemonProcess d(KVTIER_KVTIERD, dir.path());
  d.flags = {"--server.token_file=" + dir.path() + "/token", "--logging.level=debug"};
  if (tls) {
    d.flags.push_back("--server.tls_cert_file=" + dir.path() + "/cert.pem");
    d.flags.push_back("--server.tls_key_file=" + dir.path() + "/key.pem");
  }
  ASSERT_TRUE(d.Start()) << d.ReadLog();
  auto stub = d.Stub();
  rpc::CallSettings good, wrong, none;
  good.token = token;
  wrong.token = token + "x";
  EXPECT_EQ(CreateNs(stub.get(), "kv", none).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(CreateNs(stub.get(), "kv", wrong).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  ASSERT_TRUE(CreateNs(stub.get(), "kv", good).ok());

  auto before = d.ScrapeMetrics();
  ASSERT_TRUE(before.ok());
  // Puts with a wrong token are refused before their data is read: no ingest bytes counted.
  for (const auto* call : {&none, &wrong}) {
    auto put = rpc::Put(stub.get(), "kv", rpc::SeedKey(1), Chunk(1), DATA_FORMAT_TENSOR, kTpc,
                        *call);
    EXPECT_EQ(put.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(rpc::Get(stub.get(), "kv", rpc::SeedKey(1), DATA_FORMAT_TENSOR, *call)
                  .status.error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  auto after = d.ScrapeMetrics();
  ASSERT_TRUE(after.ok());
  const std::string ingest = "kvtier_transfer_bytes_total{path=\"ingest_tensor\"}";
  EXPECT_EQ(testing::MetricValue(*after, ingest), testing::MetricValue(*before, ingest));
  EXPECT_EQ(testing::MetricValue(*after, "kvtier_auth_failures_total") -
                testing::MetricValue(*before, "kvtier_auth_failures_total"),
            4);
  auto put = rpc::Put(stub.get(), "kv", rpc::SeedKey(1), Chunk(1), DATA_FORMAT_TENSOR, kTpc, good);
  EXPECT_TRUE(put.status.ok()) << put.status.error_message();

  if (tls) {
    // TCP with TLS and the token.
    std::ifstream cf(dir.path() + "/cert.pem");
    std::string pem((std::istreambuf_iterator<char>(cf)), std::istreambuf_iterator<char>());
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = pem;
    auto channel = grpc::CreateChannel("localhost:" + std::to_string(d.tcp_port()),
                                       grpc::SslCredentials(ssl));
    auto tcp = v1::KvTier::NewStub(channel);
    auto g = rpc::Get(tcp.get(), "kv", rpc::SeedKey(1), DATA_FORMAT_TENSOR, good);
    EXPECT_TRUE(g.status.ok()) << g.status.error_message();
    EXPECT_EQ(rpc::Get(tcp.get(), "kv", rpc::SeedKey(1), DATA_FORMAT_TENSOR, none)
                  .status.error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    // Plaintext to the TLS port fails.
    auto plain = v1::KvTier::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(d.tcp_port()), grpc::InsecureChannelCredentials()));
    rpc::CallSettings quick = good;
    quick.timeout = std::chrono::milliseconds(2000);
    EXPECT_FALSE(rpc::Get(plain.get(), "kv", rpc::SeedKey(1), DATA_FORMAT_TENSOR, quick)
                     .status.ok());
  }
  d.Signal(SIGTERM);
  EXPECT_EQ(d.WaitExit(), 0);
  EXPECT_EQ(d.ReadLog().find(token), std::string::npos) << "token leaked into the log";
}

TEST(LifecycleTest, PublicAddressWithTlsAndTokenStarts) {
  TempDir dir;
  if (!MakeCert(dir.path())) GTEST_SKIP() << "openssl CLI unavailable";
  DaemonProcess d(KVTIER_KVTIERD, dir.path());
  d.flags = {"--server.tcp_address=0.0.0.0:0",
             "--server.tls_cert_file=" + dir.path() + "/cert.pem",
             "--server.tls_key_file=" + dir.path() + "/key.pem"};
  d.env = {"KVTIER_TOKEN=secret-token-value"};
  ASSERT_TRUE(d.Start()) << d.ReadLog();
  d.Signal(SIGTERM);
  EXPECT_EQ(d.WaitExit(), 0);
  EXPECT_EQ(d.ReadLog().find("secret-token-value"), std::string::npos);
}

// RELIABILITY.md 20 (part): calls beyond server.max_inflight_calls are refused with
// RESOURCE_EXHAUSTED instead of queueing without bound; capacity returns when calls finish.
TEST(LifecycleTest, InflightCallLimitIsEnforced) {
  TempDir dir;
  DaemonProcess d(KVTIER_KVTIERD, dir.path());
  d.flags = {"--server.max_inflight_calls=2"};
  ASSERT_TRUE(d.Start()) << d.ReadLog();
  auto stub = d.Stub();
  ASSERT_TRUE(CreateNs(stub.get(), "kv").ok());
  // Two Put streams that stay open (header sent, data pending) occupy both slots.
  const std::string data = Chunk(1);
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientWriter<v1::PutRequest>>> writers;
  std::vector<v1::PutResponse> resps(2);
  for (int i = 0; i < 2; ++i) {
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    writers.push_back(stub->Put(ctxs.back().get(), &resps[i]));
    v1::PutRequest m;
    auto* h = m.mutable_header();
    h->set_namespace_("kv");
    h->set_key(rpc::SeedKey(10 + i));
    h->set_format(DATA_FORMAT_TENSOR);
    h->set_num_tokens(kTpc);
    h->set_total_bytes(data.size());
    h->set_crc32c(rpc::Crc32c(data));
    ASSERT_TRUE(writers.back()->Write(m));
  }
  for (int i = 0; i < 200; ++i) {
    auto m = d.ScrapeMetrics();
    if (m.ok() && testing::MetricValue(*m, "kvtier_rpcs_in_flight") >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  {
    grpc::ClientContext ctx;
    v1::StatsResponse sr;
    EXPECT_EQ(stub->Stats(&ctx, {}, &sr).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  for (int i = 0; i < 2; ++i) {
    v1::PutRequest m;
    m.set_data(data);
    ASSERT_TRUE(writers[i]->Write(m));
    writers[i]->WritesDone();
    EXPECT_TRUE(writers[i]->Finish().ok());
  }
  grpc::ClientContext ctx;
  v1::StatsResponse sr;
  EXPECT_TRUE(stub->Stats(&ctx, {}, &sr).ok());
  auto m = d.ScrapeMetrics();
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(testing::MetricValue(*m, "kvtier_rejected_calls_total{reason=\"inflight_limit\"}"), 1);
}

}  // namespace
}  // namespace kvtier
