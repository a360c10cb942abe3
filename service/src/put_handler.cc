// Put: a raw callback handler that parses the client stream by hand, so each data byte is copied
// once (and checksummed while copied); nothing becomes visible before the whole value arrived and
// matched its CRC-32C.
#include "kvtier_service.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "convert.h"
#include "handler_util.h"
#include "kvtier/common/crc32c.h"
#include "kvtier/common/logging.h"
#include "kvtier/common/status.h"
#include "kvtier/kernels/codec.h"

namespace kvtier::service {

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
  if (header.has_shm()) {
    // The bytes are in the client's shared memory: copy them out now (the client may change the
    // region at any time; what is checked and stored is this copy). The stream carries no data.
    if (header.shm().length() != total) {
      return absl::InvalidArgumentError(
          absl::StrCat("header.shm.length (", header.shm().length(),
                       ") differs from header.total_bytes (", total, ")"));
    }
    KVTIER_ASSIGN_OR_RETURN(SharedMemoryRegistry::View view, ResolveShm(header.shm()));
    // The checksum covers the copy, i.e. the bytes kept, whatever the client does meanwhile.
    st->crc = Crc32cAppend(0, &st->data, view.data, view.size);
    shm_->CountRead(view.size);
  }
  return absl::OkStatus();
}

absl::StatusOr<SharedMemoryRegistry::View> KvTierService::ResolveShm(
    const v1::SharedMemoryRef& ref) const {
  if (shm_ == nullptr) {
    return absl::FailedPreconditionError(
        "this kvtierd offers no shared memory (server.shared_memory is off or it has no Unix "
        "socket)");
  }
  return shm_->Resolve(ref.region(), ref.offset(), ref.length());
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

absl::Status KvTierService::FinishPut(const CallLiveness& live, storage::TierManager* tm,
                                      PutState* st, v1::PutResponse* resp) {
  if (st->data.size() != st->total) {
    return absl::InvalidArgumentError(absl::StrCat("Put stream ended after ", st->data.size(),
                                                   " of ", st->total, " bytes"));
  }
  const bool check_crc = !st->header.has_shm() || st->header.has_crc32c();
  if (check_crc && st->crc != st->header.crc32c()) {
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
    bool on_gpu = false;
    absl::Status s = EncodeTensor(st->ns->codec, in, &encoded, &on_gpu);
    if (!s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("encode failed: ", s.message()));
    }
    metrics_->ObserveCodec(st->ns->codec.id, CodecOp::kEncode, st->total, encoded.size(),
                           SecondsSince(t0), on_gpu);
    payload = absl::MakeConstSpan(encoded);
    meta.codec_id = static_cast<uint8_t>(st->ns->codec.id);
    meta.num_tokens = st->header.num_tokens();
    meta.decoded_bytes = st->total;
  } else {
    payload = absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(st->data.data()),
                                        st->data.size());
    auto info = kernels::InspectPayload(payload, st->crc);  // st->crc: the whole payload, checked above
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
  KVTIER_RETURN_IF_ERROR(live.Check("before storing"));
  const bool existed = tm->Contains(st->ns->id, st->key);
  storage::PutOptions put_options;
  // An uploaded payload arrived with its CRC-32C checked: storage keeps it (no pass on demotion,
  // every later read checked against it). An encoded tensor's is computed when it goes to disk.
  if (!st->tensor) put_options.crc32c = st->crc;
  KVTIER_RETURN_IF_ERROR(tm->Put(st->ns->id, st->key, payload, meta, put_options));
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
    absl::Status s = service_->FinishPut(CallLiveness{ctx_}, tm_, &st_, &resp);
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

}  // namespace kvtier::service
