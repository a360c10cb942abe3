// The kvtier client: one gRPC channel, deadlines and retries around every call, statistics.
#include "kvtier/client/client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <utility>

#include <fmt/format.h>

#include "convert.h"
#include "shared_arena.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "kvtier.grpc.pb.h"
#include "kvtier/client/retry.h"
#include "kvtier/common/crc32c.h"
#include "kvtier/common/shm_protocol.h"
#include "kvtier/common/status.h"
#include "kvtier/kernels/codec.h"

namespace kvtier::client {

namespace v1 = ::kvtier::v1;
using Clock = std::chrono::steady_clock;

namespace {

// A Get larger than this is refused before allocating (a daemon bug or a hostile peer).
constexpr uint64_t kMaxGetBytes = uint64_t{16} << 30;

// gRPC takes system_clock deadlines; the SDK measures with steady_clock.
std::chrono::system_clock::time_point ToSystem(Clock::time_point t) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(t - Clock::now());
}

std::string KeyBytes(const ChunkKey& key) { return std::string(key.view()); }

// Adds a "what to do" hint to errors whose cause is usually on the caller's side.
absl::Status Explain(absl::Status status, const std::string& target) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      return absl::UnavailableError(fmt::format(
          "{} (is kvtierd running and listening on {}? check the address or socket path)",
          std::string(status.message()), target));
    case absl::StatusCode::kUnauthenticated:
      return absl::UnauthenticatedError(fmt::format(
          "{} (the daemon wants a token: pass the one from its config)",
          std::string(status.message())));
    case absl::StatusCode::kDeadlineExceeded:
      return absl::DeadlineExceededError(
          fmt::format("{} (raise the call deadline if the daemon is busy)",
                      std::string(status.message())));
    default:
      return status;
  }
}

}  // namespace

struct Client::Impl {
  ClientOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::KvTier::Stub> stub;
  std::unique_ptr<grpc::health::v1::Health::Stub> health;

  std::atomic<uint64_t> calls{0}, failed_calls{0}, retries{0}, bytes_sent{0}, bytes_received{0};

  // Same-node shared memory (shared_arena.h): the daemon's registration socket ("" = not used),
  // the registered region, and when registering may be tried again after a failure.
  std::string shm_socket;
  std::mutex shm_mu;
  std::shared_ptr<internal::SharedArena> arena;  // Guarded by shm_mu.
  Clock::time_point next_register{};            // Guarded by shm_mu.

  // A block of the region held by one call; freed when it goes.
  struct ShmBlock {
    std::shared_ptr<internal::SharedArena> arena;
    internal::SharedArena::Block block;
    ShmBlock() = default;
    ShmBlock(const ShmBlock&) = delete;
    ShmBlock& operator=(const ShmBlock&) = delete;
    ~ShmBlock() { Reset(); }
    explicit operator bool() const { return arena != nullptr; }
    void Reset() {
      if (arena != nullptr) arena->Free(block);
      arena.reset();
    }
    void Name(v1::SharedMemoryRef* ref, uint64_t length) const {
      ref->set_region(arena->handle());
      ref->set_offset(block.offset);
      ref->set_length(length);
    }
  };

