#include "kvtier_service.h"

#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "compaction.h"
#include "convert.h"
#include "kvtier/common/crc32c.h"
#include "kvtier/common/logging.h"
#include "kvtier/common/status.h"
#include "kvtier/kernels/codec.h"
#include "kvtier/kernels/compacted.h"

namespace kvtier::service {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The status to return once the call is cancelled: DEADLINE_EXCEEDED when its deadline passed.
absl::Status CancelledStatus(grpc::ServerContextBase* ctx, const char* where) {
  if (ctx->deadline() <= std::chrono::system_clock::now()) {
    return absl::DeadlineExceededError(absl::StrCat("deadline exceeded ", where));
  }
  return absl::CancelledError(absl::StrCat("cancelled ", where));
}

}  // namespace

// Reserves bytes of a shared budget; released by the destructor.
class BudgetReservation {
 public:
  BudgetReservation(std::atomic<uint64_t>* used, uint64_t limit, uint64_t bytes)
      : used_(used), bytes_(bytes) {
    uint64_t prev = used_->fetch_add(bytes_, std::memory_order_acq_rel);
    if (prev + bytes_ > limit) {
      used_->fetch_sub(bytes_, std::memory_order_acq_rel);
      bytes_ = 0;
      ok_ = false;
    }
  }
  ~BudgetReservation() {
    if (bytes_ > 0) used_->fetch_sub(bytes_, std::memory_order_acq_rel);
  }
  bool ok() const { return ok_; }

 private:
  std::atomic<uint64_t>* used_;
  uint64_t bytes_;
  bool ok_ = true;
};

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
  return Run(ctx, "CreateNamespace", false, [&](storage::TierManager*) -> absl::Status {
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
  return Run(ctx, "GetNamespace", false, [&](storage::TierManager*) -> absl::Status {
    KVTIER_ASSIGN_OR_RETURN(auto entry, registry_->Get(req->name()));
    NamespaceToProto(*entry, resp->mutable_namespace_());
    return absl::OkStatus();
  });
}

grpc::Status KvTierService::ListNamespaces(grpc::ServerContext* ctx,
                                           const v1::ListNamespacesRequest*,
                                           v1::ListNamespacesResponse* resp) {
  return Run(ctx, "ListNamespaces", false, [&](storage::TierManager*) -> absl::Status {
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

// ---- Put ----------------------------------------------------------------------------------------

// ---- Put: raw callback handler; the stream is parsed by hand so data bytes are copied once ----

absl::Status KvTierService::StartPut(const v1::PutHeader& header, PutState* st) {
  st->header = header;
  KVTIER_ASSIGN_OR_RETURN(st->ns, registry_->Get(header.namespace_()));
  KVTIER_ASSIGN_OR_RETURN(st->key, KeyFromProto(header.key(), "header.key"));
  const uint64_t total = header.total_bytes();
  st->total = total;
  if (total == 0) return absl::InvalidArgumentError("header.total_bytes is 0");
  if (total > options_.max_value_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("value of ", total,
                                                     " bytes exceeds max_value_bytes (",
                                                     options_.max_value_bytes, ")"));
  }
  st->tensor = header.format() == v1::DATA_FORMAT_TENSOR;
  if (!st->tensor && header.format() != v1::DATA_FORMAT_PAYLOAD) {
    return absl::InvalidArgumentError("header.format is not TENSOR or PAYLOAD");
  }
  const NamespaceInfo& ns = *st->ns;
  if (st->tensor) {
    if (header.num_tokens() == 0 || header.num_tokens() > ns.tokens_per_chunk) {
      return absl::InvalidArgumentError(
          absl::StrCat("header.num_tokens must be in [1, ", ns.tokens_per_chunk,
                       "] (the namespace's tokens_per_chunk), got ", header.num_tokens()));
    }
    const uint64_t expect = ns.layout.ChunkBytes(header.num_tokens());
    if (total != expect) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor of ", header.num_tokens(), " tokens in layout ", ns.layout.DebugString(),
          " is ", expect, " bytes; header.total_bytes says ", total));
    }
  }
  st->budget = std::make_unique<BudgetReservation>(&ingest_buffered_bytes_,
                                                   options_.max_buffered_put_bytes, total);
  if (!st->budget->ok()) {
    return absl::ResourceExhaustedError(
        "too many bytes buffered by Puts in progress (max_buffered_put_bytes); retry later");
  }
  st->data.reserve(total);
  st->started = true;
  return absl::OkStatus();
}

