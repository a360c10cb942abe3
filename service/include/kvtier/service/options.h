// kvtierd's options: one struct per component, every field with its meaning, unit and default.
// The defaults run a safe, self-contained daemon: gRPC on a Unix socket under ./data and on
// 127.0.0.1, metrics on 127.0.0.1, host tier plus RocksDB under ./data, a GPU tier when a GPU is
// visible. docs/OPERATIONS.md ("Configuration reference") lists the same fields with their config
// file keys and flags; keep the two in step.
//
// The options are read only in service/src/main.cc (config file, then flags); libraries receive
// them as values. Validate() is called before anything is opened.
//
// Thread-safety: plain values.
#ifndef KVTIER_SERVICE_OPTIONS_H_
#define KVTIER_SERVICE_OPTIONS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kvtier/storage/options.h"

namespace kvtier::service {

// The gRPC listeners, their security and their limits.
struct ServerOptions {
  // Unix-domain socket path; empty disables it. The socket file is created mode 0600.
  std::string unix_socket = "./data/kvtierd.sock";
  // TCP "host:port"; empty disables TCP. Port 0 picks a free port (logged, and written to
  // `port_file` when set). A non-loopback host requires both TLS and a token (see Validate).
  std::string tcp_address = "127.0.0.1:7470";
  // Where to write the TCP port actually bound (for tests and scripts); empty = don't.
  std::string port_file;

  // TLS for the TCP listener (PEM files). Both or neither.
  std::string tls_cert_file;
  std::string tls_key_file;
  // File holding the token (first line; keep it mode 0600). Read by main into `token`.
  std::string token_file;
  // Shared secret every call must carry as "authorization: Bearer <token>". Empty = no token.
  // Set from `token_file` (preferred; mode 0600) or the KVTIER_TOKEN environment variable by main.
  // Never logged.
  std::string token;

  // Largest gRPC message accepted, in bytes (8 MiB). Put/Get stream ~1 MiB messages.
  uint32_t max_message_bytes = 8u << 20;
  // Largest value one Put may carry (tensor or payload bytes), in bytes (64 MiB).
  uint64_t max_value_bytes = 64ull << 20;
  // Bytes all Puts in progress may buffer together, in bytes (1 GiB); a Put that would pass it
  // fails RESOURCE_EXHAUSTED before reading its data. Bounds memory under a flood of Puts.
  uint64_t max_buffered_put_bytes = 1ull << 30;
  // Bytes of data per Get response message (1 MiB); a tail shorter than 1/16 of it joins the
  // previous message.
  uint32_t stream_message_bytes = 1u << 20;
  // Largest number of keys in one Lookup / Delete / Pin / Unpin (65536).
  uint32_t max_keys_per_request = 65536;
  // Concurrent streams (calls) per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS) (64).
  uint32_t max_concurrent_streams = 64;
  // Calls executing at once across all connections; beyond it calls fail RESOURCE_EXHAUSTED (64).
  uint32_t max_inflight_calls = 64;
  // Open client connections on the Unix socket and TCP, TLS included (256); beyond it a new
  // connection is closed at once (the client sees UNAVAILABLE and retries). gRPC 1.51 accepts TLS
  // connections itself: one beyond the cap is shut down within about 100 ms of its accept.
  uint32_t max_connections = 256;
  // Same-node shared memory (docs/API.md, "Shared memory"): clients on this node may register a
  // sealed memfd on the SOCK_SEQPACKET socket <unix_socket>.shm and name ranges of it in Put and
  // Get, so value bytes skip the gRPC socket (true). Needs unix_socket.
  bool shared_memory = true;
  // Largest region one client may register, in bytes (16 GiB). Mapping costs address space only;
  // the pages belong to the client.
  uint64_t shared_memory_max_region_bytes = 16ull << 30;
  // Regions registered at once (256); beyond it a registration is refused (the client then uses
  // the socket).
  uint32_t shared_memory_max_regions = 256;
  // Call-channel connections open at once (1024), each served by a thread of its own: clients
  // open one per thread that calls concurrently. Beyond it a client's calls go through gRPC.
  uint32_t shared_memory_max_call_connections = 1024;
  // gRPC worker threads (the sync server's pool) (max_inflight_calls + 8 when 0).
  uint32_t max_threads = 0;
  // Connections idle this long are closed, in seconds (300). Bounds the cost of idle connections.
  uint32_t max_connection_idle_s = 300;
  // Graceful drain on SIGTERM: in-flight calls get this long to finish, in seconds (20).
  uint32_t drain_timeout_s = 20;

  absl::Status Validate() const;
};

// Prometheus exposition (prometheus-cpp Exposer).
struct MetricsOptions {
  // "host:port" of the /metrics HTTP endpoint; empty disables it. Port 0 picks a free port.
  // The endpoint has no authentication: keep it on loopback unless the network is trusted.
  std::string address = "127.0.0.1:7471";
  // Where to write the metrics port actually bound; empty = don't.
  std::string port_file;
  absl::Status Validate() const;
};

struct LoggingOptions {
  // "debug", "info", "warning" or "error".
  std::string level = "info";
  absl::Status Validate() const;
};

// How the daemon uses storage and codecs.
struct ServiceOptions {
  // Directory for the Unix socket, RocksDB and namespace metadata ("./data").
  std::string data_dir = "./data";
  // tokens_per_chunk of a namespace created with 0 (256).
  uint32_t default_tokens_per_chunk = 256;
  // Largest number of namespaces (1024).
  uint32_t max_namespaces = 1024;
  // GPU tier: "auto" (a GPU tier of gpu_tier_bytes when the build has CUDA and a device is
  // visible), "on" (required; start fails without a GPU) or "off".
  std::string gpu_tier = "auto";
  // Size of the GPU tier when enabled, in bytes (4 GiB).
  uint64_t gpu_tier_bytes = 4ull << 30;
  // While another process holds the disk tier's RocksDB lock (a previous kvtierd of a rolling
  // restart still draining), keep retrying this long, NOT_SERVING, before giving up, in seconds
  // (60). 0 = fail at once. Other disk tier open errors fail the start at once.
  uint32_t disk_open_timeout_s = 60;
  // Where ingest encodes and tensor fetches decode: "auto" (the GPU kernels, staged through
  // device memory, when the build has CUDA and a device is visible; the CPU otherwise), "gpu"
  // (required; start fails without a GPU) or "cpu". Either side writes the same payload bytes.
  std::string codec_device = "auto";
  // Chunks encoded or decoded on the GPU at once, each with its own staging buffer (2).
  uint32_t gpu_codec_slots = 2;
  absl::Status Validate() const;
};

// Everything kvtierd needs. storage.disk.path defaults to <data_dir>/rocksdb (see Finalize).
struct DaemonOptions {
  ServerOptions server;
  MetricsOptions metrics;
  LoggingOptions logging;
  ServiceOptions service;
  storage::TierManagerOptions storage;

  // Fills derived defaults: storage.disk.path = <data_dir>/rocksdb when empty.
  void Finalize();
  absl::Status Validate() const;
};

// True when `host_port`'s host is a loopback address (127.0.0.0/8, ::1, "localhost").
// `host_port` is "host:port" or "[v6]:port".
bool IsLoopbackAddress(const std::string& host_port);

}  // namespace kvtier::service

#endif  // KVTIER_SERVICE_OPTIONS_H_
