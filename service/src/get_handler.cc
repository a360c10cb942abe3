// Get: looks a chunk up, verifies it, decodes it when a tensor is asked for, and streams it with
// a raw callback handler whose data slices point into the stored (or decoded) bytes.
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
#include "kvtier/kernels/compacted.h"

namespace kvtier::service {

absl::Status KvTierService::PrepareGet(const CallLiveness& live, const v1::GetRequest& req,
                                       storage::TierManager* tm,
                                       const SharedMemoryRegistry::View* shm, GetPlan* plan,
                                       bool must_fit) {
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
  absl::Span<const uint8_t> payload = handle->bytes();
  if (must_fit) {
    // The answer's size is known before any work: the payload, or the tensor the chunk decodes to.
    const uint64_t answer = tensor ? handle->meta().decoded_bytes : payload.size();
    if (shm == nullptr || answer > shm->size) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the answer (", answer, " bytes) does not fit the shared memory range (",
          shm == nullptr ? 0 : shm->size, " bytes): fetch it through gRPC"));
    }
  }
  metrics_->CountHits(handle->tier(), 1);  // after the refusal above: the retry through gRPC counts
  // End-to-end check: the bytes we are about to serve are the bytes that were acknowledged.
  // Storage records a CRC-32C once a chunk has been on disk (0 while it only lived in memory);
  // the payload's own header and body checksums are verified below in every case.
  // A payload asked for into the caller's shared memory is copied there by the same pass (the
  // client is told only once it is verified).
  const bool payload_to_shm = !tensor && shm != nullptr && payload.size() <= shm->size;
  const uint32_t payload_crc = payload_to_shm
                                   ? Crc32cCopy(0, shm->data, payload.data(), payload.size())
                                   : Crc32c(payload.data(), payload.size());
  plan->in_shm = payload_to_shm;
  if (handle->crc32c() != 0 && payload_crc != handle->crc32c()) {
    metrics_->CountChecksumFailure(ChecksumSource::kFetch);
    return absl::DataLossError("stored payload failed its checksum; not served");
  }
  KVTIER_RETURN_IF_ERROR(live.Check("before sending"));

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
    h->set_in_shared_memory(plan->in_shm);
    plan->out = out;
    plan->path = TransferPath::kFetchPayload;
    return absl::OkStatus();
  }
  auto info = kernels::InspectPayload(payload, payload_crc);  // one pass for both checks
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
    bool on_gpu = false;
    absl::Status s = DecodeTensor(
        payload, *info,
        absl::MakeSpan(reinterpret_cast<uint8_t*>(decoded.data()), decoded.size()), &on_gpu);
    if (!s.ok()) {
      if (s.code() == absl::StatusCode::kDataLoss) {
        metrics_->CountChecksumFailure(ChecksumSource::kFetch);
      }
      return absl::DataLossError(absl::StrCat("decode failed: ", s.message()));
    }
    metrics_->ObserveCodec(info->codec.id, CodecOp::kDecode, decoded.size(), payload.size(),
                           SecondsSince(t0), on_gpu);
    out = absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(decoded.data()),
                                    decoded.size());
    plan->in_shm = shm != nullptr && out.size() <= shm->size;
    out_crc = plan->in_shm ? Crc32cCopy(0, shm->data, out.data(), out.size())
                           : Crc32c(out.data(), out.size());
  }
  h->set_total_bytes(out.size());
  h->set_crc32c(out_crc);
  h->set_in_shared_memory(plan->in_shm);
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
    // The caller's shared memory range: when the answer fits, it goes there and the stream
    // carries only the header.
    absl::StatusOr<SharedMemoryRegistry::View> shm;
    if (req.has_shm()) {
      shm = service_->ResolveShm(req.shm());
      if (!shm.ok()) {
        FinishWith(shm.status());
        return;
      }
    }
    s = service_->PrepareGet(CallLiveness{ctx_}, req, tm, req.has_shm() ? &*shm : nullptr,
                             &plan_);
    if (!s.ok()) {
      FinishWith(s);
      return;
    }
    if (plan_.in_shm) service_->shm_->CountWritten(plan_.out.size());
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
    if (plan_.in_shm) {  // the data is in the caller's shared memory
      grpc::Slice slice(prefix_.data(), prefix_.size());
      buffer_ = grpc::ByteBuffer(&slice, 1);
      off_ = plan_.out.size();
      StartWrite(&buffer_);
      return;
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

}  // namespace kvtier::service
