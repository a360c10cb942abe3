#include "kvtier/service/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_posix.h>
#include <prometheus/exposer.h>
#include <prometheus/registry.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kvtier/common/logging.h"
#include "kvtier/common/shm_protocol.h"
#include "kvtier/common/status.h"
#include "kvtier/kernels/device.h"
#include "kvtier/kernels/gpu_stager.h"
#include "kvtier/storage/tier_manager.h"
#include "connection_limiter.h"
#include "health_service.h"
#include "kvtier_service.h"
#include "metrics.h"
#include "namespace_registry.h"
#include "shared_memory.h"

namespace kvtier::service {
namespace {

absl::Status MakeDirs(const std::string& path) {
  if (path.empty()) return absl::OkStatus();
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    cur = path.substr(0, pos);
    if (cur.empty()) continue;
    if (::mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create directory ", cur, ": ", strerror(errno)));
    }
  }
  return absl::OkStatus();
}

std::string DirName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::FailedPreconditionError(absl::StrCat("cannot read ", path));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WritePortFile(const std::string& path, int port) {
  if (path.empty()) return;
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << port << "\n";
  }
  ::rename(tmp.c_str(), path.c_str());
}

// The pid of another process holding a lock on RocksDB's LOCK file in `db_dir` (RocksDB takes an
// fcntl write lock on it while the database is open), -1 when the holder's pid is unknown (an
// open-file-description lock), 0 when nobody else holds it. Only called while this process holds
// no lock on that file: closing any descriptor of a file drops the process's fcntl locks on it.
pid_t DiskLockHolder(const std::string& db_dir) {
  const int fd = ::open((db_dir + "/LOCK").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  struct flock fl = {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  pid_t holder = 0;
  if (::fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK) holder = fl.l_pid > 0 ? fl.l_pid : -1;
  ::close(fd);
  return holder;
}

// True when SIGTERM or SIGINT is pending. kvtierd blocks both in every thread and waits for them
// only once started (main.cc), so a wait inside Start polls for them to stay stoppable.
bool StopSignalPending() {
  sigset_t pending;
  if (::sigpending(&pending) != 0) return false;
  return sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1;
}

}  // namespace

class Daemon::Impl {
 public:
  DaemonOptions options;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<ServiceMetrics> metrics;
  std::shared_ptr<StorageCollector> collector;
  std::unique_ptr<prometheus::Exposer> exposer;
  std::unique_ptr<NamespaceRegistry> namespaces;
  std::unique_ptr<KvTierService> service;
  std::unique_ptr<HealthService> health;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<ConnectionLimiter> limiter;  // accepts for the plaintext listeners, caps TLS
  std::unique_ptr<SharedMemoryRegistry> shm;   // same-node shared memory (server.shared_memory)
  std::shared_ptr<ConnectionCollector> connection_collector =
      std::make_shared<ConnectionCollector>();
  std::unique_ptr<kernels::GpuStager> gpu_codec;
  std::unique_ptr<storage::TierManager> tm;
  int tcp_port = 0;
  int metrics_port = 0;
  bool stopped = false;

  absl::Status Start();
  absl::Status StartMetrics();
  absl::Status StartGrpc();
  // Opens the storage engine; while another process holds the disk tier's lock, retries for up to
  // service.disk_open_timeout_s.
  absl::StatusOr<std::unique_ptr<storage::TierManager>> OpenStorage();
  void SetServing(bool serving);
  void Shutdown();
};

absl::Status Daemon::Impl::StartMetrics() {
  metrics = std::make_unique<ServiceMetrics>(*registry);
  collector = std::make_shared<StorageCollector>(metrics.get());
  if (options.metrics.address.empty()) return absl::OkStatus();
  try {
    exposer = std::make_unique<prometheus::Exposer>(options.metrics.address, /*num_threads=*/2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics: cannot listen on ", options.metrics.address, ": ", e.what()));
  }
  exposer->RegisterCollectable(registry);
  exposer->RegisterCollectable(collector);
  exposer->RegisterCollectable(connection_collector);
  std::vector<int> ports = exposer->GetListeningPorts();
  metrics_port = ports.empty() ? 0 : ports[0];
  WritePortFile(options.metrics.port_file, metrics_port);
  return absl::OkStatus();
}

absl::Status Daemon::Impl::StartGrpc() {
  const ServerOptions& so = options.server;
  service = std::make_unique<KvTierService>(so, options.service.default_tokens_per_chunk,
                                            /*registry=*/nullptr, metrics.get());
  // kvtier's own grpc.health.v1 (health_service.h): NOT_SERVING before the first call is accepted.
  // gRPC's built-in one would say SERVING from BuildAndStart until told otherwise.
  health = std::make_unique<HealthService>();
  grpc::EnableDefaultHealthCheckService(false);
  grpc::ServerBuilder builder;
  // Plaintext listeners (the Unix socket, TCP without TLS) are kvtierd's own: a ConnectionLimiter
  // accepts on them and hands each connection to gRPC, so server.max_connections holds. gRPC
  // accepts TLS connections itself (it can only be handed plaintext sockets).
  std::vector<int> plain_fds;
  auto close_plain = [&plain_fds] {
    for (int fd : plain_fds) ::close(fd);
    plain_fds.clear();
  };
  if (!so.unix_socket.empty()) {
    KVTIER_RETURN_IF_ERROR(MakeDirs(DirName(so.unix_socket)));
    struct stat st;
    if (::lstat(so.unix_socket.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        return absl::FailedPreconditionError(
            absl::StrCat(so.unix_socket, " exists and is not a socket"));
      }
      ::unlink(so.unix_socket.c_str());  // stale socket of a previous run
    }
    KVTIER_ASSIGN_OR_RETURN(const int fd, ListenUnix(so.unix_socket));
    plain_fds.push_back(fd);
    if (so.shared_memory) {
      SharedMemoryRegistry::Options shm_options;
      shm_options.socket_path = shm::SocketPathFor(so.unix_socket);
      shm_options.max_region_bytes = so.shared_memory_max_region_bytes;
      shm_options.max_regions = so.shared_memory_max_regions;
      shm_options.token = so.token;
      shm_options.max_call_connections = so.shared_memory_max_call_connections;
      KvTierService* svc = service.get();
      shm_options.on_call = [svc](const shm::Call& call, std::string* reply) {
        return svc->ServeSharedMemoryCall(call, reply);
      };
      auto started = SharedMemoryRegistry::Start(std::move(shm_options));
      if (!started.ok()) {
        close_plain();
        return started.status();
      }
      shm = std::move(*started);
      service->SetSharedMemory(shm.get());
      connection_collector->SetSharedMemory(shm.get());
    }
  }
  if (!so.tcp_address.empty()) {
    if (!so.tls_cert_file.empty()) {
      auto cert = ReadFile(so.tls_cert_file);
      auto key = ReadFile(so.tls_key_file);
      if (!cert.ok() || !key.ok()) {
        close_plain();
        return cert.ok() ? key.status() : cert.status();
      }
      grpc::SslServerCredentialsOptions ssl;
      ssl.pem_key_cert_pairs.push_back({*key, *cert});
      builder.AddListeningPort(so.tcp_address, grpc::SslServerCredentials(ssl), &tcp_port);
    } else {
      auto tcp = ListenTcp(so.tcp_address);
      if (!tcp.ok()) {
        close_plain();
        return tcp.status();
      }
      plain_fds.push_back(tcp->first);
      tcp_port = tcp->second;
    }
  }
  builder.SetMaxReceiveMessageSize(static_cast<int>(so.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(so.max_message_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             static_cast<int>(so.max_concurrent_streams));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                             static_cast<int>(so.max_connection_idle_s * 1000));
  // Large messages: a wide HTTP/2 stream window, large frames and large socket reads, so a 1 MiB
  // message crosses in a few writes instead of dozens of 16 KiB frames and window updates.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 20);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 4 << 20);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_WRITE_BUFFER_SIZE, 8 << 20);
  builder.AddChannelArgument(GRPC_ARG_TCP_READ_CHUNK_SIZE, 4 << 20);
  builder.AddChannelArgument(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 8 << 20);
  grpc::ResourceQuota quota("kvtierd");
  quota.SetMaxThreads(static_cast<int>(so.max_threads != 0 ? so.max_threads
                                                           : so.max_inflight_calls + 8));
  builder.SetResourceQuota(quota);
  builder.RegisterService(service.get());
  builder.RegisterService(health.get());
  server = builder.BuildAndStart();
  if (server == nullptr) {
    close_plain();
    return absl::UnavailableError(absl::StrCat("cannot listen on unix:", so.unix_socket, " / ",
                                               so.tcp_address, " (address in use?)"));
  }
  if (!so.tcp_address.empty() && tcp_port == 0) {
    close_plain();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", so.tcp_address));
  }
  // gRPC's own TLS listener: its connections count against the same cap (connection_limiter.h).
  const int tls_port = so.tls_cert_file.empty() ? 0 : tcp_port;
  if (!plain_fds.empty() || tls_port != 0) {
    grpc::Server* srv = server.get();
    KVTIER_ASSIGN_OR_RETURN(
        limiter, ConnectionLimiter::Start(
                     std::move(plain_fds), static_cast<int>(so.max_connections),
                     [srv](int fd) { grpc::AddInsecureChannelFromFd(srv, fd); }, tls_port));
    connection_collector->SetLimiter(limiter.get());
  }
  WritePortFile(so.port_file, tcp_port);
  SetServing(false);
  return absl::OkStatus();
}

void Daemon::Impl::SetServing(bool serving) {
  // Health says SERVING only after the metric does, and NOT_SERVING before it, so whoever sees
  // health SERVING also scrapes kvtier_serving 1.
  if (serving && metrics) metrics->SetServing(true);
  if (health) health->SetServing(serving);
  if (!serving && metrics) metrics->SetServing(false);
}

absl::StatusOr<std::unique_ptr<storage::TierManager>> Daemon::Impl::OpenStorage() {
  const std::string& db_dir = options.storage.disk.path;
  auto with_prefix = [](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat("storage: ", s.message()));
  };
  if (db_dir.empty()) {  // no disk tier: no lock to wait for
    absl::StatusOr<std::unique_ptr<storage::TierManager>> created =
        storage::TierManager::Create(options.storage);
    if (!created.ok()) return with_prefix(created.status());
    return created;
  }
  const uint32_t timeout_s = options.service.disk_open_timeout_s;
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::seconds(timeout_s);
  auto next_log = start;
  for (;;) {
    // While the lock is visibly held, don't even try: a failed open still builds the memory tiers.
    pid_t holder = DiskLockHolder(db_dir);
    absl::Status failure;
    if (holder == 0) {
      absl::StatusOr<std::unique_ptr<storage::TierManager>> created =
          storage::TierManager::Create(options.storage);
      if (created.ok()) return created;
      failure = created.status();
      // A lock failure is an I/O error (UNAVAILABLE) naming the LOCK file; the probe confirms it
      // unless the holder let go in the meantime.
      holder = DiskLockHolder(db_dir);
      const bool lock_error = failure.code() == absl::StatusCode::kUnavailable &&
                              absl::StrContains(failure.message(), "/LOCK");
      if (holder == 0 && !lock_error) return with_prefix(failure);
    }
    const std::string who = holder > 0 ? fmt::format("process {}", holder) : "another process";
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      return absl::UnavailableError(fmt::format(
          "storage: the disk tier {} is locked by {} (another kvtierd on the same data "
          "directory?) and stayed locked for service.disk_open_timeout_s = {} s; giving up{}",
          db_dir, who, timeout_s,
          failure.ok() ? "" : fmt::format(" (last error: {})", std::string(failure.message()))));
    }
    if (now >= next_log) {
      KVTIER_LOG(WARNING,
                 "the disk tier {} is locked by {} (a previous kvtierd still shutting down?); "
                 "NOT_SERVING, retrying for up to {} s more (service.disk_open_timeout_s = {})",
                 db_dir, who,
                 std::chrono::duration_cast<std::chrono::seconds>(deadline - now).count(),
                 timeout_s);
      next_log = now + std::chrono::seconds(5);
    }
    if (StopSignalPending()) {
      return absl::CancelledError(
          fmt::format("stop signal received while waiting for the disk tier lock on {}", db_dir));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

absl::Status Daemon::Impl::Start() {
  // GPU tier: when a GPU is present (and the build has CUDA), unless configured otherwise.
  const std::string& gpu = options.service.gpu_tier;
  const bool have_gpu = kernels::CudaBuilt() && kernels::CudaDeviceCount() > 0;
  if (gpu == "on" && !have_gpu) {
    return absl::FailedPreconditionError(
        "service.gpu_tier = on, but this build has no CUDA or no GPU is visible");
  }
  if (gpu == "off") {
    options.storage.gpu.capacity_bytes = 0;
  } else if (have_gpu && options.storage.gpu.capacity_bytes == 0) {
    options.storage.gpu.capacity_bytes = options.service.gpu_tier_bytes;
  }
  KVTIER_RETURN_IF_ERROR(options.Validate());
  // Codecs: the GPU kernels (staged through device memory) when asked or, on auto, when a GPU is
  // visible; the CPU reference otherwise. Both write the same payload bytes.
  const std::string& codec_device = options.service.codec_device;
  if (codec_device == "gpu" || (codec_device == "auto" && have_gpu)) {
    kernels::GpuStager::Options go;
    go.slots = static_cast<int>(options.service.gpu_codec_slots);
    go.max_tensor_bytes = options.server.max_value_bytes;
    auto stager = kernels::GpuStager::Create(go);
    if (!stager.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("service.codec_device = ", codec_device, ": ", stager.status().message()));
    }
    gpu_codec = std::move(*stager);
  }
  KVTIER_RETURN_IF_ERROR(MakeDirs(options.service.data_dir));
  KVTIER_RETURN_IF_ERROR(StartMetrics());
  KVTIER_RETURN_IF_ERROR(StartGrpc());
  service->SetGpuCodec(gpu_codec.get());
  KVTIER_LOG(INFO, "kvtierd listening: unix:{} tcp:{} (port {}, TLS {}, token {}); metrics {}",
             options.server.unix_socket.empty() ? "-" : options.server.unix_socket,
             options.server.tcp_address.empty() ? "-" : options.server.tcp_address, tcp_port,
             options.server.tls_cert_file.empty() ? "off" : "on",
             options.server.token.empty() ? "off" : "on",  // never the token itself
             options.metrics.address.empty()
                 ? std::string("off")
                 : fmt::format("http://127.0.0.1:{}/metrics (bound {})", metrics_port,
                               options.metrics.address));

  // The disk tier opens (and the index is rebuilt) while health says NOT_SERVING.
  const auto t0 = std::chrono::steady_clock::now();
  KVTIER_ASSIGN_OR_RETURN(tm, OpenStorage());
  // The namespace registry is read only now: until the disk tier's lock was ours, another kvtierd
  // on this data directory (a previous one still draining) could still be writing it.
  KVTIER_ASSIGN_OR_RETURN(namespaces,
                          NamespaceRegistry::Open(options.service.data_dir + "/namespaces.toml",
                                                  options.service.max_namespaces));
  service->SetRegistry(namespaces.get());
  storage::StorageStats stats = tm->Stats();
  std::array<bool, storage::kNumTiers> enabled{};
  for (int i = 0; i < storage::kNumTiers; ++i) enabled[i] = stats.tiers[i].enabled;
  metrics->SetEnabledTiers(enabled);
  collector->SetTierManager(tm.get());
  service->SetTierManager(tm.get());
  SetServing(true);
  KVTIER_LOG(INFO,
             "serving: tiers gpu={} host={} disk={} ({}), {} chunks indexed, {} namespaces, "
             "codecs on the {}, storage opened in {:.3f} s",
             enabled[0] ? fmt::format("{} B", stats.tiers[0].capacity_bytes) : "off",
             enabled[1] ? fmt::format("{} B", stats.tiers[1].capacity_bytes) : "off",
             enabled[2] ? fmt::format("{} B", stats.tiers[2].capacity_bytes) : "off",
             options.storage.disk.path, stats.indexed_chunks, namespaces->size(),
             gpu_codec ? "GPU" : "CPU", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return absl::OkStatus();
}

void Daemon::Impl::Shutdown() {
  if (stopped) return;
  stopped = true;
  KVTIER_LOG(INFO, "draining: health NOT_SERVING, new calls refused, {} in flight",
             service ? service->inflight() : 0);
  SetServing(false);
  // Ends the Watch streams (after their NOT_SERVING), so server->Shutdown never waits on them.
  if (health) health->Shutdown();
  if (service) service->StartDraining();
  // No new connections from here on (the listeners close); open ones drain below.
  connection_collector->SetLimiter(nullptr);
  if (limiter) limiter->Stop();
  if (server) {
    server->Shutdown(std::chrono::system_clock::now() +
                     std::chrono::seconds(options.server.drain_timeout_s));
    server->Wait();
  }
  // No call runs any more: regions can go (their clients see the registration socket close).
  connection_collector->SetSharedMemory(nullptr);
  shm.reset();
  if (service) service->SetTierManager(nullptr);
  if (collector) collector->SetTierManager(nullptr);
  if (tm) {
    tm->WaitForBackgroundWork();
    tm.reset();  // closes the disk tier (RocksDB) cleanly
    KVTIER_LOG(INFO, "storage closed");
  }
  if (!options.server.unix_socket.empty()) ::unlink(options.server.unix_socket.c_str());
  exposer.reset();
}

Daemon::Daemon(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Daemon::~Daemon() { Shutdown(); }
void Daemon::Shutdown() { impl_->Shutdown(); }
int Daemon::tcp_port() const { return impl_->tcp_port; }
int Daemon::metrics_port() const { return impl_->metrics_port; }
const DaemonOptions& Daemon::options() const { return impl_->options; }

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(DaemonOptions options) {
  options.Finalize();
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  absl::Status s = impl->Start();
  if (!s.ok()) {
    impl->Shutdown();
    return s;
  }
  return std::unique_ptr<Daemon>(new Daemon(std::move(impl)));
}

}  // namespace kvtier::service