absl::Status KvTierService::AppendPut(PutState* st, const uint8_t* p, size_t n) {
  if (st->data.size() + n > st->total) {
    return absl::InvalidArgumentError(
        absl::StrCat("Put stream carries more than header.total_bytes (", st->total, ")"));
  }
  st->crc = Crc32cExtend(st->crc, p, n);
  st->data.append(reinterpret_cast<const char*>(p), n);
  return absl::OkStatus();
}

absl::Status KvTierService::FinishPut(grpc::ServerContextBase* ctx, storage::TierManager* tm,
                                      PutState* st, v1::PutResponse* resp) {
  if (st->data.size() != st->total) {
    return absl::InvalidArgumentError(absl::StrCat("Put stream ended after ", st->data.size(),
                                                   " of ", st->total, " bytes"));
  }
  if (st->crc != st->header.crc32c()) {
    metrics_->CountChecksumFailure(ChecksumSource::kPutStream);
    return absl::InvalidArgumentError(
        "CRC-32C of the streamed bytes does not match header.crc32c; nothing stored");
  }
  metrics_->AddTransfer(st->tensor ? TransferPath::kIngestTensor : TransferPath::kIngestPayload,
                        st->total);

  std::vector<uint8_t> encoded;
  absl::Span<const uint8_t> payload;
  storage::ChunkMeta meta;
  if (st->tensor) {
    kernels::ChunkInput in;
    in.data = st->data.data();
    in.space = kernels::MemorySpace::kHost;
    in.layout = st->ns->layout;
    in.num_tokens = st->header.num_tokens();
    in.first_position = st->header.first_position();
    in.ends_sequence = st->header.ends_sequence();
    const Clock::time_point t0 = Clock::now();
    absl::Status s = kernels::Encode(st->ns->codec, in, &encoded);
    if (!s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("encode failed: ", s.message()));
    }
    metrics_->ObserveCodec(st->ns->codec.id, CodecOp::kEncode, st->total, encoded.size(),
                           SecondsSince(t0));
    payload = absl::MakeConstSpan(encoded);
    meta.codec_id = static_cast<uint8_t>(st->ns->codec.id);
    meta.num_tokens = st->header.num_tokens();
    meta.decoded_bytes = st->total;
  } else {
    payload = absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(st->data.data()),
                                        st->data.size());
    auto info = kernels::InspectPayload(payload);
    if (!info.ok()) {
      if (info.status().code() == absl::StatusCode::kDataLoss) {
        metrics_->CountChecksumFailure(ChecksumSource::kPutPayload);
      }
      return absl::InvalidArgumentError(
          absl::StrCat("payload rejected: ", info.status().message()));
    }
    if (info->layout != st->ns->layout) {
      return absl::InvalidArgumentError(
          absl::StrCat("payload layout ", info->layout.DebugString(),
                       " differs from the namespace's ", st->ns->layout.DebugString()));
    }
    if (!(info->codec == st->ns->codec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("payload codec ", info->codec.ToString(),
                       " differs from the namespace's ", st->ns->codec.ToString()));
    }
    if (info->num_tokens == 0 || info->num_tokens > st->ns->tokens_per_chunk) {
      return absl::InvalidArgumentError(
          absl::StrCat("payload holds ", info->num_tokens, " tokens; the namespace's chunks "
                       "hold at most ", st->ns->tokens_per_chunk));
    }
    meta.codec_id = static_cast<uint8_t>(info->codec.id);
    meta.num_tokens = info->num_tokens;
    meta.decoded_bytes = info->DecodedBytes();
  }
  // Last chance to honour a cancellation before the value becomes visible.
  if (ctx->IsCancelled()) return CancelledStatus(ctx, "before storing");
  const bool existed = tm->Contains(st->ns->id, st->key);
  KVTIER_RETURN_IF_ERROR(tm->Put(st->ns->id, st->key, payload, meta));
  if (st->header.pin()) KVTIER_RETURN_IF_ERROR(tm->Pin(st->ns->id, st->key));
  ingest_tensor_bytes_.fetch_add(meta.decoded_bytes, std::memory_order_relaxed);
  ingest_payload_bytes_.fetch_add(payload.size(), std::memory_order_relaxed);
  resp->set_stored_bytes(payload.size());
  resp->set_tensor_bytes(meta.decoded_bytes);
  resp->set_replaced(existed);
  return absl::OkStatus();
}

