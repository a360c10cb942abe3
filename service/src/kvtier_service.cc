#include "kvtier_service.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "compaction.h"
#include "convert.h"
#include "handler_util.h"
#include "kvtier/common/crc32c.h"
#include "kvtier/common/logging.h"
#include "kvtier/common/status.h"
#include "kvtier/kernels/codec.h"

namespace kvtier::service {

// ---- Admission, shared by every handler (Put and Get live in put_handler.cc, get_handler.cc) ----

KvTierService::KvTierService(const ServerOptions& options, uint32_t default_tokens_per_chunk,
                             NamespaceRegistry* registry, ServiceMetrics* metrics)
    : options_(options),
      default_tokens_per_chunk_(default_tokens_per_chunk),
      registry_(registry),
      metrics_(metrics),
      auth_(options.token) {}

absl::Status KvTierService::Admit(grpc::ServerContextBase* ctx, bool needs_storage,
                                  storage::TierManager** tm) {
  // Authentication comes first, before any payload is read.
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  std::string_view value;
  const std::string_view* auth_value = nullptr;
  if (it != md.end()) {
    value = std::string_view(it->second.data(), it->second.size());
    auth_value = &value;
  }
  absl::Status status = auth_.Check(auth_value);
  if (!status.ok()) {
    metrics_->CountAuthFailure();
    return status;
  }
  return AdmitAuthenticated(needs_storage, tm);
}

absl::Status KvTierService::AdmitAuthenticated(bool needs_storage, storage::TierManager** tm) {
  *tm = tm_.load(std::memory_order_acquire);
  if (draining_.load(std::memory_order_acquire)) {
    metrics_->CountRejected("not_serving");
    return absl::UnavailableError("kvtierd is shutting down");
  }
  if (needs_storage && *tm == nullptr) {
    metrics_->CountRejected("not_serving");
    return absl::UnavailableError("kvtierd is starting: the disk tier is not open yet");
  }
  int64_t now = inflight_.fetch_add(1, std::memory_order_acq_rel) + 1;
  if (now > static_cast<int64_t>(options_.max_inflight_calls)) {
    inflight_.fetch_sub(1, std::memory_order_acq_rel);
    metrics_->CountRejected("inflight_limit");
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many calls in flight (max_inflight_calls = ", options_.max_inflight_calls, ")"));
  }
  metrics_->AddInflight(1);
  return absl::OkStatus();
}

void KvTierService::Release() {
  metrics_->AddInflight(-1);
  inflight_.fetch_sub(1, std::memory_order_acq_rel);
}

void KvTierService::Record(const char* method, const absl::Status& status, double seconds) {
  metrics_->ObserveRpc(method, CodeName(status.code()), seconds);
  if (!status.ok() && status.code() != absl::StatusCode::kNotFound &&
      status.code() != absl::StatusCode::kCancelled &&
      status.code() != absl::StatusCode::kDeadlineExceeded) {
    KVTIER_LOG(DEBUG, "{} failed: {}", method, status.ToString());
  }
}

grpc::Status KvTierService::Run(grpc::ServerContext* ctx, const char* method, bool needs_storage,
                                const std::function<absl::Status(storage::TierManager*)>& body) {
  const Clock::time_point start = Clock::now();
  storage::TierManager* tm = nullptr;
  absl::Status status = Admit(ctx, needs_storage, &tm);
  if (status.ok()) {
    status = body(tm);
    Release();
  }
  Record(method, status, SecondsSince(start));
  return ToGrpc(status);
}

namespace {
// Outcomes of a GPU codec call that send the chunk to the CPU instead: no kernels for this codec
// or layout, a chunk larger than the staging buffers, or the device failing.
bool CpuCanStillDoIt(const absl::Status& s) {
  return absl::IsUnimplemented(s) || absl::IsFailedPrecondition(s) || absl::IsResourceExhausted(s) ||
         absl::IsInternal(s) || absl::IsUnavailable(s);
}
}  // namespace

absl::Status KvTierService::EncodeTensor(const kernels::CodecParams& params,
                                         const kernels::ChunkInput& in,
                                         std::vector<uint8_t>* payload, bool* on_gpu) {
  *on_gpu = false;
  if (gpu_codec_ != nullptr) {
    absl::Status s = gpu_codec_->Encode(params, in, payload);
    if (s.ok()) {
      *on_gpu = true;
      return s;
    }
    if (!CpuCanStillDoIt(s)) return s;
  }
  return kernels::Encode(params, in, payload);
}

absl::Status KvTierService::DecodeTensor(absl::Span<const uint8_t> payload,
                                         const kernels::PayloadInfo& info,
                                         absl::Span<uint8_t> out, bool* on_gpu) {
  *on_gpu = false;
  if (gpu_codec_ != nullptr) {
    absl::Status s = gpu_codec_->DecodeContiguous(payload, out);
    if (s.ok()) {
      *on_gpu = true;
      return s;
    }
    if (!CpuCanStillDoIt(s)) return s;
  }
  return kernels::Decode(payload,
                         kernels::DecodeTarget::Contiguous(out.data(), info.layout, info.num_tokens));
}

absl::Status KvTierService::ParseKeys(const google::protobuf::RepeatedPtrField<std::string>& keys,
                                      std::vector<ChunkKey>* out) const {
  if (static_cast<uint64_t>(keys.size()) > options_.max_keys_per_request) {
    return absl::InvalidArgumentError(absl::StrCat(keys.size(), " keys in one request; at most ",
                                                   options_.max_keys_per_request));
  }
  out->reserve(keys.size());
  for (int i = 0; i < keys.size(); ++i) {
    KVTIER_ASSIGN_OR_RETURN(ChunkKey k, KeyFromProto(keys[i], "keys", i));
    out->push_back(k);
  }
  return absl::OkStatus();
}

// ---- Namespaces ---------------------------------------------------------------------------------

grpc::Status KvTierService::CreateNamespace(grpc::ServerContext* ctx,
                                            const v1::CreateNamespaceRequest* req,
                                            v1::CreateNamespaceResponse* resp) {
  return Run(ctx, "CreateNamespace", true, [&](storage::TierManager*) -> absl::Status {
    if (!req->has_namespace_()) return absl::InvalidArgumentError("namespace is required");
    KVTIER_ASSIGN_OR_RETURN(NamespaceInfo info,
                            NamespaceFromProto(req->namespace_(), default_tokens_per_chunk_));
    bool created = false;
    KVTIER_ASSIGN_OR_RETURN(auto entry, registry_->Create(std::move(info), &created));
    NamespaceToProto(*entry, resp->mutable_namespace_());
    resp->set_created(created);
    if (created) KVTIER_LOG(INFO, "namespace '{}' created (id {})", entry->name, entry->id);
    return absl::OkStatus();
  });
}

grpc::Status KvTierService::GetNamespace(grpc::ServerContext* ctx,
                                         const v1::GetNamespaceRequest* req,
                                         v1::GetNamespaceResponse* resp) {
  return Run(ctx, "GetNamespace", true, [&](storage::TierManager*) -> absl::Status {
    KVTIER_ASSIGN_OR_RETURN(auto entry, registry_->Get(req->name()));
    NamespaceToProto(*entry, resp->mutable_namespace_());
    return absl::OkStatus();
  });
}

grpc::Status KvTierService::ListNamespaces(grpc::ServerContext* ctx,
                                           const v1::ListNamespacesRequest*,
                                           v1::ListNamespacesResponse* resp) {
  return Run(ctx, "ListNamespaces", true, [&](storage::TierManager*) -> absl::Status {
    for (const auto& entry : registry_->List()) NamespaceToProto(*entry, resp->add_namespaces());
    return absl::OkStatus();
  });
}

// ---- Lookup -------------------------------------------------------------------------------------

grpc::Status KvTierService::Lookup(grpc::ServerContext* ctx, const v1::LookupRequest* req,
                                   v1::LookupResponse* resp) {
  return Run(ctx, "Lookup", true, [&](storage::TierManager* tm) -> absl::Status {
    KVTIER_ASSIGN_OR_RETURN(auto ns, registry_->Get(req->namespace_()));
    std::vector<ChunkKey> keys;
    KVTIER_RETURN_IF_ERROR(ParseKeys(req->keys(), &keys));
    storage::LookupOptions opts;
    if (req->lease_ms() > 0) {
      opts.lease = true;
      opts.lease_ms = req->lease_ms();
    }
    storage::LookupResult r = tm->Lookup(ns->id, keys, opts);
    resp->set_prefix_chunks(r.hits);
    resp->set_prefix_tokens(static_cast<uint64_t>(r.hits) * ns->tokens_per_chunk);
    resp->set_lease_id(r.lease);
    std::array<uint64_t, storage::kNumTiers> per_tier{};
    for (uint32_t i = 0; i < r.hits && i < r.tiers.size(); ++i) {
      v1::ChunkInfo* c = resp->add_chunks();
      c->set_tier(TierToProto(r.tiers[i]));
      c->set_num_tokens(ns->tokens_per_chunk);
      ++per_tier[storage::TierIndex(r.tiers[i])];
    }
    for (int t = 0; t < storage::kNumTiers; ++t) {
      if (per_tier[t] > 0) metrics_->CountHits(static_cast<storage::TierKind>(t), per_tier[t]);
    }
    if (r.hits < keys.size()) metrics_->CountMiss();
    metrics_->CountLookup(static_cast<uint64_t>(keys.size()) * ns->tokens_per_chunk,
                          static_cast<uint64_t>(r.hits) * ns->tokens_per_chunk);
    return absl::OkStatus();
  });
}

// ---- Delete, Pin, Unpin -------------------------------------------------------------------------

grpc::Status KvTierService::Delete(grpc::ServerContext* ctx, const v1::DeleteRequest* req,
                                   v1::DeleteResponse* resp) {
  return Run(ctx, "Delete", true, [&](storage::TierManager* tm) -> absl::Status {
    KVTIER_ASSIGN_OR_RETURN(auto ns, registry_->Get(req->namespace_()));
    std::vector<ChunkKey> keys;
    KVTIER_RETURN_IF_ERROR(ParseKeys(req->keys(), &keys));
    uint32_t deleted = 0;
    for (const ChunkKey& k : keys) {
      absl::Status s = tm->Delete(ns->id, k);
      if (s.ok()) {
        ++deleted;
      } else if (s.code() != absl::StatusCode::kNotFound) {
        return s;
      }
    }
    resp->set_deleted(deleted);
    return absl::OkStatus();
  });
}

grpc::Status KvTierService::Pin(grpc::ServerContext* ctx, const v1::PinRequest* req,
                                v1::PinResponse* resp) {
  return Run(ctx, "Pin", true, [&](storage::TierManager* tm) -> absl::Status {
    KVTIER_ASSIGN_OR_RETURN(auto ns, registry_->Get(req->namespace_()));
    std::vector<ChunkKey> keys;
    KVTIER_RETURN_IF_ERROR(ParseKeys(req->keys(), &keys));
    uint32_t n = 0;
    for (const ChunkKey& k : keys) {
      absl::Status s = tm->Pin(ns->id, k);
      if (s.ok()) {
        ++n;
      } else if (s.code() != absl::StatusCode::kNotFound) {
        return s;
      }
    }
    resp->set_pinned(n);
    return absl::OkStatus();
  });
}

grpc::Status KvTierService::Unpin(grpc::ServerContext* ctx, const v1::UnpinRequest* req,
                                  v1::UnpinResponse* resp) {
  return Run(ctx, "Unpin", true, [&](storage::TierManager* tm) -> absl::Status {
    KVTIER_ASSIGN_OR_RETURN(auto ns, registry_->Get(req->namespace_()));
    std::vector<ChunkKey> keys;
    KVTIER_RETURN_IF_ERROR(ParseKeys(req->keys(), &keys));
    uint32_t n = 0;
    for (const ChunkKey& k : keys) {
      absl::Status s = tm->Unpin(ns->id, k);
      if (s.ok()) {
        ++n;
      } else if (s.code() != absl::StatusCode::kNotFound &&
                 s.code() != absl::StatusCode::kFailedPrecondition) {
        return s;
      }
    }
    if (req->lease_id() != 0) {
      absl::Status s = tm->ReleaseLease(req->lease_id());
      if (!s.ok() && s.code() != absl::StatusCode::kNotFound) return s;
    }
    resp->set_unpinned(n);
    return absl::OkStatus();
  });
}

// ---- Compact, Stats -----------------------------------------------------------------------------

grpc::Status KvTierService::Compact(grpc::ServerContext* ctx, const v1::CompactRequest* req,
                                    v1::CompactResponse* resp) {
  return Run(ctx, "Compact", true, [&](storage::TierManager* tm) -> absl::Status {
    KVTIER_ASSIGN_OR_RETURN(auto ns, registry_->Get(req->namespace_()));
    KVTIER_ASSIGN_OR_RETURN(ChunkKey key, KeyFromProto(req->context_key(), "context_key"));
    if (req->method().empty()) return absl::InvalidArgumentError("method is required");
    CompactionInput in;
    in.method = req->method();
    in.kv = &req->kv();
    in.num_tokens = req->num_tokens();
    in.queries = &req->observation_queries();
    in.window = req->window();
    in.scores = &req->attention_scores();
    const Clock::time_point t0 = Clock::now();
    absl::StatusOr<CompactionOutput> out = service::Compact(*ns, in);
    if (!out.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("Compact: ", out.status().message()));
    }
    metrics_->ObserveCodec(kernels::CodecId::kCompacted, CodecOp::kEncode, req->kv().size(),
                           out->payload.size(), SecondsSince(t0));
    if (ctx->IsCancelled()) return CancelledStatus(ctx, "before storing");
    storage::ChunkMeta meta;
    meta.codec_id = static_cast<uint8_t>(kernels::CodecId::kCompacted);
    meta.num_tokens = req->num_tokens();
    meta.decoded_bytes = req->kv().size();
    KVTIER_RETURN_IF_ERROR(tm->Put(ns->id, key, out->payload, meta));
    resp->set_kept_tokens(static_cast<uint32_t>(out->mean_kept + 0.5));
    resp->set_stored_bytes(out->payload.size());
    return absl::OkStatus();
  });
}

