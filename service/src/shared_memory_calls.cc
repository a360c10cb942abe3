// Put and Get of the shared-memory call channel (shared_memory.h): the gRPC handlers' steps
// (StartPut / FinishPut, PrepareGet) run on the channel's thread, with the same admission, limits,
// metrics and errors; only the transport differs.
#include <string>

#include "absl/strings/str_cat.h"
#include "handler_util.h"
#include "kvtier/common/status.h"
#include "kvtier_service.h"

namespace kvtier::service {

absl::Status KvTierService::ServeSharedMemoryCall(const shm::Call& call, std::string* reply) {
  const Clock::time_point start = Clock::now();
  const char* method = call.op == shm::Op::kPut ? "Put" : "Get";
  // The caller's deadline, from the time it has left (the clocks of the two processes need not
  // agree; the time in transit is not subtracted).
  CallLiveness live;
  if (call.timeout_ms != 0) live.deadline = start + std::chrono::milliseconds(call.timeout_ms);
  storage::TierManager* tm = nullptr;
  absl::Status status = AdmitAuthenticated(/*needs_storage=*/true, &tm);
  if (status.ok()) {
    status = call.op == shm::Op::kPut ? SharedMemoryPut(tm, live, call.body, reply)
                                      : SharedMemoryGet(tm, live, call.body, reply);
    Release();
  }
  Record(method, status, SecondsSince(start));
  return status;
}

absl::Status KvTierService::SharedMemoryPut(storage::TierManager* tm, const CallLiveness& live,
                                            const std::string& body, std::string* reply) {
  v1::PutHeader header;
  if (!header.ParseFromString(body)) return absl::InvalidArgumentError("malformed PutHeader");
  if (!header.has_shm()) {
    return absl::InvalidArgumentError(
        "a Put on the shared-memory call channel names its bytes with header.shm");
  }
  PutState st;
  KVTIER_RETURN_IF_ERROR(StartPut(header, &st));  // copies the bytes out of the region
  v1::PutResponse resp;
  KVTIER_RETURN_IF_ERROR(FinishPut(live, tm, &st, &resp));
  *reply = resp.SerializeAsString();
  return absl::OkStatus();
}

absl::Status KvTierService::SharedMemoryGet(storage::TierManager* tm, const CallLiveness& live,
                                            const std::string& body, std::string* reply) {
  v1::GetRequest req;
  if (!req.ParseFromString(body)) return absl::InvalidArgumentError("malformed GetRequest");
  absl::Status status;
  if (!req.has_shm()) {
    status = absl::InvalidArgumentError(
        "a Get on the shared-memory call channel names where its answer goes with shm");
  }
  absl::StatusOr<SharedMemoryRegistry::View> view;
  if (status.ok()) {
    view = ResolveShm(req.shm());
    status = view.status();
  }
  GetPlan plan;
  if (status.ok()) status = PrepareGet(live, req, tm, &*view, &plan, /*must_fit=*/true);
  if (status.ok() && !plan.in_shm) {  // must_fit checked the size up front; this cannot happen
    status = absl::InternalError("a shared-memory Get answer was not put in shared memory");
  }
  if (status.ok()) {
    shm_->CountWritten(plan.out.size());
    metrics_->AddTransfer(plan.path, plan.out.size());
    *reply = plan.header.SerializeAsString();
  }
  // As the gRPC Get: the lease is released whatever the outcome.
  if (req.release_lease_id() != 0) tm->ReleaseLease(req.release_lease_id()).IgnoreError();
  return status;
}

}  // namespace kvtier::service