namespace {

// Reads protobuf wire format from the slices of a gRPC message.
class SliceReader {
 public:
  explicit SliceReader(std::vector<grpc::Slice> slices) : slices_(std::move(slices)) { Skip(); }
  bool AtEnd() const { return idx_ >= slices_.size(); }
  bool ReadVarint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (AtEnd()) return false;
      uint8_t b = slices_[idx_].begin()[pos_];
      Advance(1);
      *v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;
  }
  // Calls fn(ptr, n) on each contiguous piece of the next `len` bytes.
  template <typename F>
  bool ReadBytes(uint64_t len, F&& fn) {
    while (len > 0) {
      if (AtEnd()) return false;
      const grpc::Slice& s = slices_[idx_];
      size_t n = static_cast<size_t>(std::min<uint64_t>(len, s.size() - pos_));
      if (!fn(s.begin() + pos_, n)) return false;
      Advance(n);
      len -= n;
    }
    return true;
  }

 private:
  void Advance(size_t n) {
    pos_ += n;
    Skip();
  }
  void Skip() {
    while (idx_ < slices_.size() && pos_ >= slices_[idx_].size()) {
      ++idx_;
      pos_ = 0;
    }
  }
  std::vector<grpc::Slice> slices_;
  size_t idx_ = 0;
  size_t pos_ = 0;
};

}  // namespace

