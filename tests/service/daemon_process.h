// Test harness: runs the real kvtierd binary as a child process on a temporary Unix socket (and
// 127.0.0.1 port 0), with its data directory in a temporary folder, and gives tests gRPC stubs,
// signals, restarts and a /metrics scraper. Used by the service integration tests and bench.
//
// Thread-safety: one DaemonProcess per test; its methods are called from the test thread, stubs
// from any thread.
#ifndef KVTIER_TESTS_SERVICE_DAEMON_PROCESS_H_
#define KVTIER_TESTS_SERVICE_DAEMON_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "kvtier.grpc.pb.h"

namespace kvtier::testing {

// A fresh temporary directory, removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class DaemonProcess {
 public:
  // `binary` is the kvtierd path; `dir` holds data, socket, logs and port files.
  DaemonProcess(std::string binary, std::string dir) : binary_(std::move(binary)),
                                                       dir_(std::move(dir)) {}
  ~DaemonProcess();  // SIGKILL if still running

  // Extra flags ("--server.max_value_bytes=1048576") and environment ("KVTIER_TOKEN=x").
  std::vector<std::string> flags;
  std::vector<std::string> env;

  // Starts kvtierd; with `wait`, until health says SERVING (false after `timeout`).
  bool Start(bool wait = true, std::chrono::seconds timeout = std::chrono::seconds(30));
  // Waits for the process to exit; its exit code (or 128 + signal). -1 on timeout (a zero
  // timeout checks once) or when it is not running.
  int WaitExit(std::chrono::seconds timeout = std::chrono::seconds(30));
  void Signal(int sig);
  void Kill9();
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  std::string socket_path() const { return dir_ + "/kvtierd.sock"; }
  std::string log_path() const { return dir_ + "/kvtierd.log"; }
  std::string data_dir() const { return dir_ + "/data"; }
  int tcp_port() const;
  int metrics_port() const;
  std::string ReadLog() const;

  std::shared_ptr<grpc::Channel> Channel() const;
  std::unique_ptr<kvtier::v1::KvTier::Stub> Stub() const;
  // grpc.health.v1 Check of "" over the Unix socket: SERVING, NOT_SERVING or an error.
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Health() const;

  // GET /metrics, parsed: "name{labels}" -> value (labels as printed by the exposer).
  absl::StatusOr<std::map<std::string, double>> ScrapeMetrics() const;
  // Resident set size of the daemon, in bytes (from /proc).
  uint64_t RssBytes() const;

 private:
  std::string binary_;
  std::string dir_;
  pid_t pid_ = -1;
};

// CreateNamespace `name` with `codec`, `layout` and `tokens_per_chunk`; `ctx` carries whatever
// the test sets on it (token, deadline).
grpc::Status CreateNamespace(kvtier::v1::KvTier::Stub* stub, grpc::ClientContext* ctx,
                             const std::string& name, const std::string& codec,
                             const kvtier::v1::Layout& layout, uint32_t tokens_per_chunk);

// HTTP/1.0 GET to 127.0.0.1:port; the body, or an error.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);
// A TCP port that was free a moment ago.
int PickFreePort();
// The value of `name` (exact, with labels as Prometheus text shows them) or `fallback`.
double MetricValue(const std::map<std::string, double>& m, const std::string& name,
                   double fallback = 0);

}  // namespace kvtier::testing

#endif  // KVTIER_TESTS_SERVICE_DAEMON_PROCESS_H_