grpc::Status KvTierService::Stats(grpc::ServerContext* ctx, const v1::StatsRequest*,
                                  v1::StatsResponse* resp) {
  return Run(ctx, "Stats", true, [&](storage::TierManager* tm) -> absl::Status {
    storage::StorageStats s = tm->Stats();
    for (int i = 0; i < storage::kNumTiers; ++i) {
      const storage::TierStats& t = s.tiers[i];
      if (!t.enabled) continue;
      v1::TierStats* p = resp->add_tiers();
      p->set_tier(TierToProto(static_cast<storage::TierKind>(i)));
      p->set_capacity_bytes(t.capacity_bytes);
      p->set_used_bytes(t.used_bytes);
      p->set_chunks(t.chunks);
      p->set_hits(t.hits);
      p->set_misses(metrics_->tier_misses(i));
      p->set_evictions(t.evictions);
    }
    resp->set_namespaces(static_cast<uint32_t>(registry_->size()));
    resp->set_pinned_chunks(s.pinned_chunks);
    resp->set_active_leases(s.active_leases);
    resp->set_lookup_tokens_requested(metrics_->tokens_requested());
    resp->set_lookup_tokens_hit(metrics_->tokens_hit());
    resp->set_ingest_tensor_bytes(ingest_tensor_bytes_.load(std::memory_order_relaxed));
    resp->set_ingest_payload_bytes(ingest_payload_bytes_.load(std::memory_order_relaxed));
    resp->set_gpu_tier(s.tiers[storage::TierIndex(storage::TierKind::kGpu)].enabled);
    resp->set_version(KVTIER_VERSION_STRING);
    return absl::OkStatus();
  });
}

}  // namespace kvtier::service