class KvTierService::PutReactor final : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  PutReactor(KvTierService* service, grpc::CallbackServerContext* ctx, grpc::ByteBuffer* response)
      : service_(service), ctx_(ctx), response_(response), start_(Clock::now()) {
    // Authentication and admission before any message is read.
    absl::Status s = service_->Admit(ctx_, /*needs_storage=*/true, &tm_);
    if (!s.ok()) {
      FinishWith(s);
      return;
    }
    admitted_ = true;
    StartRead(&buffer_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // end of the stream, or the call was cancelled
      if (ctx_->IsCancelled()) {
        FinishWith(CancelledStatus(ctx_, "during the Put stream"));
      } else if (!st_.started) {
        FinishWith(absl::InvalidArgumentError(
            "empty Put stream: the first message carries the header"));
      } else {
        Complete();
      }
      return;
    }
    absl::Status s = Consume();
    buffer_.Clear();
    if (!s.ok()) {
      FinishWith(s);
      return;
    }
    StartRead(&buffer_);
  }

  void OnDone() override {
    service_->Record("Put", status_, SecondsSince(start_));
    delete this;
  }

 private:
  // Parses one PutRequest: field 1 = header (first message only), field 2 = data.
  absl::Status Consume() {
    std::vector<grpc::Slice> slices;
    if (!buffer_.Dump(&slices).ok()) return absl::InvalidArgumentError("unreadable message");
    SliceReader r(std::move(slices));
    const bool first = !seen_first_;
    seen_first_ = true;
    while (!r.AtEnd()) {
      uint64_t tag, len;
      if (!r.ReadVarint(&tag)) return absl::InvalidArgumentError("malformed PutRequest");
      const uint64_t field = tag >> 3, wire = tag & 7;
      if (wire == 0) {  // unknown varint field: skip
        if (!r.ReadVarint(&len)) return absl::InvalidArgumentError("malformed PutRequest");
        continue;
      }
      if (wire != 2 || !r.ReadVarint(&len)) {
        return absl::InvalidArgumentError("malformed PutRequest");
      }
      if (field == 1) {
        if (!first || st_.started) {
          return absl::InvalidArgumentError("only the first Put message may carry a header");
        }
        std::string bytes;
        if (!r.ReadBytes(len, [&](const uint8_t* p, size_t n) {
              bytes.append(reinterpret_cast<const char*>(p), n);
              return true;
            })) {
          return absl::InvalidArgumentError("malformed PutRequest");
        }
        v1::PutHeader header;
        if (!header.ParseFromString(bytes)) return absl::InvalidArgumentError("malformed header");
        KVTIER_RETURN_IF_ERROR(service_->StartPut(header, &st_));
      } else if (field == 2) {
        if (!st_.started) {
          return absl::InvalidArgumentError("the first Put message must carry the header");
        }
        absl::Status s;
        if (!r.ReadBytes(len, [&](const uint8_t* p, size_t n) {
              s = service_->AppendPut(&st_, p, n);
              return s.ok();
            })) {
          return s.ok() ? absl::InvalidArgumentError("malformed PutRequest") : s;
        }
      } else {  // unknown length-delimited field: skip
        if (!r.ReadBytes(len, [](const uint8_t*, size_t) { return true; })) {
          return absl::InvalidArgumentError("malformed PutRequest");
        }
      }
    }
    if (!st_.started) {
      return absl::InvalidArgumentError("the first Put message must carry the header");
    }
    return absl::OkStatus();
  }

  void Complete() {
    v1::PutResponse resp;
    absl::Status s = service_->FinishPut(ctx_, tm_, &st_, &resp);
    if (s.ok()) {
      std::string bytes = resp.SerializeAsString();
      grpc::Slice slice(bytes.data(), bytes.size());
      *response_ = grpc::ByteBuffer(&slice, 1);
    }
    FinishWith(s);
  }

  void FinishWith(const absl::Status& s) {
    status_ = s;
    // The call's slot is free once its status is decided (gRPC's OnDone may run much later).
    if (admitted_) {
      service_->Release();
      admitted_ = false;
    }
    st_.data = std::string();  // nothing of an unfinished value stays around
    st_.budget.reset();
    Finish(ToGrpc(s));
  }

  KvTierService* const service_;
  grpc::CallbackServerContext* const ctx_;
  grpc::ByteBuffer* const response_;
  const Clock::time_point start_;
  storage::TierManager* tm_ = nullptr;
  bool admitted_ = false;
  bool seen_first_ = false;
  grpc::ByteBuffer buffer_;
  PutState st_;
  absl::Status status_;
};

grpc::ServerReadReactor<grpc::ByteBuffer>* KvTierService::Put(grpc::CallbackServerContext* ctx,
                                                              grpc::ByteBuffer* response) {
  return new PutReactor(this, ctx, response);
}

// ---- Get ----------------------------------------------------------------------------------------

