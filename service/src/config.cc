#include "kvtier/service/config.h"

#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include <toml++/toml.h>

#include "absl/strings/str_cat.h"

namespace kvtier::service {

std::vector<ConfigField> ConfigFields(DaemonOptions* o) {
  ServerOptions& s = o->server;
  MetricsOptions& m = o->metrics;
  ServiceOptions& v = o->service;
  storage::TierManagerOptions& t = o->storage;
  return {
      {"server.unix_socket", "Unix socket path for gRPC (empty disables)", &s.unix_socket},
      {"server.tcp_address",
       "TCP host:port for gRPC (empty disables; port 0 = any); non-loopback needs TLS + token",
       &s.tcp_address},
      {"server.port_file", "File to write the bound TCP port to (empty = none)", &s.port_file},
      {"server.tls_cert_file", "PEM certificate chain for TLS on TCP", &s.tls_cert_file},
      {"server.tls_key_file", "PEM private key for TLS on TCP", &s.tls_key_file},
      {"server.token_file",
       "File whose first line is the token calls must carry (authorization: Bearer <token>)",
       &s.token_file},
      {"server.max_message_bytes", "Largest gRPC message accepted (bytes)", &s.max_message_bytes},
      {"server.max_value_bytes", "Largest value one Put may carry (bytes)", &s.max_value_bytes},
      {"server.max_buffered_put_bytes",
       "Bytes all Puts in progress may buffer together (bytes)", &s.max_buffered_put_bytes},
      {"server.stream_message_bytes", "Data bytes per Get response message (bytes)",
       &s.stream_message_bytes},
      {"server.max_keys_per_request", "Most keys in one Lookup/Delete/Pin/Unpin",
       &s.max_keys_per_request},
      {"server.max_concurrent_streams", "Concurrent calls per connection",
       &s.max_concurrent_streams},
      {"server.max_inflight_calls", "Calls executing at once (beyond: RESOURCE_EXHAUSTED)",
       &s.max_inflight_calls},
      {"server.max_connections",
       "Open connections on the Unix socket and TCP, TLS included (beyond: closed at once)",
       &s.max_connections},
      {"server.shared_memory",
       "Offer same-node shared memory for Put/Get data on <unix_socket>.shm",
       &s.shared_memory},
      {"server.shared_memory_max_region_bytes", "Largest shared memory region a client may "
       "register (bytes)", &s.shared_memory_max_region_bytes},
      {"server.shared_memory_max_regions", "Shared memory regions registered at once",
       &s.shared_memory_max_regions},
      {"server.shared_memory_max_call_connections",
       "Shared memory call-channel connections (one thread each) open at once",
       &s.shared_memory_max_call_connections},
      {"server.max_threads", "gRPC worker threads (0 = max_inflight_calls + 8)", &s.max_threads},
      {"server.max_connection_idle_s", "Close connections idle this long (seconds)",
       &s.max_connection_idle_s},
      {"server.drain_timeout_s", "On SIGTERM, time in-flight calls get to finish (seconds)",
       &s.drain_timeout_s},
      {"metrics.address", "Prometheus /metrics host:port (empty disables; port 0 = any)",
       &m.address},
      {"metrics.port_file", "File to write the bound metrics port to (empty = none)",
       &m.port_file},
      {"logging.level", "debug, info, warning or error", &o->logging.level},
      {"service.data_dir", "Directory for the socket, RocksDB and namespace metadata",
       &v.data_dir},
      {"service.default_tokens_per_chunk", "tokens_per_chunk of namespaces created with 0",
       &v.default_tokens_per_chunk},
      {"service.max_namespaces", "Most namespaces", &v.max_namespaces},
      {"service.gpu_tier", "GPU tier: auto (when a GPU is visible), on (required) or off",
       &v.gpu_tier},
      {"service.gpu_tier_bytes", "GPU tier size when enabled by auto/on (bytes)",
       &v.gpu_tier_bytes},
      {"service.disk_open_timeout_s",
       "While another process holds the RocksDB lock, retry opening this long, NOT_SERVING "
       "(seconds; 0 = fail at once)",
       &v.disk_open_timeout_s},
      {"service.codec_device",
       "Where ingest encodes / fetch decodes: auto (GPU when visible), gpu (required) or cpu",
       &v.codec_device},
      {"service.gpu_codec_slots", "Chunks encoded or decoded on the GPU at once",
       &v.gpu_codec_slots},
      {"storage.policy", "Eviction policy: lru, prefix_lru or s3fifo", &t.policy},
      {"storage.max_chunk_bytes", "Largest payload storage accepts (bytes)", &t.max_chunk_bytes},
      {"storage.default_lease_ms", "Lease length when a Lookup gives none (ms)",
       &t.default_lease_ms},
      {"storage.max_lease_ms", "Longest lease (ms)", &t.max_lease_ms},
      {"storage.demote_high_watermark", "Background demotion starts above this fill (0-1)",
       &t.demote_high_watermark},
      {"storage.demote_low_watermark", "Background demotion stops below this fill (0-1)",
       &t.demote_low_watermark},
      {"storage.background_threads", "Threads for demotion, promotion, lease expiry",
       &t.background_threads},
      {"storage.promote_on_hit", "Copy chunks hit on a lower tier up to the fastest memory tier",
       &t.promote_on_hit},
      {"storage.demote_on_evict", "Write memory-tier victims to the next tier down",
       &t.demote_on_evict},
      {"storage.gpu.capacity_bytes",
       "GPU tier size (bytes; 0 = decided by service.gpu_tier)", &t.gpu.capacity_bytes},
      {"storage.gpu.device", "CUDA device ordinal of the GPU tier", &t.gpu.device},
      {"storage.gpu.slab_bytes", "GPU tier allocation unit (bytes)", &t.gpu.slab_bytes},
      {"storage.host.capacity_bytes", "Host tier size (bytes; 0 disables)",
       &t.host.capacity_bytes},
      {"storage.host.pin_memory", "Page-lock the host arena when CUDA is built in",
       &t.host.pin_memory},
      {"storage.disk.path", "RocksDB directory (default <data_dir>/rocksdb)", &t.disk.path},
      {"storage.disk.capacity_bytes", "Payload bytes the disk tier may hold (bytes)",
       &t.disk.capacity_bytes},
      {"storage.disk.sync_writes", "fsync the RocksDB WAL on every write", &t.disk.sync_writes},
      {"storage.disk.enable_blob_files", "Store large values in RocksDB blob files",
       &t.disk.enable_blob_files},
      {"storage.disk.write_buffer_bytes", "RocksDB memtable size (bytes)",
       &t.disk.write_buffer_bytes},
      {"storage.disk.block_cache_bytes", "RocksDB block cache (bytes)",
       &t.disk.block_cache_bytes},
      {"storage.disk.max_background_jobs", "RocksDB flush/compaction threads",
       &t.disk.max_background_jobs},
  };
}

namespace {

template <typename T>
absl::Status SetInteger(const toml::node& node, const std::string& key, T* out) {
  auto v = node.value<int64_t>();
  if (!v) return absl::InvalidArgumentError(absl::StrCat(key, ": expected an integer"));
  if (*v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
      (std::numeric_limits<T>::max() < static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) &&
       *v > static_cast<int64_t>(std::numeric_limits<T>::max()))) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": value out of range"));
  }
  *out = static_cast<T>(*v);
  return absl::OkStatus();
}