  // The registered region, registering it when there is none (or the daemon dropped it); nullptr
  // when shared memory is off or unavailable (then tried again at most once a second).
  std::shared_ptr<internal::SharedArena> Arena() {
    if (shm_socket.empty()) return nullptr;
    std::lock_guard<std::mutex> lock(shm_mu);
    if (arena != nullptr && arena->alive()) return arena;
    arena.reset();
    const Clock::time_point now = Clock::now();
    if (now < next_register) return nullptr;
    auto registered =
        internal::SharedArena::Register(shm_socket, options.shared_memory_bytes, options.token);
    if (!registered.ok()) {
      next_register = now + std::chrono::seconds(1);
      return nullptr;
    }
    arena = std::move(*registered);
    return arena;
  }
  // Holds `bytes` of the region in `out`, or leaves it empty (use the socket).
  void AllocateShm(uint64_t bytes, ShmBlock* out) {
    std::shared_ptr<internal::SharedArena> a = Arena();
    if (a == nullptr || bytes > a->size()) return;
    if (auto b = a->Allocate(bytes)) {
      out->arena = std::move(a);
      out->block = *b;
    }
  }
  // Whether a call-channel status means "use gRPC instead" (channel unusable, a daemon that
  // speaks another channel version: UNIMPLEMENTED, or the region is unknown:
  // FAILED_PRECONDITION); clears *use_channel then. Otherwise it is the call's answer.
  static bool ChannelFailed(const absl::Status& s, bool* use_channel) {
    if (s.code() != absl::StatusCode::kUnavailable &&
        s.code() != absl::StatusCode::kUnimplemented &&
        s.code() != absl::StatusCode::kFailedPrecondition) {
      return false;
    }
    *use_channel = false;
    return true;
  }
  // Runs `call`; when it used `shm` and the daemon no longer knows the region (FAILED_PRECONDITION:
  // it restarted), forgets the region and runs `call` again without it, over the socket.
  template <typename Fn>
  absl::Status WithShmFallback(ShmBlock* shm, Fn&& call) {
    absl::Status status = call();
    if (status.code() == absl::StatusCode::kFailedPrecondition && *shm) {
      DropArena(shm->arena);
      shm->Reset();
      status = call();
    }
    return status;
  }
  // After the daemon answered FAILED_PRECONDITION for a region: forget it (registered again by
  // the next call that wants one).
  void DropArena(const std::shared_ptr<internal::SharedArena>& a) {
    std::lock_guard<std::mutex> lock(shm_mu);
    if (arena == a) arena.reset();
  }

  void Prepare(grpc::ClientContext* ctx, Clock::time_point deadline) const {
    ctx->set_deadline(ToSystem(deadline));
    if (!options.token.empty()) ctx->AddMetadata("authorization", "Bearer " + options.token);
  }

  // Runs `attempt` with deadline and retries; fills stats and totals.
  template <typename Fn>
  absl::Status Call(const CallOptions& call, Fn&& attempt) {
    const auto start = Clock::now();
    const auto budget = call.deadline.count() > 0 ? call.deadline : options.default_deadline;
    const auto deadline = start + budget;
    CallStats stats;
    const absl::Status status = RunWithRetries(
        options.retry, deadline, RealRetryClock(),
        [&](Clock::time_point d) {
          stats.bytes_sent = 0;
          stats.bytes_received = 0;
          return attempt(d, &stats);
        },
        &stats.attempts);
    stats.latency = Clock::now() - start;
    stats.status = status.ok() ? status : Explain(status, options.target);
    calls.fetch_add(1, std::memory_order_relaxed);
    if (!status.ok()) failed_calls.fetch_add(1, std::memory_order_relaxed);
    retries.fetch_add(stats.retries(), std::memory_order_relaxed);
    bytes_sent.fetch_add(stats.bytes_sent, std::memory_order_relaxed);
    bytes_received.fetch_add(stats.bytes_received, std::memory_order_relaxed);
    if (call.stats != nullptr) *call.stats = stats;
    return stats.status;
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

const ClientOptions& Client::options() const { return impl_->options; }

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options) {
  KVTIER_RETURN_IF_ERROR(options.Validate());
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  args.SetMaxSendMessageSize(static_cast<int>(std::min<uint64_t>(
      uint64_t{options.put_message_bytes} + (64u << 10), std::numeric_limits<int>::max())));
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_root_certs_pem;
    creds = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name);
    }
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->channel = grpc::CreateCustomChannel(options.target, creds, args);
  if (!impl->channel->WaitForConnected(std::chrono::system_clock::now() + options.connect_timeout)) {
    return absl::UnavailableError(fmt::format(
        "could not connect to kvtierd at {} within {} ms (is it running? for a Unix socket "
        "use unix:/path/to/socket; for TCP host:port{})",
        options.target, options.connect_timeout.count(),
        options.tls ? "; check the TLS certificates" : ""));
  }
  impl->stub = v1::KvTier::NewStub(impl->channel);
  impl->health = grpc::health::v1::Health::NewStub(impl->channel);
  if (options.shared_memory_bytes > 0) {
    const std::string path = internal::UnixSocketPath(options.target);
    if (!path.empty()) {
      impl->shm_socket = shm::SocketPathFor(path);
      impl->Arena();  // register now, so the first call does not pay for it
    }
  }
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

