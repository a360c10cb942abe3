#include "kvtier/service/options.h"

#include <arpa/inet.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "kvtier/common/logging.h"
#include "kvtier/common/status.h"

namespace kvtier::service {
namespace {

// Splits "host:port" / "[v6]:port"; false when malformed.
bool SplitHostPort(const std::string& host_port, std::string* host, std::string* port) {
  if (!host_port.empty() && host_port[0] == '[') {
    size_t close = host_port.find(']');
    if (close == std::string::npos || close + 1 >= host_port.size() || host_port[close + 1] != ':')
      return false;
    *host = host_port.substr(1, close - 1);
    *port = host_port.substr(close + 2);
  } else {
    size_t colon = host_port.rfind(':');
    if (colon == std::string::npos) return false;
    *host = host_port.substr(0, colon);
    *port = host_port.substr(colon + 1);
    if (host->find(':') != std::string::npos) return false;  // bare IPv6 needs brackets
  }
  if (host->empty() || port->empty() || port->size() > 5) return false;
  for (char c : *port) {
    if (c < '0' || c > '9') return false;
  }
  return std::stoi(*port) <= 65535;
}

absl::Status CheckHostPort(const std::string& what, const std::string& value) {
  std::string host, port;
  if (!SplitHostPort(value, &host, &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected host:port or [ipv6]:port, got '", value, "'"));
  }
  return absl::OkStatus();
}

}  // namespace

bool IsLoopbackAddress(const std::string& host_port) {
  std::string host, port;
  if (!SplitHostPort(host_port, &host, &port)) return false;
  if (host == "localhost") return true;
  in_addr v4;
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    static const in6_addr kLoopback = IN6ADDR_LOOPBACK_INIT;
    return memcmp(&v6, &kLoopback, sizeof(v6)) == 0;
  }
  return false;  // names other than localhost may resolve anywhere
}

absl::Status ServerOptions::Validate() const {
  if (unix_socket.empty() && tcp_address.empty()) {
    return absl::InvalidArgumentError("server: neither unix_socket nor tcp_address is set");
  }
  if (unix_socket.size() >= 100) {  // sockaddr_un.sun_path is 108 bytes on Linux
    return absl::InvalidArgumentError(
        absl::StrCat("server.unix_socket: path longer than 99 bytes: ", unix_socket));
  }
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return absl::InvalidArgumentError("server: tls_cert_file and tls_key_file go together");
  }
  if (!tcp_address.empty()) {
    KVTIER_RETURN_IF_ERROR(CheckHostPort("server.tcp_address", tcp_address));
    if (!IsLoopbackAddress(tcp_address) && (tls_cert_file.empty() || token.empty())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "server.tcp_address ", tcp_address,
          " is not a loopback address: refusing to listen without both TLS (tls_cert_file, "
          "tls_key_file) and a token (token_file)"));
    }
  }
  if (max_message_bytes < (64u << 10) || max_message_bytes > (1u << 30)) {
    return absl::InvalidArgumentError("server.max_message_bytes must be in [64 KiB, 1 GiB]");
  }
  // A Get message carries up to stream_message_bytes + 1/16 (a short tail rides along) + header.
  if (stream_message_bytes < 4096 ||
      uint64_t{stream_message_bytes} * 17 / 16 + 4096 > max_message_bytes) {
    return absl::InvalidArgumentError(
        "server.stream_message_bytes must be >= 4096, and 17/16 of it plus 4 KiB must fit "
        "max_message_bytes");
  }
  if (max_value_bytes == 0) return absl::InvalidArgumentError("server.max_value_bytes is 0");
  if (max_keys_per_request == 0) {
    return absl::InvalidArgumentError("server.max_keys_per_request is 0");
  }
  if (max_concurrent_streams == 0 || max_inflight_calls == 0) {
    return absl::InvalidArgumentError(
        "server.max_concurrent_streams and server.max_inflight_calls must be > 0");
  }
  if (max_connections == 0) return absl::InvalidArgumentError("server.max_connections is 0");
  if (shared_memory && (shared_memory_max_regions == 0 || shared_memory_max_region_bytes == 0 ||
                        shared_memory_max_call_connections == 0)) {
    return absl::InvalidArgumentError(
        "server.shared_memory_max_regions, shared_memory_max_region_bytes and "
        "shared_memory_max_call_connections must be > 0 (or set server.shared_memory = false)");
  }
  return absl::OkStatus();
}

absl::Status MetricsOptions::Validate() const {
  if (address.empty()) return absl::OkStatus();
  return CheckHostPort("metrics.address", address);
}

absl::Status LoggingOptions::Validate() const {
  LogLevel l;
  return ParseLogLevel(level, &l);
}

absl::Status ServiceOptions::Validate() const {
  if (data_dir.empty()) return absl::InvalidArgumentError("service.data_dir is empty");
  if (default_tokens_per_chunk == 0 || default_tokens_per_chunk > 65536) {
    return absl::InvalidArgumentError("service.default_tokens_per_chunk must be in [1, 65536]");
  }
  if (max_namespaces == 0) return absl::InvalidArgumentError("service.max_namespaces is 0");
  if (gpu_tier != "auto" && gpu_tier != "on" && gpu_tier != "off") {
    return absl::InvalidArgumentError(
        absl::StrCat("service.gpu_tier must be auto, on or off, got '", gpu_tier, "'"));
  }
  if (codec_device != "auto" && codec_device != "gpu" && codec_device != "cpu") {
    return absl::InvalidArgumentError(absl::StrCat(
        "service.codec_device must be auto, gpu or cpu, got '", codec_device, "'"));
  }
  if (gpu_codec_slots == 0 || gpu_codec_slots > 64) {
    return absl::InvalidArgumentError("service.gpu_codec_slots must be in [1, 64]");
  }
  return absl::OkStatus();
}

void DaemonOptions::Finalize() {
  if (storage.disk.path.empty()) storage.disk.path = service.data_dir + "/rocksdb";
}

absl::Status DaemonOptions::Validate() const {
  KVTIER_RETURN_IF_ERROR(server.Validate());
  KVTIER_RETURN_IF_ERROR(metrics.Validate());
  KVTIER_RETURN_IF_ERROR(logging.Validate());
  KVTIER_RETURN_IF_ERROR(service.Validate());
  KVTIER_RETURN_IF_ERROR(storage.Validate());
  if (server.max_value_bytes > storage.max_chunk_bytes) {
    return absl::InvalidArgumentError(
        "server.max_value_bytes exceeds storage.max_chunk_bytes: such values could never be "
        "stored");
  }
  return absl::OkStatus();
}

}  // namespace kvtier::service
