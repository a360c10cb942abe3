// The kvtier client SDK: talks to a kvtierd daemon over gRPC (Unix socket or TCP, optionally TLS,
// optionally a bearer token) and converts to and from kvtier's domain types.
//
// Every call has a deadline (CallOptions::deadline, else ClientOptions::default_deadline) that
// covers all of its attempts; calls failing with UNAVAILABLE are retried with exponential backoff
// (ClientOptions::retry), others are returned at once. Every call can report its statistics
// (latency, bytes, retries) through CallOptions::stats; Client::Totals() sums them.
//
// Thread-safety: a Client is thread-safe; share one per process (it multiplexes one channel).
// Async calls run on their own thread each and return a std::future; the spans they take must stay
// valid until the future is ready.
#ifndef KVTIER_CLIENT_CLIENT_H_
#define KVTIER_CLIENT_CLIENT_H_

#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvtier/client/options.h"
#include "kvtier/client/types.h"
#include "kvtier/common/chunk_key.h"
#include "kvtier/kernels/paged.h"

namespace kvtier::client {

// Running sums over every call a Client made (Totals()).
struct ClientTotals {
  uint64_t calls = 0;
  uint64_t failed_calls = 0;
  uint64_t retries = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
};

class Client {
 public:
  // Opens a channel to options.target and waits (up to options.connect_timeout) until it is
  // ready. Errors: InvalidArgument (bad options), Unavailable (nothing answering: is kvtierd
  // running and is the socket path right?).
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const ClientOptions& options);

  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const ClientOptions& options() const;

  // ---- Namespaces ----
  // Idempotent: an identical namespace that exists is returned as is; different settings under
  // the same name are AlreadyExists. Returns the namespace as stored (defaults filled in).
  absl::StatusOr<NamespaceSpec> CreateNamespace(const NamespaceSpec& spec,
                                                const CallOptions& call = {});
  absl::StatusOr<NamespaceSpec> GetNamespace(const std::string& name, const CallOptions& call = {});
  absl::StatusOr<std::vector<NamespaceSpec>> ListNamespaces(const CallOptions& call = {});

  // ---- Keys ----
  // Chained keys of `tokens` under `ns` (its salt and tokens_per_chunk, which must be resolved,
  // i.e. non-zero as returned by CreateNamespace/GetNamespace). Full chunks only unless
  // include_partial_tail. Pure; needs no daemon.
  static std::vector<ChunkKey> ComputeKeys(const NamespaceSpec& ns,
                                           absl::Span<const uint32_t> tokens,
                                           bool include_partial_tail = false);

  // ---- Data ----
  // Longest cached prefix of `keys`; with lease_ms > 0 the hits stay unevictable that long.
  absl::StatusOr<LookupResult> Lookup(const std::string& ns, absl::Span<const ChunkKey> keys,
                                      uint32_t lease_ms = 0, const CallOptions& call = {});
  // Stores one chunk (streamed in put_message_bytes messages with a CRC-32C; visible only once
  // complete). For DataFormat::kTensor, `data` is layout.ChunkBytes(num_tokens) bytes.
  absl::StatusOr<PutResult> Put(const std::string& ns, const ChunkKey& key,
                                absl::Span<const uint8_t> data, const PutOptions& put,
                                const CallOptions& call = {});
  // Fetches one chunk; NotFound when it is not cached. The checksum is verified before returning.
  absl::StatusOr<GetResult> Get(const std::string& ns, const ChunkKey& key,
                                const GetOptions& get = {}, const CallOptions& call = {});
  // Deletes keys; returns how many existed.
  absl::StatusOr<uint32_t> Delete(const std::string& ns, absl::Span<const ChunkKey> keys,
                                  const CallOptions& call = {});
  absl::StatusOr<uint32_t> Pin(const std::string& ns, absl::Span<const ChunkKey> keys,
                               const CallOptions& call = {});
  absl::StatusOr<uint32_t> Unpin(const std::string& ns, absl::Span<const ChunkKey> keys,
                                 uint64_t lease_id = 0, const CallOptions& call = {});
  absl::StatusOr<ServerStats> Stats(const CallOptions& call = {});
  // grpc.health.v1 status of the daemon: true when SERVING.
  absl::StatusOr<bool> Healthy(const CallOptions& call = {});

  // ---- Async (one thread per call; see the file comment) ----
  std::future<absl::StatusOr<LookupResult>> LookupAsync(std::string ns,
                                                        std::vector<ChunkKey> keys,
                                                        uint32_t lease_ms = 0,
                                                        CallOptions call = {});
  std::future<absl::StatusOr<PutResult>> PutAsync(std::string ns, ChunkKey key,
                                                  absl::Span<const uint8_t> data, PutOptions put,
                                                  CallOptions call = {});
  std::future<absl::StatusOr<GetResult>> GetAsync(std::string ns, ChunkKey key,
                                                  GetOptions get = {}, CallOptions call = {});

  // ---- Paged engine buffers ----
  // Fetches a chunk as its compressed payload and decodes it straight into the engine's pages
  // (kernels::PagedDecodeTarget + kernels::Decode: no intermediate tensor buffer; device caches
  // are decoded by the GPU kernels). run.num_tokens must equal the chunk's token count.
  absl::Status GetIntoPaged(const std::string& ns, const ChunkKey& key,
                            const kernels::PagedKvCache& cache, const kernels::PagedRun& run,
                            const CallOptions& call = {});
  // Gathers run's tokens out of a paged cache into one canonical chunk (on the GPU for a device
  // cache, then one device-to-host copy: kernels::GatherChunksToHost) and Puts it.
  absl::StatusOr<PutResult> PutFromPaged(const std::string& ns, const ChunkKey& key,
                                         const kernels::PagedKvCache& cache,
                                         const kernels::PagedRun& run, const PutOptions& put,
                                         const CallOptions& call = {});

  ClientTotals Totals() const;

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvtier::client

#endif  // KVTIER_CLIENT_CLIENT_H_