absl::Status KvTierService::PrepareGet(grpc::ServerContextBase* ctx, const v1::GetRequest& req,
                                       storage::TierManager* tm, GetPlan* plan) {
  KVTIER_ASSIGN_OR_RETURN(auto ns, registry_->Get(req.namespace_()));
  KVTIER_ASSIGN_OR_RETURN(ChunkKey key, KeyFromProto(req.key(), "key"));
  const bool tensor = req.format() == v1::DATA_FORMAT_TENSOR;
  if (!tensor && req.format() != v1::DATA_FORMAT_PAYLOAD) {
    return absl::InvalidArgumentError("format is not TENSOR or PAYLOAD");
  }
  absl::StatusOr<storage::ChunkHandle> got = tm->Get(ns->id, key);
  if (!got.ok()) {
    if (got.status().code() == absl::StatusCode::kNotFound) metrics_->CountMiss();
    return got.status();
  }
  plan->handle = std::move(*got);
  storage::ChunkHandle* handle = &plan->handle;
  metrics_->CountHits(handle->tier(), 1);
  absl::Span<const uint8_t> payload = handle->bytes();
  // End-to-end check: the bytes we are about to serve are the bytes that were acknowledged.
  // Storage records a CRC-32C once a chunk has been on disk (0 while it only lived in memory);
  // the payload's own header and body checksums are verified below in every case.
  const uint32_t payload_crc = Crc32c(payload.data(), payload.size());
  if (handle->crc32c() != 0 && payload_crc != handle->crc32c()) {
    metrics_->CountChecksumFailure(ChecksumSource::kFetch);
    return absl::DataLossError("stored payload failed its checksum; not served");
  }
  if (ctx->IsCancelled()) return CancelledStatus(ctx, "before sending");

  v1::GetHeader* h = &plan->header;
  h->set_format(req.format());
  h->set_tier(TierToProto(handle->tier()));
  h->set_payload_bytes(payload.size());

  std::string& decoded = plan->decoded;
  absl::Span<const uint8_t> out = payload;
  uint32_t out_crc = payload_crc;
  if (kernels::IsCompactedPayload(payload)) {
    // A compacted context (Compact): fetched whole, as its payload.
    if (tensor) {
      return absl::InvalidArgumentError(
          "this key holds a compacted context: fetch it with format PAYLOAD and decode it with "
          "kernels::DecodeCompacted (its tokens differ per layer and head)");
    }
    auto cinfo = kernels::InspectCompacted(payload);
    if (!cinfo.ok()) {
      if (cinfo.status().code() == absl::StatusCode::kDataLoss) {
        metrics_->CountChecksumFailure(ChecksumSource::kFetch);
      }
      return absl::DataLossError(
          absl::StrCat("stored compacted context is unreadable: ", cinfo.status().message()));
    }
    h->set_num_tokens(cinfo->source_tokens);
    h->set_first_position(cinfo->first_position);
    h->set_ends_sequence(cinfo->ends_sequence);
    h->set_codec("compacted/" + cinfo->inner_codec.ToString());
    LayoutToProto(cinfo->layout, h->mutable_layout());
    h->set_total_bytes(out.size());
    h->set_crc32c(out_crc);
    plan->out = out;
    plan->path = TransferPath::kFetchPayload;
    return absl::OkStatus();
  }
  auto info = kernels::InspectPayload(payload);
  if (!info.ok()) {
    if (info.status().code() == absl::StatusCode::kDataLoss) {
      metrics_->CountChecksumFailure(ChecksumSource::kFetch);
    }
    return absl::DataLossError(absl::StrCat("stored payload is unreadable: ",
                                            info.status().message()));
  }
  h->set_num_tokens(info->num_tokens);
  h->set_first_position(info->first_position);
  h->set_ends_sequence(info->ends_sequence);
  h->set_codec(info->codec.ToString());
  LayoutToProto(info->layout, h->mutable_layout());
  if (tensor) {
    // Decode at the last step, only when the caller asked for a tensor.
    decoded.resize(info->DecodedBytes());
    const Clock::time_point t0 = Clock::now();
    absl::Status s = kernels::Decode(
        payload, kernels::DecodeTarget::Contiguous(decoded.data(), info->layout,
                                                   info->num_tokens));
    if (!s.ok()) {
      if (s.code() == absl::StatusCode::kDataLoss) {
        metrics_->CountChecksumFailure(ChecksumSource::kFetch);
      }
      return absl::DataLossError(absl::StrCat("decode failed: ", s.message()));
    }
    metrics_->ObserveCodec(info->codec.id, CodecOp::kDecode, decoded.size(), payload.size(),
                           SecondsSince(t0));
    out = absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(decoded.data()),
                                    decoded.size());
    out_crc = Crc32c(out.data(), out.size());
  }
  h->set_total_bytes(out.size());
  h->set_crc32c(out_crc);

  plan->out = out;
  plan->path = tensor ? TransferPath::kFetchTensor : TransferPath::kFetchPayload;
  return absl::OkStatus();
}