// ---- Namespaces --------------------------------------------------------------------------------

absl::StatusOr<NamespaceSpec> Client::CreateNamespace(const NamespaceSpec& spec,
                                                      const CallOptions& call) {
  v1::CreateNamespaceRequest req;
  *req.mutable_namespace_() = internal::ToProto(spec);
  v1::CreateNamespaceResponse resp;
  KVTIER_RETURN_IF_ERROR(impl_->Call(call, [&](Clock::time_point d, CallStats* s) {
    grpc::ClientContext ctx;
    impl_->Prepare(&ctx, d);
    s->bytes_sent = req.ByteSizeLong();
    auto st = internal::FromGrpc(impl_->stub->CreateNamespace(&ctx, req, &resp));
    s->bytes_received = resp.ByteSizeLong();
    return st;
  }));
  return internal::FromProto(resp.namespace_());
}

absl::StatusOr<NamespaceSpec> Client::GetNamespace(const std::string& name,
                                                   const CallOptions& call) {
  v1::GetNamespaceRequest req;
  req.set_name(name);
  v1::GetNamespaceResponse resp;
  KVTIER_RETURN_IF_ERROR(impl_->Call(call, [&](Clock::time_point d, CallStats* s) {
    grpc::ClientContext ctx;
    impl_->Prepare(&ctx, d);
    s->bytes_sent = req.ByteSizeLong();
    auto st = internal::FromGrpc(impl_->stub->GetNamespace(&ctx, req, &resp));
    s->bytes_received = resp.ByteSizeLong();
    return st;
  }));
  return internal::FromProto(resp.namespace_());
}

absl::StatusOr<std::vector<NamespaceSpec>> Client::ListNamespaces(const CallOptions& call) {
  v1::ListNamespacesRequest req;
  v1::ListNamespacesResponse resp;
  KVTIER_RETURN_IF_ERROR(impl_->Call(call, [&](Clock::time_point d, CallStats* s) {
    grpc::ClientContext ctx;
    impl_->Prepare(&ctx, d);
    auto st = internal::FromGrpc(impl_->stub->ListNamespaces(&ctx, req, &resp));
    s->bytes_received = resp.ByteSizeLong();
    return st;
  }));
  std::vector<NamespaceSpec> out;
  for (const auto& ns : resp.namespaces()) {
    KVTIER_ASSIGN_OR_RETURN(auto spec, internal::FromProto(ns));
    out.push_back(std::move(spec));
  }
  return out;
}

std::vector<ChunkKey> Client::ComputeKeys(const NamespaceSpec& ns,
                                          absl::Span<const uint32_t> tokens,
                                          bool include_partial_tail) {
  const uint32_t tpc = ns.tokens_per_chunk > 0 ? ns.tokens_per_chunk : 256;
  return ComputeChunkKeys(tokens, ns.salt, tpc, include_partial_tail);
}

// ---- Data --------------------------------------------------------------------------------------

absl::StatusOr<LookupResult> Client::Lookup(const std::string& ns,
                                            absl::Span<const ChunkKey> keys, uint32_t lease_ms,
                                            const CallOptions& call) {
  v1::LookupRequest req;
  req.set_namespace_(ns);
  req.set_lease_ms(lease_ms);
  for (const auto& k : keys) req.add_keys(KeyBytes(k));
  v1::LookupResponse resp;
  KVTIER_RETURN_IF_ERROR(impl_->Call(call, [&](Clock::time_point d, CallStats* s) {
    grpc::ClientContext ctx;
    impl_->Prepare(&ctx, d);
    s->bytes_sent = req.ByteSizeLong();
    auto st = internal::FromGrpc(impl_->stub->Lookup(&ctx, req, &resp));
    s->bytes_received = resp.ByteSizeLong();
    return st;
  }));
  LookupResult out;
  out.prefix_chunks = resp.prefix_chunks();
  out.prefix_tokens = resp.prefix_tokens();
  out.lease_id = resp.lease_id();
  for (const auto& c : resp.chunks()) out.tiers.push_back(internal::FromProto(c.tier()));
  if (out.prefix_chunks > keys.size()) {
    return absl::InternalError(fmt::format("daemon reported a prefix of {} chunks for {} keys",
                                           out.prefix_chunks, keys.size()));
  }
  return out;
}

