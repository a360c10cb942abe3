#include "health_service.h"

#include <string>

namespace kvtier::service {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch stream. Writes are one at a time (the callback API allows a single outstanding
// write), so a change arriving mid-write waits in `pending_`; only the latest pending status is
// sent, and never twice in a row the same one. Deletes itself in OnDone.
class HealthService::WatchReactor final : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  WatchReactor(HealthService* owner, bool known) : owner_(owner), known_(known) {}

  bool known() const { return known_; }

  // Queues `status` for the client. Called with owner_->mu_ held.
  void Send(ServingStatus status) {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ = status;
    has_pending_ = true;
    MaybeWriteLocked();
  }
  // Ends the stream (OK) once what is queued has been written. Called with owner_->mu_ held.
  void End() {
    std::lock_guard<std::mutex> lock(mu_);
    end_ = true;
    MaybeWriteLocked();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {  // the stream is broken (client gone): nothing more can be sent
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "health watch: write failed"));
      return;
    }
    MaybeWriteLocked();
  }
  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "health watch cancelled"));
  }
  void OnDone() override {
    owner_->Forget(this);
    delete this;
  }

 private:
  void MaybeWriteLocked() {
    if (finished_ || writing_) return;
    if (has_pending_) {
      has_pending_ = false;
      if (!has_sent_ || pending_ != response_.status()) {
        has_sent_ = true;
        response_.set_status(pending_);
        writing_ = true;
        StartWrite(&response_);
        return;
      }
    }
    if (end_) FinishLocked(grpc::Status::OK);
  }
  void FinishLocked(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  HealthService* const owner_;
  const bool known_;
  std::mutex mu_;
  bool writing_ = false;   // a StartWrite is outstanding (response_ must stay untouched)
  bool finished_ = false;  // Finish was called
  bool end_ = false;       // Finish once the queue is empty
  bool has_pending_ = false;
  ServingStatus pending_ = HealthCheckResponse::UNKNOWN;
  bool has_sent_ = false;
  HealthCheckResponse response_;  // the message last written
};

bool HealthService::IsKnown(const std::string& service) {
  return service.empty() || service == "kvtier.v1.KvTier";
}

void HealthService::SetServing(bool serving) {
  std::lock_guard<std::mutex> lock(mu_);
  if (shutdown_) return;
  status_ = serving ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
  for (WatchReactor* w : watchers_) {
    if (w->known()) w->Send(status_);
  }
}

void HealthService::Shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  if (shutdown_) return;
  shutdown_ = true;
  status_ = HealthCheckResponse::NOT_SERVING;
  for (WatchReactor* w : watchers_) {
    if (w->known()) w->Send(status_);
    w->End();
  }
}

void HealthService::Forget(WatchReactor* w) {
  std::lock_guard<std::mutex> lock(mu_);
  watchers_.erase(w);
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* ctx,
                                               const HealthCheckRequest* req,
                                               HealthCheckResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (!IsKnown(req->service())) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 "unknown service '" + req->service() + "'"));
    return reactor;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    resp->set_status(status_);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext*, const HealthCheckRequest* req) {
  const bool known = IsKnown(req->service());
  auto* w = new WatchReactor(this, known);
  std::lock_guard<std::mutex> lock(mu_);
  watchers_.insert(w);
  w->Send(known ? status_ : HealthCheckResponse::SERVICE_UNKNOWN);
  if (shutdown_) w->End();
  return w;
}

}  // namespace kvtier::service
