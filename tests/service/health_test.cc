// Integration: kvtierd's grpc.health.v1 service and its start while the disk tier is locked,
// against the real kvtierd process.
//   RELIABILITY.md 6 (part): health is NOT_SERVING until the disk tier is open, never SERVING
//                            before; it turns SERVING once the disk tier opens.
//   Rolling restart: while another process holds the RocksDB lock, kvtierd waits (NOT_SERVING,
//   kvtier_serving 0, calls UNAVAILABLE) for up to service.disk_open_timeout_s, then serves; past
//   the timeout, or on any other open error, the start fails with a clear message.
//   Watch: the current status at once, then every change; the stream ends at shutdown without
//   holding up the drain.
//   A real rolling restart: the new kvtierd waits for the old one on the same data directory, then
//   serves its data and the namespaces it created meanwhile.
// The test process plays "the previous kvtierd" by taking the same fcntl write lock RocksDB takes
// on <data_dir>/rocksdb/LOCK.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <fstream>
#include <thread>
#include <vector>

#include "daemon_process.h"
#include "gtest/gtest.h"
#include "rpc_util.h"

namespace kvtier {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using testing::DaemonProcess;
using testing::TempDir;

constexpr uint32_t kTpc = 16;
const v1::Layout kLayout = rpc::MhaLayout(2, 2, 2, 64);

// An fcntl write lock on a file (created with its directories), like RocksDB's on its LOCK file.
// Released by Release() or the destructor (closing the descriptor drops the lock).
class FileLock {
 public:
  explicit FileLock(const std::string& path) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) return;
    struct flock fl = {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    locked_ = ::fcntl(fd_, F_SETLK, &fl) == 0;
  }
  ~FileLock() { Release(); }
  bool locked() const { return locked_; }
  void Release() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    locked_ = false;
  }

 private:
  int fd_ = -1;
  bool locked_ = false;
};

// Each test: a daemon in a fresh directory, started without waiting for SERVING, optionally while
// the test process holds the disk tier's lock (<data_dir>/rocksdb/LOCK).
class HealthTest : public ::testing::Test {
 protected:
  // Takes the lock (creating the file), then starts kvtierd with `flags`.
  void StartLocked(std::vector<std::string> flags) {
    lock_ = std::make_unique<FileLock>(d_.data_dir() + "/rocksdb/LOCK");
    ASSERT_TRUE(lock_->locked());
    StartUnlocked(std::move(flags));
  }
  void StartUnlocked(std::vector<std::string> flags) {
    d_.flags = std::move(flags);
    ASSERT_TRUE(d_.Start(/*wait=*/false));
  }
  void ReleaseLock() { lock_->Release(); }

  TempDir dir_;
  DaemonProcess d_{KVTIER_KVTIERD, dir_.path()};
  std::unique_ptr<FileLock> lock_;
};

