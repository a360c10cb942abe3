// KvTierService: the kvtier.v1.KvTier gRPC handlers (sync API). Each handler authenticates first
// (before reading any stream message), refuses work while the daemon is not serving or over its
// in-flight limit, validates cheaply before allocating, honours cancellation and deadlines between
// steps, and records its latency. Conversions to domain types happen here; storage and kernels
// never see proto types.
//
// Thread-safety: handlers run concurrently on gRPC's thread pool; all shared state is
// thread-safe (registry, tier manager, metrics) or atomic.
#ifndef KVTIER_SERVICE_SRC_KVTIER_SERVICE_H_
#define KVTIER_SERVICE_SRC_KVTIER_SERVICE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "auth.h"
#include "kvtier.grpc.pb.h"
#include "kvtier/kernels/codec.h"
#include "kvtier/kernels/gpu_stager.h"
#include "kvtier/service/options.h"
#include "kvtier/storage/tier_manager.h"
#include "metrics.h"
#include "namespace_registry.h"
#include "shared_memory.h"

namespace kvtier::service {

// Put and Get are raw callback methods (Put parses its stream by hand so each data byte is
// copied once; Get streams slices of the stored bytes without copies); the other calls use the
// sync API.
class BudgetReservation;
struct CallLiveness;

class KvTierService final
    : public v1::KvTier::WithRawCallbackMethod_Put<
          v1::KvTier::WithRawCallbackMethod_Get<v1::KvTier::Service>> {
 public:
  // `registry` may be nullptr until SetRegistry (no call is admitted before SetTierManager).
  KvTierService(const ServerOptions& options, uint32_t default_tokens_per_chunk,
                NamespaceRegistry* registry, ServiceMetrics* metrics);

  // The namespace registry, when it is opened after the listeners: call once, before
  // SetTierManager (whose release store publishes it to the handlers).
  void SetRegistry(NamespaceRegistry* registry) { registry_ = registry; }
  // The tier manager once open (nullptr before; handlers answer UNAVAILABLE until then).
  void SetTierManager(storage::TierManager* tm) { tm_.store(tm, std::memory_order_release); }
  // Where tensors are encoded and decoded: GPU staging (kernels/gpu_stager.h), or nullptr for the
  // CPU. Call once, before SetTierManager. Codecs or chunks the GPU cannot take go to the CPU.
  void SetGpuCodec(kernels::GpuStager* gpu) { gpu_codec_ = gpu; }
  // Same-node shared memory for Put/Get data (shared_memory.h), or nullptr (requests naming a
  // region then fail FAILED_PRECONDITION). Call once, before SetTierManager.
  void SetSharedMemory(SharedMemoryRegistry* shm) { shm_ = shm; }
  // One Put or Get of the shared-memory call channel (shared_memory.h): `body` is a PutHeader or
  // GetRequest naming a shared memory range, `reply` receives the PutResponse or GetHeader. Same
  // checks, storage, metrics and errors as the gRPC calls; the token was checked when the
  // channel attached. A Get whose answer does not fit the range fails RESOURCE_EXHAUSTED (fetch
  // it through gRPC, which streams it).
  absl::Status ServeSharedMemoryCall(const shm::Call& call, std::string* reply);
  // Start refusing new calls with UNAVAILABLE (drain). Running calls continue.
  void StartDraining() { draining_.store(true, std::memory_order_release); }
  int64_t inflight() const { return inflight_.load(std::memory_order_acquire); }

  grpc::Status CreateNamespace(grpc::ServerContext* ctx, const v1::CreateNamespaceRequest* req,
                               v1::CreateNamespaceResponse* resp) override;
  grpc::Status GetNamespace(grpc::ServerContext* ctx, const v1::GetNamespaceRequest* req,
                            v1::GetNamespaceResponse* resp) override;
  grpc::Status ListNamespaces(grpc::ServerContext* ctx, const v1::ListNamespacesRequest* req,
                              v1::ListNamespacesResponse* resp) override;
  grpc::Status Lookup(grpc::ServerContext* ctx, const v1::LookupRequest* req,
                      v1::LookupResponse* resp) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* Put(grpc::CallbackServerContext* ctx,
                                                 grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Get(grpc::CallbackServerContext* ctx,
                                                  const grpc::ByteBuffer* request) override;
  grpc::Status Delete(grpc::ServerContext* ctx, const v1::DeleteRequest* req,
                      v1::DeleteResponse* resp) override;
  grpc::Status Pin(grpc::ServerContext* ctx, const v1::PinRequest* req,
                   v1::PinResponse* resp) override;
  grpc::Status Unpin(grpc::ServerContext* ctx, const v1::UnpinRequest* req,
                     v1::UnpinResponse* resp) override;
  grpc::Status Compact(grpc::ServerContext* ctx, const v1::CompactRequest* req,
                       v1::CompactResponse* resp) override;
  grpc::Status Stats(grpc::ServerContext* ctx, const v1::StatsRequest* req,
                     v1::StatsResponse* resp) override;

 private:
  // Runs `body` under the common prologue (auth, serving, in-flight limit) and epilogue (latency
  // metric, status conversion). `needs_storage` = false would let a call run before the disk
  // tier is open; every call passes true, namespace calls included: until kvtierd holds the disk
  // tier's lock, another kvtierd may still own the data directory (and namespaces.toml).
  grpc::Status Run(grpc::ServerContext* ctx, const char* method, bool needs_storage,
                   const std::function<absl::Status(storage::TierManager*)>& body);

  // Admission of a call: token, serving state, in-flight limit. On OK the caller must Release().
  absl::Status Admit(grpc::ServerContextBase* ctx, bool needs_storage, storage::TierManager** tm);
  // Admit without the token check, for a caller authenticated otherwise (the shared-memory call
  // channel checks the token once per connection).
  absl::Status AdmitAuthenticated(bool needs_storage, storage::TierManager** tm);
  void Release();
  // Latency metric and debug log of a finished call.
  void Record(const char* method, const absl::Status& status, double seconds);

  // A Put in progress.
  struct PutState {
    v1::PutHeader header;
    std::shared_ptr<const NamespaceInfo> ns;
    ChunkKey key;
    uint64_t total = 0;
    bool tensor = false;
    bool started = false;  // header accepted
    std::unique_ptr<BudgetReservation> budget;
    std::string data;
    uint32_t crc = 0;
  };
  class PutReactor;
  // Validates the header and reserves buffer budget (before any data is accepted).
  absl::Status StartPut(const v1::PutHeader& header, PutState* st);
  absl::Status AppendPut(PutState* st, const uint8_t* p, size_t n);
  // Checks size and CRC, encodes or verifies, stores. Nothing is visible before this succeeds.
  // `live` says whether the caller still wants the call (checked before storing).
  absl::Status FinishPut(const CallLiveness& live, storage::TierManager* tm, PutState* st,
                         v1::PutResponse* resp);

  // What a Get serves: the header and the bytes, kept alive by `handle` or `decoded`.
  struct GetPlan {
    v1::GetHeader header;
    storage::ChunkHandle handle;
    std::string decoded;
    absl::Span<const uint8_t> out;
    bool in_shm = false;  // `out` was also copied into the caller's shared memory range
    TransferPath path = TransferPath::kFetchPayload;
  };
  class GetReactor;
  // The shared-memory call channel's Put and Get (shared_memory_calls.cc), admitted already.
  absl::Status SharedMemoryPut(storage::TierManager* tm, const CallLiveness& live,
                               const std::string& body, std::string* reply);
  absl::Status SharedMemoryGet(storage::TierManager* tm, const CallLiveness& live,
                               const std::string& body, std::string* reply);
  // The shared memory range a request names.
  absl::StatusOr<SharedMemoryRegistry::View> ResolveShm(const v1::SharedMemoryRef& ref) const;
  // Looks the chunk up, verifies it and decodes it when asked (everything but the streaming);
  // when the answer fits in `shm` (nullptr = none) it is copied there too (plan->in_shm). `ctx`
  // `live`: whether the caller still wants the call (checked before the answer is made).
  // With `must_fit`, an answer larger than `shm` fails RESOURCE_EXHAUSTED before any decoding.
  absl::Status PrepareGet(const CallLiveness& live, const v1::GetRequest& req,
                          storage::TierManager* tm, const SharedMemoryRegistry::View* shm,
                          GetPlan* plan, bool must_fit = false);
  // Keys of a Delete/Pin/Unpin/Lookup request, validated.
  absl::Status ParseKeys(const google::protobuf::RepeatedPtrField<std::string>& keys,
                         std::vector<ChunkKey>* out) const;

  // Encode / decode of a tensor on the GPU when configured and able, else on the CPU; `on_gpu`
  // says which ran. Same bytes either way.
  absl::Status EncodeTensor(const kernels::CodecParams& params, const kernels::ChunkInput& in,
                            std::vector<uint8_t>* payload, bool* on_gpu);
  absl::Status DecodeTensor(absl::Span<const uint8_t> payload, const kernels::PayloadInfo& info,
                            absl::Span<uint8_t> out, bool* on_gpu);

  const ServerOptions options_;
  const uint32_t default_tokens_per_chunk_;
  NamespaceRegistry* registry_;  // set before the first call is admitted, then constant
  ServiceMetrics* const metrics_;
  const TokenAuthenticator auth_;
  kernels::GpuStager* gpu_codec_ = nullptr;  // set before the first call, then constant
  SharedMemoryRegistry* shm_ = nullptr;       // set before the first call, then constant
  std::atomic<storage::TierManager*> tm_{nullptr};
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> inflight_{0};
  std::atomic<uint64_t> ingest_buffered_bytes_{0};
  std::atomic<uint64_t> ingest_tensor_bytes_{0};
  std::atomic<uint64_t> ingest_payload_bytes_{0};
};

}  // namespace kvtier::service

#endif  // KVTIER_SERVICE_SRC_KVTIER_SERVICE_H_