absl::StatusOr<PutResult> Client::Put(const std::string& ns, const ChunkKey& key,
                                      absl::Span<const uint8_t> data, const PutOptions& put,
                                      const CallOptions& call) {
  v1::PutHeader header;
  header.set_namespace_(ns);
  header.set_key(KeyBytes(key));
  header.set_format(internal::ToProto(put.format));
  header.set_num_tokens(put.num_tokens);
  header.set_first_position(put.first_position);
  header.set_ends_sequence(put.ends_sequence);
  header.set_total_bytes(data.size());
  header.set_pin(put.pin);
  const size_t step = impl_->options.put_message_bytes;
  v1::PutResponse resp;
  Impl::ShmBlock shm;
  impl_->AllocateShm(data.size(), &shm);
  // The bytes go through shared memory and the call carries the header only. No CRC-32C: no
  // transport lies between the caller's buffer and the daemon's copy (the daemon still verifies
  // an uploaded payload's own checksums).
  if (shm) std::memcpy(shm.block.data, data.data(), data.size());
  bool use_channel = true;  // with shared memory: the call channel first, gRPC once it fails
  auto put_call = [&]() -> absl::Status {
    if (shm) {
      header.clear_crc32c();
      shm.Name(header.mutable_shm(), data.size());
    } else {
      header.clear_shm();
      header.set_crc32c(Crc32c(data.data(), data.size()));
    }
    const absl::Span<const uint8_t> stream = shm ? absl::Span<const uint8_t>() : data;
    return impl_->Call(call, [&](Clock::time_point d, CallStats* s) {
      if (shm && use_channel) {
        auto r = shm.arena->Call(shm::Op::kPut, header.SerializeAsString(), d);
        if (!Impl::ChannelFailed(r.status(), &use_channel)) {
          if (!r.ok()) return r.status();
          s->bytes_sent = data.size();
          s->bytes_received = r->size();
          return resp.ParseFromString(*r) ? absl::OkStatus()
                                          : absl::InternalError("malformed PutResponse");
        }
        if (r.status().code() == absl::StatusCode::kFailedPrecondition) return r.status();
      }
      grpc::ClientContext ctx;
      impl_->Prepare(&ctx, d);
      auto writer = impl_->stub->Put(&ctx, &resp);
      size_t offset = 0;
      bool first = true;
      // A stream broken mid-way publishes nothing on the daemon, so a retry resends it whole.
      bool closed = false;
      while (first || offset < stream.size()) {
        v1::PutRequest msg;
        if (first) *msg.mutable_header() = header;
        const size_t n = std::min(step, stream.size() - offset);
        if (n > 0) msg.set_data(reinterpret_cast<const char*>(stream.data()) + offset, n);
        // The last message also half-closes the stream (one step less than Write + WritesDone).
        closed = offset + n == stream.size();
        const bool sent = writer->Write(
            msg, closed ? grpc::WriteOptions().set_last_message() : grpc::WriteOptions());
        if (!sent) break;  // the daemon ended the stream; Finish says why
        offset += n;
        first = false;
      }
      s->bytes_sent = shm ? data.size() : offset;
      if (!closed) writer->WritesDone();
      auto st = internal::FromGrpc(writer->Finish());
      s->bytes_received = resp.ByteSizeLong();
      if (st.ok() && (first || offset != stream.size())) {
        return absl::InternalError("daemon acknowledged a Put before receiving all of its bytes");
      }
      return st;
    });
  };
  KVTIER_RETURN_IF_ERROR(impl_->WithShmFallback(&shm, put_call));
  PutResult out;
  out.stored_bytes = resp.stored_bytes();
  out.tensor_bytes = resp.tensor_bytes();
  out.tier = internal::FromProto(resp.tier());
  out.replaced = resp.replaced();
  return out;
}

