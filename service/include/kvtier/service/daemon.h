// Daemon: one running kvtierd — gRPC listeners (kvtier.v1 and grpc.health.v1), the Prometheus
// endpoint, the namespace registry and the storage engine — with an orderly start and drain.
//
// Start order: data directory, metrics endpoint, gRPC listeners with health NOT_SERVING (so
// orchestrators see the process early), then the storage engine (the disk tier opens and the index
// is rebuilt; while another process holds the disk tier's lock, retried for up to
// ServiceOptions::disk_open_timeout_s), then health SERVING. Calls answer UNAVAILABLE until then.
//
// Shutdown (SIGTERM in kvtierd): health NOT_SERVING, new calls UNAVAILABLE, in-flight calls get
// ServerOptions::drain_timeout_s to finish (then are cancelled), listeners close, the storage
// engine closes (RocksDB flushed and closed cleanly).
//
// Thread-safety: Start/Shutdown from one thread (main); accessors are safe from any thread.
#ifndef KVTIER_SERVICE_DAEMON_H_
#define KVTIER_SERVICE_DAEMON_H_

#include <memory>

#include "absl/status/statusor.h"
#include "kvtier/service/options.h"

namespace kvtier::service {

class Daemon {
 public:
  // Validates `options` (after Finalize()), then starts everything; returns once serving.
  // FailedPrecondition for an unsafe listening surface (non-loopback TCP without TLS + token).
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(DaemonOptions options);

  // Drains and stops (idempotent). The destructor calls it.
  void Shutdown();
  ~Daemon();

  // The TCP port bound (0 when TCP is off) and the metrics port (0 when metrics are off).
  int tcp_port() const;
  int metrics_port() const;
  const DaemonOptions& options() const;

  class Impl;

 private:
  explicit Daemon(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvtier::service

#endif  // KVTIER_SERVICE_DAEMON_H_