absl::Status Assign(const ConfigField& f, const toml::node& node) {
  const std::string& key = f.name;
  return std::visit(
      [&](auto* target) -> absl::Status {
        using T = std::remove_pointer_t<decltype(target)>;
        if constexpr (std::is_same_v<T, std::string>) {
          auto v = node.value<std::string>();
          if (!v || !node.is_string()) {
            return absl::InvalidArgumentError(absl::StrCat(key, ": expected a string"));
          }
          *target = *v;
          return absl::OkStatus();
        } else if constexpr (std::is_same_v<T, bool>) {
          if (!node.is_boolean()) {
            return absl::InvalidArgumentError(absl::StrCat(key, ": expected true or false"));
          }
          *target = *node.value<bool>();
          return absl::OkStatus();
        } else if constexpr (std::is_same_v<T, double>) {
          if (!node.is_number()) {
            return absl::InvalidArgumentError(absl::StrCat(key, ": expected a number"));
          }
          *target = *node.value<double>();
          return absl::OkStatus();
        } else {
          if (!node.is_integer()) {
            return absl::InvalidArgumentError(absl::StrCat(key, ": expected an integer"));
          }
          return SetInteger(node, key, target);
        }
      },
      f.target);
}

absl::Status Walk(const toml::table& table, const std::string& prefix,
                  const std::map<std::string, const ConfigField*>& fields) {
  for (const auto& [k, node] : table) {
    std::string name = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const toml::table* sub = node.as_table()) {
      absl::Status s = Walk(*sub, name, fields);
      if (!s.ok()) return s;
      continue;
    }
    auto it = fields.find(name);
    if (it == fields.end()) {
      if (name == "server.token") {
        return absl::InvalidArgumentError(
            "server.token is not accepted in the config file; use server.token_file or the "
            "KVTIER_TOKEN environment variable");
      }
      return absl::InvalidArgumentError(absl::StrCat("unknown config key '", name, "'"));
    }
    absl::Status s = Assign(*it->second, node);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ApplyConfigText(const std::string& toml_text, const std::string& source_name,
                             DaemonOptions* options) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << source_name << ": " << e.description() << " at " << e.source().begin;
    return absl::InvalidArgumentError(msg.str());
  }
  std::vector<ConfigField> fields = ConfigFields(options);
  std::map<std::string, const ConfigField*> by_name;
  for (const ConfigField& f : fields) by_name[f.name] = &f;
  absl::Status s = Walk(root, "", by_name);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(source_name, ": ", s.message()));
  return absl::OkStatus();
}

absl::Status ApplyConfigFile(const std::string& path, DaemonOptions* options) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read config file ", path));
  std::stringstream buf;
  buf << in.rdbuf();
  return ApplyConfigText(buf.str(), path, options);
}

}  // namespace kvtier::service