absl::StatusOr<GetResult> Client::Get(const std::string& ns, const ChunkKey& key,
                                      const GetOptions& get, const CallOptions& call) {
  v1::GetRequest req;
  req.set_namespace_(ns);
  req.set_key(KeyBytes(key));
  req.set_format(internal::ToProto(get.format));
  req.set_release_lease_id(get.release_lease_id);
  GetResult out;
  Impl::ShmBlock shm;
  impl_->AllocateShm(impl_->options.shared_memory_get_bytes, &shm);
  bool use_channel = true;  // with shared memory: the call channel first, gRPC once it fails
  // Takes an answer the daemon wrote into shared memory: copies it out (checksumming the copy).
  auto copy_from_shm = [&](const v1::GetHeader& header, uint32_t* crc) -> absl::Status {
    if (!shm || header.total_bytes() > shm.block.size) {
      return absl::InternalError("daemon answered in shared memory it was not given");
    }
    out.data.clear();
    *crc = Crc32cAppend(0, &out.data, shm.block.data, header.total_bytes());
    return absl::OkStatus();
  };
  // Checks the data in out.data against the header (size, CRC-32C `crc`) and fills the rest.
  auto accept = [&](const v1::GetHeader& header, uint32_t crc) -> absl::Status {
    if (out.data.size() != header.total_bytes()) {
      return absl::DataLossError(fmt::format("Get returned {} of {} bytes", out.data.size(),
                                             header.total_bytes()));
    }
    if (crc != header.crc32c()) return absl::DataLossError("Get data failed its CRC-32C check");
    out.format = internal::FromProto(header.format());
    out.num_tokens = header.num_tokens();
    out.first_position = header.first_position();
    out.ends_sequence = header.ends_sequence();
    out.codec = header.codec();
    auto layout = internal::FromProto(header.layout());
    if (!layout.ok()) return layout.status();
    out.layout = *layout;
    out.tier = internal::FromProto(header.tier());
    out.payload_bytes = header.payload_bytes();
    return absl::OkStatus();
  };
  auto get_call = [&]() -> absl::Status {
    if (shm) {
      shm.Name(req.mutable_shm(), shm.block.size);
    } else {
      req.clear_shm();
    }
    return impl_->Call(call, [&](Clock::time_point d, CallStats* s) {
      s->bytes_sent = req.ByteSizeLong();
      if (shm && use_channel) {
        auto r = shm.arena->Call(shm::Op::kGet, req.SerializeAsString(), d);
        // RESOURCE_EXHAUSTED: the answer does not fit the block; gRPC streams it.
        const bool too_big = r.status().code() == absl::StatusCode::kResourceExhausted;
        if (too_big) use_channel = false;
        if (!too_big && !Impl::ChannelFailed(r.status(), &use_channel)) {
          if (!r.ok()) return r.status();
          v1::GetHeader header;
          if (!header.ParseFromString(*r) || !header.in_shared_memory()) {
            return absl::InternalError("malformed GetHeader on the shared-memory call channel");
          }
          uint32_t crc = 0;
          KVTIER_RETURN_IF_ERROR(copy_from_shm(header, &crc));
          s->bytes_received = out.data.size();
          return accept(header, crc);
        }
        if (r.status().code() == absl::StatusCode::kFailedPrecondition) return r.status();
      }
      grpc::ClientContext ctx;
      impl_->Prepare(&ctx, d);
      auto reader = impl_->stub->Get(&ctx, req);
      v1::GetResponse msg;
      bool have_header = false;
      v1::GetHeader header;
      out.data.clear();
      absl::Status protocol;
      uint32_t shm_crc = 0;  // of the copy out of shared memory, when the data is there
      while (reader->Read(&msg)) {
        if (!have_header) {
          if (!msg.has_header()) {
            protocol = absl::InternalError("Get stream started without a header");
            ctx.TryCancel();
            break;
          }
          header = msg.header();
          have_header = true;
          if (header.total_bytes() > kMaxGetBytes) {
            protocol = absl::ResourceExhaustedError(
                fmt::format("Get of {} bytes exceeds the client limit", header.total_bytes()));
            ctx.TryCancel();
            break;
          }
          out.data.reserve(header.total_bytes());
          if (header.in_shared_memory()) {
            protocol = copy_from_shm(header, &shm_crc);
            if (!protocol.ok()) {
              ctx.TryCancel();
              break;
            }
          }
        }
        if (header.in_shared_memory() && !msg.data().empty()) {
          protocol = absl::DataLossError("Get data came both in shared memory and streamed");
          ctx.TryCancel();
          break;
        }
        if (out.data.size() + msg.data().size() > header.total_bytes()) {
          protocol = absl::DataLossError("Get stream carried more bytes than its header announced");
          ctx.TryCancel();
          break;
        }
        out.data.insert(out.data.end(), msg.data().begin(), msg.data().end());
      }
      s->bytes_received = out.data.size();
      absl::Status st = internal::FromGrpc(reader->Finish());
      if (!protocol.ok()) return protocol;
      if (!st.ok()) return st;
      if (!have_header) return absl::InternalError("Get stream ended without a header");
      return accept(header, header.in_shared_memory()
                                ? shm_crc
                                : Crc32c(out.data.data(), out.data.size()));
    });
  };
  KVTIER_RETURN_IF_ERROR(impl_->WithShmFallback(&shm, get_call));
  return out;
}