// Polls Check until the daemon answers (listeners up); the first answer, or an error when the
// process exited or never answered.
absl::StatusOr<HealthCheckResponse::ServingStatus> WaitForHealthAnswer(DaemonProcess& d) {
  absl::StatusOr<HealthCheckResponse::ServingStatus> h = absl::UnavailableError("not started");
  for (int i = 0; i < 1500; ++i) {  // up to ~30 s (each failed try waits 20 ms)
    if (d.WaitExit(std::chrono::seconds(0)) != -1) return absl::UnavailableError("kvtierd exited");
    h = d.Health();
    if (h.ok()) return h;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return h;
}

// Polls Check until SERVING; false when the process exited or ~60 s passed without it.
bool WaitForServing(DaemonProcess& d) {
  for (int i = 0; i < 3000; ++i) {
    auto h = d.Health();
    if (h.ok() && *h == HealthCheckResponse::SERVING) return true;
    if (d.WaitExit(std::chrono::seconds(0)) != -1) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

grpc::StatusCode CheckCode(const DaemonProcess& d, const std::string& service,
                           HealthCheckResponse* resp) {
  auto stub = grpc::health::v1::Health::NewStub(d.Channel());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  HealthCheckRequest req;
  req.set_service(service);
  return stub->Check(&ctx, req, resp).error_code();
}

grpc::StatusCode ListNamespacesCode(v1::KvTier::Stub* stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ListNamespacesResponse resp;
  return stub->ListNamespaces(&ctx, {}, &resp).error_code();
}

grpc::StatusCode LookupCode(v1::KvTier::Stub* stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::LookupRequest req;
  req.set_namespace_("kv");
  req.add_keys(rpc::SeedKey(1));
  v1::LookupResponse resp;
  return stub->Lookup(&ctx, req, &resp).error_code();
}

grpc::Status CreateNs(v1::KvTier::Stub* stub, const std::string& name = "kv") {
  grpc::ClientContext ctx;
  return testing::CreateNamespace(stub, &ctx, name, "fp8", kLayout, kTpc);
}

TEST_F(HealthTest, NotServingWhileDiskTierIsLockedThenServes) {
  ASSERT_NO_FATAL_FAILURE(StartLocked({}));
  DaemonProcess& d = d_;
  auto first = WaitForHealthAnswer(d);
  ASSERT_TRUE(first.ok()) << first.status() << "\n" << d.ReadLog();
  EXPECT_EQ(*first, HealthCheckResponse::NOT_SERVING);
  // However often it is asked while the lock is held, it never says SERVING.
  for (int i = 0; i < 50; ++i) {
    auto h = d.Health();
    ASSERT_TRUE(h.ok()) << h.status();
    ASSERT_EQ(*h, HealthCheckResponse::NOT_SERVING) << "poll " << i;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  HealthCheckResponse resp;
  EXPECT_EQ(CheckCode(d, "kvtier.v1.KvTier", &resp), grpc::StatusCode::OK);
  EXPECT_EQ(resp.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(CheckCode(d, "no.such.Service", &resp), grpc::StatusCode::NOT_FOUND);

  auto metrics = d.ScrapeMetrics();
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  ASSERT_EQ(metrics->count("kvtier_serving"), 1u);
  EXPECT_EQ(testing::MetricValue(*metrics, "kvtier_serving"), 0);

  // Every kvtier call is refused, namespace calls included (another kvtierd may still own the
  // data directory).
  auto stub = d.Stub();
  EXPECT_EQ(ListNamespacesCode(stub.get()), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(LookupCode(stub.get()), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(CreateNs(stub.get()).error_code(), grpc::StatusCode::UNAVAILABLE);
  auto refused = d.ScrapeMetrics();
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(testing::MetricValue(*refused, "kvtier_rejected_calls_total{reason=\"not_serving\"}"),
            3);
  const std::string waiting_log = d.ReadLog();
  EXPECT_NE(waiting_log.find("is locked by process " + std::to_string(::getpid())),
            std::string::npos)
      << waiting_log;

  ReleaseLock();
  ASSERT_TRUE(WaitForServing(d)) << d.ReadLog();
  EXPECT_EQ(CheckCode(d, "kvtier.v1.KvTier", &resp), grpc::StatusCode::OK);
  EXPECT_EQ(resp.status(), HealthCheckResponse::SERVING);
  auto serving = d.ScrapeMetrics();
  ASSERT_TRUE(serving.ok());
  EXPECT_EQ(testing::MetricValue(*serving, "kvtier_serving"), 1);

  ASSERT_TRUE(CreateNs(stub.get()).ok());
  const std::string data = rpc::SyntheticFp16(rpc::TensorBytes(kLayout, kTpc), 7);
  auto put = rpc::Put(stub.get(), "kv", rpc::SeedKey(1), data, v1::DATA_FORMAT_TENSOR, kTpc);
  ASSERT_TRUE(put.status.ok()) << put.status.error_message();
  auto g = rpc::Get(stub.get(), "kv", rpc::SeedKey(1), v1::DATA_FORMAT_TENSOR);
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  EXPECT_TRUE(g.crc_ok);
  EXPECT_EQ(g.data.size(), data.size());
  EXPECT_EQ(LookupCode(stub.get()), grpc::StatusCode::OK);
}

TEST_F(HealthTest, StartFailsWhenDiskTierStaysLockedPastTheTimeout) {
  ASSERT_NO_FATAL_FAILURE(StartLocked({"--service.disk_open_timeout_s=1"}));
  DaemonProcess& d = d_;
  EXPECT_EQ(d.WaitExit(), 1) << d.ReadLog();
  const std::string log = d.ReadLog();
  EXPECT_NE(log.find("stayed locked for service.disk_open_timeout_s = 1 s"), std::string::npos)
      << log;
  EXPECT_EQ(log.find("serving:"), std::string::npos) << log;
}

TEST_F(HealthTest, StopSignalEndsTheWait) {
  ASSERT_NO_FATAL_FAILURE(StartLocked({}));  // the default 60 s timeout
  DaemonProcess& d = d_;
  auto h = WaitForHealthAnswer(d);
  ASSERT_TRUE(h.ok()) << h.status() << "\n" << d.ReadLog();
  EXPECT_EQ(*h, HealthCheckResponse::NOT_SERVING);
  d.Signal(SIGTERM);
  EXPECT_EQ(d.WaitExit(), 1) << d.ReadLog();  // within WaitExit's 30 s, not the 60 s timeout
  const std::string log = d.ReadLog();
  EXPECT_NE(log.find("stop signal received while waiting for the disk tier lock"),
            std::string::npos)
      << log;
}

TEST_F(HealthTest, OtherDiskOpenErrorsFailAtOnce) {
  // The disk tier's path is a regular file: RocksDB cannot create its directory there. With a
  // 600 s lock timeout, only an immediate failure ends within WaitExit's 30 s.
  const std::string not_a_dir = dir_.path() + "/not-a-dir";
  { std::ofstream(not_a_dir) << "x"; }
  ASSERT_NO_FATAL_FAILURE(
      StartUnlocked({"--storage.disk.path=" + not_a_dir, "--service.disk_open_timeout_s=600"}));
  DaemonProcess& d = d_;
  EXPECT_EQ(d.WaitExit(), 1) << d.ReadLog();
  const std::string log = d.ReadLog();
  EXPECT_NE(log.find("kvtierd cannot start: "), std::string::npos) << log;
  EXPECT_NE(log.find("storage: "), std::string::npos) << log;
  EXPECT_EQ(log.find("is locked by"), std::string::npos) << log;
}

TEST_F(HealthTest, WatchStreamsEveryChangeAndEndsAtShutdown) {
  // A drain timeout far beyond WaitExit's 30 s: the daemon exits in time only if open Watch
  // streams do not hold up the drain.
  ASSERT_NO_FATAL_FAILURE(StartLocked({"--server.drain_timeout_s=600"}));
  DaemonProcess& d = d_;
  ASSERT_TRUE(WaitForHealthAnswer(d).ok()) << d.ReadLog();

  auto stub = grpc::health::v1::Health::NewStub(d.Channel());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(90));
  HealthCheckRequest req;  // service "": the server as a whole
  auto reader = stub->Watch(&ctx, req);
  // A second stream for an unknown service: SERVICE_UNKNOWN, and the stream stays open.
  grpc::ClientContext unknown_ctx;
  unknown_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(90));
  HealthCheckRequest unknown_req;
  unknown_req.set_service("no.such.Service");
  auto unknown = stub->Watch(&unknown_ctx, unknown_req);
  // A third one that the client cancels.
  grpc::ClientContext cancel_ctx;
  auto cancelled = stub->Watch(&cancel_ctx, req);

  HealthCheckResponse resp;
  ASSERT_TRUE(reader->Read(&resp));
  EXPECT_EQ(resp.status(), HealthCheckResponse::NOT_SERVING);
  ASSERT_TRUE(unknown->Read(&resp));
  EXPECT_EQ(resp.status(), HealthCheckResponse::SERVICE_UNKNOWN);
  ASSERT_TRUE(cancelled->Read(&resp));
  EXPECT_EQ(resp.status(), HealthCheckResponse::NOT_SERVING);
  cancel_ctx.TryCancel();
  while (cancelled->Read(&resp)) {
  }
  EXPECT_EQ(cancelled->Finish().error_code(), grpc::StatusCode::CANCELLED);

  ReleaseLock();
  ASSERT_TRUE(reader->Read(&resp)) << d.ReadLog();
  EXPECT_EQ(resp.status(), HealthCheckResponse::SERVING);
  // Once SERVING is streamed, Check agrees and the daemon serves.
  auto h = d.Health();
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(*h, HealthCheckResponse::SERVING);

  d.Signal(SIGTERM);
  ASSERT_TRUE(reader->Read(&resp));
  EXPECT_EQ(resp.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(reader->Read(&resp));  // the stream ends
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_FALSE(unknown->Read(&resp));
  EXPECT_TRUE(unknown->Finish().ok());
  // Both streams ended while the drain was in progress. Drop the connection too: kvtierd's gRPC
  // server waits seconds for an idle client connection at shutdown, which is not what this tests.
  reader.reset();
  unknown.reset();
  cancelled.reset();
  stub.reset();
  EXPECT_EQ(d.WaitExit(), 0) << d.ReadLog();
}

// Rolling restart on one data directory: the new kvtierd starts while the old one still holds the
// disk tier. It stays NOT_SERVING until the old one has drained and closed RocksDB, then serves
// everything the old one stored, namespaces created after the new one started included (it reads
// the namespace registry only once the disk tier is its own).
TEST(RollingRestartTest, NewDaemonWaitsForThePreviousOne) {
  TempDir old_dir, new_dir;
  DaemonProcess old_d(KVTIER_KVTIERD, old_dir.path());
  old_d.flags = {"--storage.host.capacity_bytes=0"};  // every Put lands on disk
  ASSERT_TRUE(old_d.Start()) << old_d.ReadLog();
  auto old_stub = old_d.Stub();
  ASSERT_TRUE(CreateNs(old_stub.get()).ok());
  const std::string data = rpc::SyntheticFp16(rpc::TensorBytes(kLayout, kTpc), 3);
  auto put = rpc::Put(old_stub.get(), "kv", rpc::SeedKey(3), data, v1::DATA_FORMAT_TENSOR, kTpc);
  ASSERT_TRUE(put.status.ok()) << put.status.error_message();

  DaemonProcess new_d(KVTIER_KVTIERD, new_dir.path());
  new_d.flags = {"--service.data_dir=" + old_d.data_dir()};
  ASSERT_TRUE(new_d.Start(/*wait=*/false));
  // Wait until the new daemon is up and has seen the lock.
  bool waiting = false;
  for (int i = 0; i < 1500 && !waiting; ++i) {
    waiting = new_d.ReadLog().find("is locked by process " + std::to_string(old_d.pid())) !=
              std::string::npos;
    if (!waiting) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(waiting) << new_d.ReadLog();
  auto h = new_d.Health();
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(*h, HealthCheckResponse::NOT_SERVING);
  auto new_stub = new_d.Stub();
  EXPECT_EQ(CreateNs(new_stub.get()).error_code(), grpc::StatusCode::UNAVAILABLE);
  // The old daemon still serves and still writes the registry.
  ASSERT_TRUE(CreateNs(old_stub.get(), "late").ok());

  old_stub.reset();  // an idle client connection would make the old daemon's drain take seconds
  old_d.Signal(SIGTERM);
  EXPECT_EQ(old_d.WaitExit(), 0) << old_d.ReadLog();
  ASSERT_TRUE(WaitForServing(new_d)) << new_d.ReadLog();
  grpc::ClientContext ctx;
  v1::GetNamespaceRequest gn;
  gn.set_name("late");
  v1::GetNamespaceResponse gnr;
  EXPECT_TRUE(new_stub->GetNamespace(&ctx, gn, &gnr).ok());
  auto g = rpc::Get(new_stub.get(), "kv", rpc::SeedKey(3), v1::DATA_FORMAT_TENSOR);
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  EXPECT_TRUE(g.crc_ok);
  EXPECT_EQ(g.data.size(), data.size());
}

}  // namespace
}  // namespace kvtier
