// HealthService: kvtierd's grpc.health.v1.Health (the standard gRPC health protocol), replacing
// gRPC's built-in one. The built-in service reports SERVING from the moment the server is built,
// before kvtierd can mark itself NOT_SERVING, so a probe could see SERVING before the disk tier was
// open. This one starts NOT_SERVING and changes only when the daemon says so.
//
// Known services: "" (the server as a whole) and "kvtier.v1.KvTier"; both always carry the same
// status. Check of any other service answers NOT_FOUND; Watch of one streams SERVICE_UNKNOWN.
// Watch sends the current status at once, then every change, and ends when the client cancels or
// Shutdown() is called (Shutdown ends every stream so that server shutdown never waits on them).
// No token is required: probes (kubelet, load balancers) don't carry one, and the answer reveals
// nothing but the serving state.
//
// Thread-safety: all methods are safe from any thread; handlers use gRPC's callback API and never
// block a thread.
#ifndef KVTIER_SERVICE_SRC_HEALTH_SERVICE_H_
#define KVTIER_SERVICE_SRC_HEALTH_SERVICE_H_

#include <mutex>
#include <set>

#include "grpc/health/v1/health.grpc.pb.h"

namespace kvtier::service {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  HealthService() = default;
  HealthService(const HealthService&) = delete;
  HealthService& operator=(const HealthService&) = delete;

  // Sets the status of both known services and tells every Watch stream. Ignored after Shutdown.
  void SetServing(bool serving);
  // NOT_SERVING for good; every Watch stream receives it (if it differs from what the stream last
  // saw) and then ends with OK. Call before grpc::Server::Shutdown so that drain does not wait on
  // Watch streams.
  void Shutdown();

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* ctx,
                                  const grpc::health::v1::HealthCheckRequest* req,
                                  grpc::health::v1::HealthCheckResponse* resp) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* ctx,
      const grpc::health::v1::HealthCheckRequest* req) override;

  // True for "" and "kvtier.v1.KvTier".
  static bool IsKnown(const std::string& service);

 private:
  class WatchReactor;
  // Called from WatchReactor::OnDone before the reactor deletes itself.
  void Forget(WatchReactor* w);

  std::mutex mu_;  // guards everything below; taken before any WatchReactor's own mutex
  ServingStatus status_ = grpc::health::v1::HealthCheckResponse::NOT_SERVING;
  bool shutdown_ = false;
  std::set<WatchReactor*> watchers_;  // known-service Watch streams still open
};

}  // namespace kvtier::service

#endif  // KVTIER_SERVICE_SRC_HEALTH_SERVICE_H_