namespace {
template <typename Req>
void AddKeys(Req* req, absl::Span<const ChunkKey> keys) {
  for (const auto& k : keys) req->add_keys(KeyBytes(k));
}
}  // namespace

absl::StatusOr<uint32_t> Client::Delete(const std::string& ns, absl::Span<const ChunkKey> keys,
                                        const CallOptions& call) {
  v1::DeleteRequest req;
  req.set_namespace_(ns);
  AddKeys(&req, keys);
  v1::DeleteResponse resp;
  KVTIER_RETURN_IF_ERROR(impl_->Call(call, [&](Clock::time_point d, CallStats* s) {
    grpc::ClientContext ctx;
    impl_->Prepare(&ctx, d);
    s->bytes_sent = req.ByteSizeLong();
    return internal::FromGrpc(impl_->stub->Delete(&ctx, req, &resp));
  }));
  return resp.deleted();
}

absl::StatusOr<uint32_t> Client::Pin(const std::string& ns, absl::Span<const ChunkKey> keys,
                                     const CallOptions& call) {
  v1::PinRequest req;
  req.set_namespace_(ns);
  AddKeys(&req, keys);
  v1::PinResponse resp;
  KVTIER_RETURN_IF_ERROR(impl_->Call(call, [&](Clock::time_point d, CallStats* s) {
    grpc::ClientContext ctx;
    impl_->Prepare(&ctx, d);
    s->bytes_sent = req.ByteSizeLong();
    return internal::FromGrpc(impl_->stub->Pin(&ctx, req, &resp));
  }));
  return resp.pinned();
}

absl::StatusOr<uint32_t> Client::Unpin(const std::string& ns, absl::Span<const ChunkKey> keys,
                                       uint64_t lease_id, const CallOptions& call) {
  v1::UnpinRequest req;
  req.set_namespace_(ns);
  AddKeys(&req, keys);
  req.set_lease_id(lease_id);
  v1::UnpinResponse resp;
  KVTIER_RETURN_IF_ERROR(impl_->Call(call, [&](Clock::time_point d, CallStats* s) {
    grpc::ClientContext ctx;
    impl_->Prepare(&ctx, d);
    s->bytes_sent = req.ByteSizeLong();
    return internal::FromGrpc(impl_->stub->Unpin(&ctx, req, &resp));
  }));
  return resp.unpinned();
}

absl::StatusOr<ServerStats> Client::Stats(const CallOptions& call) {
  v1::StatsRequest req;
  v1::StatsResponse resp;
  KVTIER_RETURN_IF_ERROR(impl_->Call(call, [&](Clock::time_point d, CallStats* s) {
    grpc::ClientContext ctx;
    impl_->Prepare(&ctx, d);
    auto st = internal::FromGrpc(impl_->stub->Stats(&ctx, req, &resp));
    s->bytes_received = resp.ByteSizeLong();
    return st;
  }));
  return internal::FromProto(resp);
}