namespace {

void AppendVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

}  // namespace

// Streams a prepared Get as hand-framed GetResponse messages whose data bytes are not copied:
// each message is a small serialized prefix (header on the first, then the tag and length of
// `data`) plus a slice pointing into the storage handle's (or the decoded tensor's) bytes, which
// the reactor keeps alive until gRPC is done with them (OnDone).
class KvTierService::GetReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  GetReactor(KvTierService* service, grpc::CallbackServerContext* ctx,
             const grpc::ByteBuffer* request)
      : service_(service), ctx_(ctx), start_(Clock::now()) {
    storage::TierManager* tm = nullptr;
    absl::Status s = service_->Admit(ctx_, /*needs_storage=*/true, &tm);
    if (!s.ok()) {
      FinishWith(s);
      return;
    }
    admitted_ = true;
    tm_ = tm;
    std::vector<grpc::Slice> slices;
    v1::GetRequest req;
    std::string bytes;
    if (request->Dump(&slices).ok()) {
      for (const grpc::Slice& sl : slices) {
        bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
      }
    }
    if (!req.ParseFromString(bytes)) {
      FinishWith(absl::InvalidArgumentError("malformed GetRequest"));
      return;
    }
    release_lease_ = req.release_lease_id();
    s = service_->PrepareGet(ctx_, req, tm, &plan_);
    if (!s.ok()) {
      FinishWith(s);
      return;
    }
    NextWrite();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      FinishWith(CancelledStatus(ctx_, "while streaming (client gone)"));
      return;
    }
    if (off_ >= plan_.out.size()) {
      service_->metrics_->AddTransfer(plan_.path, plan_.out.size());
      FinishWith(absl::OkStatus());
      return;
    }
    NextWrite();
  }

  void OnDone() override {
    if (release_lease_ != 0 && tm_ != nullptr) tm_->ReleaseLease(release_lease_).IgnoreError();
    service_->Record("Get", status_, SecondsSince(start_));
    delete this;
  }

 private:
  void NextWrite() {
    if (ctx_->IsCancelled()) {
      FinishWith(CancelledStatus(ctx_, "while streaming"));
      return;
    }
    const size_t step = service_->options_.stream_message_bytes;
    size_t n = std::min(step, plan_.out.size() - off_);
    if (plan_.out.size() - off_ - n < step / 16) n = plan_.out.size() - off_;
    prefix_.clear();
    if (off_ == 0) {
      std::string header = plan_.header.SerializeAsString();
      prefix_.push_back(0x0A);  // field 1 (header), length-delimited
      AppendVarint(&prefix_, header.size());
      prefix_.append(header);
    }
    prefix_.push_back(0x12);  // field 2 (data), length-delimited
    AppendVarint(&prefix_, n);
    grpc::Slice parts[2] = {
        grpc::Slice(prefix_.data(), prefix_.size()),  // copied (small)
        grpc::Slice(plan_.out.data() + off_, n, grpc::Slice::STATIC_SLICE)};
    buffer_ = grpc::ByteBuffer(parts, n > 0 ? 2 : 1);
    off_ += n;
    StartWrite(&buffer_);
  }

  void FinishWith(const absl::Status& s) {
    status_ = s;
    // The call's slot is free once its status is decided (gRPC's OnDone may run much later).
    if (admitted_) {
      service_->Release();
      admitted_ = false;
    }
    Finish(ToGrpc(s));
  }

  KvTierService* const service_;
  grpc::CallbackServerContext* const ctx_;
  const Clock::time_point start_;
  storage::TierManager* tm_ = nullptr;
  bool admitted_ = false;
  uint64_t release_lease_ = 0;
  GetPlan plan_;
  size_t off_ = 0;
  std::string prefix_;
  grpc::ByteBuffer buffer_;
  absl::Status status_;
};

grpc::ServerWriteReactor<grpc::ByteBuffer>* KvTierService::Get(grpc::CallbackServerContext* ctx,
                                                               const grpc::ByteBuffer* request) {
  return new GetReactor(this, ctx, request);
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