absl::StatusOr<bool> Client::Healthy(const CallOptions& call) {
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  KVTIER_RETURN_IF_ERROR(impl_->Call(call, [&](Clock::time_point d, CallStats*) {
    grpc::ClientContext ctx;
    impl_->Prepare(&ctx, d);
    return internal::FromGrpc(impl_->health->Check(&ctx, req, &resp));
  }));
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

// ---- Async -------------------------------------------------------------------------------------

std::future<absl::StatusOr<LookupResult>> Client::LookupAsync(std::string ns,
                                                              std::vector<ChunkKey> keys,
                                                              uint32_t lease_ms,
                                                              CallOptions call) {
  return std::async(std::launch::async,
                    [this, ns = std::move(ns), keys = std::move(keys), lease_ms, call] {
                      return Lookup(ns, keys, lease_ms, call);
                    });
}

std::future<absl::StatusOr<PutResult>> Client::PutAsync(std::string ns, ChunkKey key,
                                                        absl::Span<const uint8_t> data,
                                                        PutOptions put, CallOptions call) {
  return std::async(std::launch::async, [this, ns = std::move(ns), key, data, put, call] {
    return Put(ns, key, data, put, call);
  });
}

std::future<absl::StatusOr<GetResult>> Client::GetAsync(std::string ns, ChunkKey key,
                                                        GetOptions get, CallOptions call) {
  return std::async(std::launch::async, [this, ns = std::move(ns), key, get, call] {
    return Get(ns, key, get, call);
  });
}

// ---- Paged -------------------------------------------------------------------------------------

absl::Status Client::GetIntoPaged(const std::string& ns, const ChunkKey& key,
                                  const kernels::PagedKvCache& cache,
                                  const kernels::PagedRun& run, const CallOptions& call) {
  // Check the target before spending a fetch on it.
  KVTIER_ASSIGN_OR_RETURN(kernels::DecodeTarget target, kernels::PagedDecodeTarget(cache, run));
  GetOptions get;
  get.format = DataFormat::kPayload;
  KVTIER_ASSIGN_OR_RETURN(GetResult got, Get(ns, key, get, call));
  KVTIER_ASSIGN_OR_RETURN(kernels::PayloadInfo info, kernels::InspectPayload(got.data));
  if (info.layout != cache.layout) {
    return absl::InvalidArgumentError(fmt::format(
        "chunk layout {} differs from the paged cache's {}", info.layout.DebugString(),
        cache.layout.DebugString()));
  }
  if (info.num_tokens != run.num_tokens) {
    return absl::InvalidArgumentError(fmt::format(
        "chunk holds {} tokens but the paged run has {}", info.num_tokens, run.num_tokens));
  }
  return kernels::Decode(got.data, target);
}

absl::StatusOr<PutResult> Client::PutFromPaged(const std::string& ns, const ChunkKey& key,
                                               const kernels::PagedKvCache& cache,
                                               const kernels::PagedRun& run,
                                               const PutOptions& put, const CallOptions& call) {
  KVTIER_RETURN_IF_ERROR(cache.Validate());
  std::vector<uint8_t> chunk(cache.layout.ChunkBytes(run.num_tokens));
  // Device caches are gathered on the GPU and copied to the host once.
  KVTIER_RETURN_IF_ERROR(
      kernels::GatherChunksToHost(cache, run, run.num_tokens, chunk.data()));
  PutOptions p = put;
  p.format = DataFormat::kTensor;
  p.num_tokens = run.num_tokens;
  return Put(ns, key, chunk, p, call);
}

ClientTotals Client::Totals() const {
  ClientTotals t;
  t.calls = impl_->calls.load();
  t.failed_calls = impl_->failed_calls.load();
  t.retries = impl_->retries.load();
  t.bytes_sent = impl_->bytes_sent.load();
  t.bytes_received = impl_->bytes_received.load();
  return t;
}

}  // namespace kvtier::client
