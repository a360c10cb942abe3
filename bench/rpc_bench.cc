// rpc_bench: kvtierd's gRPC data path against Redis 7, side by side in the same run, both over a
// Unix socket on this machine, storing the same values.
//
//   Put / Get of 256 KiB, 1 MiB and 4 MiB values with 1, 4 and 16 concurrent clients (each client
//   its own connection): aggregate GB/s and per-operation p50 / p99 latency.
//   kvtierd values are kvtier payloads (raw codec) of those sizes, sent with Put(PAYLOAD) (the
//   daemon checks the stream CRC-32C and the payload's own checksums, then stores it in the host
//   tier) and read back with Get(PAYLOAD). Redis stores the same bytes with SET / GET (RESP spoken
//   directly over its Unix socket; persistence off).
//   The same Put / Get through the client SDK (kvtier::client::Client, one per client thread),
//   twice: over the socket ("kvtierd-sdk", shared_memory_bytes = 0) and with same-node shared
//   memory ("kvtierd-shm", the SDK's default for unix: targets: the value bytes go through a
//   registered memfd, only the call crosses the socket).
//   Batched Lookup: keys per second of full-prefix hits, batches of 1024 and 4096 keys.
//
// The bench starts its own kvtierd (--kvtierd, default: the one built alongside) and
// redis-server (--redis) in a temporary directory and stops both at the end.
//   rpc_bench [--seconds 1.0] [--json out.json]
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "daemon_process.h"
#include "kvtier/client/client.h"
#include "kvtier/kernels/codec.h"
#include "rpc_util.h"

namespace {

using Clock = std::chrono::steady_clock;
using kvtier::testing::DaemonProcess;

// ---- A minimal RESP client (SET / GET / PING) over a Unix socket. -----------------------------
class RedisConn {
 public:
  explicit RedisConn(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RedisConn() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }

  bool Set(const std::string& key, const std::string& value) {
    std::string head = fmt::format("*3\r\n$3\r\nSET\r\n${}\r\n{}\r\n${}\r\n", key.size(), key,
                                   value.size());
    iovec iov[3] = {{head.data(), head.size()},
                    {const_cast<char*>(value.data()), value.size()},
                    {const_cast<char*>("\r\n"), 2}};
    if (!WriteAll(iov, 3)) return false;
    std::string line;
    return ReadLine(&line) && line == "+OK";
  }
  bool Get(const std::string& key, std::string* value) {
    std::string cmd = fmt::format("*2\r\n$3\r\nGET\r\n${}\r\n{}\r\n", key.size(), key);
    iovec iov[1] = {{cmd.data(), cmd.size()}};
    if (!WriteAll(iov, 1)) return false;
    std::string line;
    if (!ReadLine(&line) || line.empty() || line[0] != '$') return false;
    long n = std::stol(line.substr(1));
    if (n < 0) return false;
    value->resize(static_cast<size_t>(n) + 2);
    if (!ReadExact(value->data(), value->size())) return false;
    value->resize(static_cast<size_t>(n));
    return true;
  }
  bool Ping() {
    std::string cmd = "*1\r\n$4\r\nPING\r\n";
    iovec iov[1] = {{cmd.data(), cmd.size()}};
    std::string line;
    return WriteAll(iov, 1) && ReadLine(&line) && line == "+PONG";
  }

 private:
  bool WriteAll(iovec* iov, int n) {
    while (n > 0) {
      ssize_t w = ::writev(fd_, iov, n);
      if (w < 0) return false;
      while (n > 0 && static_cast<size_t>(w) >= iov->iov_len) {
        w -= static_cast<ssize_t>(iov->iov_len);
        ++iov;
        --n;
      }
      if (n > 0) {
        iov->iov_base = static_cast<char*>(iov->iov_base) + w;
        iov->iov_len -= static_cast<size_t>(w);
      }
    }
    return true;
  }
  bool Fill() {
    if (pos_ < len_) return true;
    ssize_t r = ::read(fd_, buf_, sizeof(buf_));
    if (r <= 0) return false;
    pos_ = 0;
    len_ = static_cast<size_t>(r);
    return true;
  }
  bool ReadLine(std::string* line) {
    line->clear();
    while (Fill()) {
      char c = buf_[pos_++];
      if (c == '\n') {
        if (!line->empty() && line->back() == '\r') line->pop_back();
        return true;
      }
      line->push_back(c);
    }
    return false;
  }
  bool ReadExact(char* out, size_t n) {
    while (n > 0) {
      if (pos_ < len_) {
        size_t k = std::min(n, len_ - pos_);
        std::memcpy(out, buf_ + pos_, k);
        pos_ += k;
        out += k;
        n -= k;
        continue;
      }
      ssize_t r = ::read(fd_, out, n);  // large reads go straight to the destination
      if (r <= 0) return false;
      out += r;
      n -= static_cast<size_t>(r);
    }
    return true;
  }

  int fd_ = -1;
  char buf_[1 << 16];
  size_t pos_ = 0, len_ = 0;
};

// ---- Measurement. ---------------------------------------------------------------------------
struct Result {
  std::string system, op;
  size_t value_bytes = 0;
  int clients = 0;
  uint64_t ops = 0;
  double seconds = 0, gbps = 0, p50_us = 0, p99_us = 0;
  uint64_t errors = 0;
};

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
  return v[i];
}

// Runs `op(client, i)` from `clients` threads for about `seconds`; returns ops and latencies.
template <typename Op>
Result Measure(const std::string& system, const std::string& name, size_t bytes, int clients,
               double seconds, Op op) {
  std::vector<std::vector<double>> lat(static_cast<size_t>(clients));
  std::atomic<uint64_t> errors{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  const Clock::time_point start = Clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        const Clock::time_point t0 = Clock::now();
        if (!op(c, i)) errors.fetch_add(1);
        lat[static_cast<size_t>(c)].push_back(
            std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  Result r;
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  r.system = system;
  r.op = name;
  r.value_bytes = bytes;
  r.clients = clients;
  r.ops = all.size();
  r.errors = errors.load();
  r.gbps = static_cast<double>(r.ops - r.errors) * static_cast<double>(bytes) / r.seconds / 1e9;
  r.p50_us = Percentile(all, 0.50);
  r.p99_us = Percentile(all, 0.99);
  return r;
}

pid_t StartRedis(const std::string& dir, const std::string& sock) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the bench
    int fd = ::open((dir + "/redis.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", sock.c_str(),
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", dir.c_str(),
             "--protected-mode", "no", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"rpc_bench: kvtierd gRPC Put/Get/Lookup vs Redis 7 over Unix sockets"};
  std::string kvtierd = KVTIER_KVTIERD, json_path;
  double seconds = 1.0;
  std::vector<uint32_t> sizes_kib = {256, 1024, 4096};
  std::vector<int> client_counts = {1, 4, 16};
  bool skip_redis = false;
  std::vector<std::string> systems = {"kvtierd", "kvtierd-sdk", "kvtierd-shm", "redis"};
  app.add_option("--kvtierd", kvtierd, "kvtierd binary")->capture_default_str();
  app.add_option("--seconds", seconds, "Seconds per measurement")->capture_default_str();
  app.add_option("--json", json_path, "Write results as JSON here");
  app.add_option("--sizes-kib", sizes_kib, "Value sizes in KiB (multiples of 4)")
      ->capture_default_str();
  app.add_option("--clients", client_counts, "Concurrent client counts")->capture_default_str();
  app.add_flag("--skip-redis", skip_redis, "Measure kvtierd only");
  app.add_option("--systems", systems, "Which of kvtierd, kvtierd-sdk, kvtierd-shm, redis to "
                 "measure for Put/Get")->capture_default_str();
  std::vector<std::string> ops = {"put", "get"};
  app.add_option("--ops", ops, "Which of put, get to measure")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  // Like kvtierd: keep MiB-sized buffers on the heap (no mmap/munmap and page faults per call).
  // Applies to both clients (gRPC and RESP) in this process.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);

  kvtier::testing::TempDir dir;
  DaemonProcess daemon(kvtierd, dir.path());
  daemon.flags = {"--storage.host.capacity_bytes=2147483648", "--server.max_inflight_calls=64",
                  "--logging.level=warning"};
  if (!daemon.Start()) {
    std::fprintf(stderr, "kvtierd did not start:\n%s\n", daemon.ReadLog().c_str());
    return 1;
  }
  const std::string redis_sock = dir.path() + "/redis.sock";
  pid_t redis = StartRedis(dir.path(), redis_sock);
  // Stops redis-server on every way out of main (early error returns included).
  struct RedisGuard {
    pid_t* pid;
    ~RedisGuard() {
      if (*pid > 0) {
        ::kill(*pid, SIGTERM);
        ::waitpid(*pid, nullptr, 0);
      }
    }
  } redis_guard{&redis};
  bool redis_up = false;
  for (int i = 0; i < 100 && !redis_up; ++i) {
    RedisConn c(redis_sock);
    redis_up = c.ok() && c.Ping();
    if (!redis_up) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!redis_up) {
    std::fprintf(stderr, "redis-server did not start\n");
    return 1;
  }

  // One namespace whose raw-codec payloads have the benchmark sizes: 1 layer x 8 KV heads x 128
  // dims fp16 = 4 KiB per token; 64 / 256 / 1024 tokens = 256 KiB / 1 MiB / 4 MiB (+ header).
  const kvtier::v1::Layout layout = kvtier::rpc::MhaLayout(1, 8, 8, 128);
  auto stub0 = daemon.Stub();
  auto create_ns = [&](const std::string& name, const kvtier::v1::Layout& l, uint32_t tpc) {
    grpc::ClientContext ctx;
    kvtier::v1::CreateNamespaceRequest req;
    req.mutable_namespace_()->set_name(name);
    req.mutable_namespace_()->set_codec("raw");
    *req.mutable_namespace_()->mutable_layout() = l;
    req.mutable_namespace_()->set_tokens_per_chunk(tpc);
    kvtier::v1::CreateNamespaceResponse resp;
    return stub0->CreateNamespace(&ctx, req, &resp).ok();
  };
  if (!create_ns("bench", layout, 1024)) return 1;

  std::vector<Result> results;
  // The per-call floor: a unary GetNamespace round trip (no data) from one client.
  {
    auto stub = daemon.Stub();
    Result floor = Measure("kvtierd", "unary", 0, 1, seconds, [&](int, uint64_t) {
      grpc::ClientContext ctx;
      kvtier::v1::GetNamespaceRequest req;
      req.set_name("bench");
      kvtier::v1::GetNamespaceResponse resp;
      return stub->GetNamespace(&ctx, req, &resp).ok();
    });
    std::printf("kvtierd     unary GetNamespace round trip, 1 client: p50 %.1f us  p99 %.1f us\n",
                floor.p50_us, floor.p99_us);
    results.push_back(floor);
  }
  auto print = [](const Result& r) {
    std::printf("%-11s %-4s %8zu B  %2d clients  %8.3f GB/s  p50 %9.1f us  p99 %9.1f us  "
                "(%llu ops, %llu errors)\n",
                r.system.c_str(), r.op.c_str(), r.value_bytes, r.clients, r.gbps, r.p50_us,
                r.p99_us, static_cast<unsigned long long>(r.ops),
                static_cast<unsigned long long>(r.errors));
    std::fflush(stdout);
  };

  for (uint32_t kib : sizes_kib) {
    const uint32_t tokens = kib / 4;
    kvtier::kernels::ChunkInput in;
    const std::string tensor =
        kvtier::rpc::SyntheticFp16(kvtier::rpc::TensorBytes(layout, tokens), tokens);
    in.data = tensor.data();
    in.layout = kvtier::kernels::KvLayout::Mha(1, 8, 8, 128);
    in.num_tokens = tokens;
    std::vector<uint8_t> p;
    if (!kvtier::kernels::Encode(*kvtier::kernels::CodecParams::Parse("raw"), in, &p).ok()) {
      return 1;
    }
    const std::string value(p.begin(), p.end());
    const size_t nominal = tokens * 4096;
    for (int clients : client_counts) {
      // Working set: keys per client so that everything stays well inside memory.
      const int keys_per_client = std::max<int>(1, static_cast<int>((128u << 20) / nominal) /
                                                       clients);
      std::vector<std::unique_ptr<kvtier::v1::KvTier::Stub>> stubs;
      std::vector<std::unique_ptr<RedisConn>> conns;
      for (int c = 0; c < clients; ++c) {
        stubs.push_back(daemon.Stub());  // own channel = own connection
        conns.push_back(std::make_unique<RedisConn>(redis_sock));
      }
      auto key = [&](int c, uint64_t i) {
        return kvtier::rpc::SeedKey(nominal * 1000 + static_cast<uint64_t>(c) * 100000 +
                                    i % static_cast<uint64_t>(keys_per_client));
      };
      auto kv_put = [&](int c, uint64_t i) {
        return kvtier::rpc::Put(stubs[c].get(), "bench", key(c, i), value,
                                kvtier::v1::DATA_FORMAT_PAYLOAD, 0)
            .status.ok();
      };
      auto kv_get = [&](int c, uint64_t i) {
        auto g = kvtier::rpc::Get(stubs[c].get(), "bench", key(c, i),
                                  kvtier::v1::DATA_FORMAT_PAYLOAD);
        return g.status.ok() && g.data.size() == value.size();
      };
      auto rd_put = [&](int c, uint64_t i) { return conns[c]->Set(key(c, i), value); };
      std::vector<std::string> bufs(static_cast<size_t>(clients));
      auto rd_get = [&](int c, uint64_t i) {
        return conns[c]->Get(key(c, i), &bufs[c]) && bufs[c].size() == value.size();
      };
      // Fill the working set for Get (and warm up) on both systems.
      for (int c = 0; c < clients; ++c) {
        for (int i = 0; i < keys_per_client; ++i) {
          kv_put(c, i);
          rd_put(c, i);
        }
      }
      // The SDK, over the socket and through shared memory: one Client per client thread.
      const absl::Span<const uint8_t> value_bytes(reinterpret_cast<const uint8_t*>(value.data()),
                                                  value.size());
      auto sdk_clients = [&](bool shm) {
        std::vector<std::unique_ptr<kvtier::client::Client>> out;
        kvtier::client::ClientOptions o;
        o.target = "unix:" + daemon.socket_path();
        if (!shm) o.shared_memory_bytes = 0;  // else the SDK's default region
        for (int c = 0; c < clients; ++c) {
          auto made = kvtier::client::Client::Connect(o);
          if (!made.ok()) {
            std::fprintf(stderr, "client: %s\n", made.status().ToString().c_str());
            std::exit(1);
          }
          out.push_back(std::move(*made));
        }
        return out;
      };
      auto sdk_key = [&](int c, uint64_t i) {
        return *kvtier::ChunkKey::FromBytes(key(c, i));
      };
      kvtier::client::PutOptions sdk_put_options;
      sdk_put_options.format = kvtier::client::DataFormat::kPayload;
      kvtier::client::GetOptions sdk_get_options;
      sdk_get_options.format = kvtier::client::DataFormat::kPayload;
      auto sdk_ops = [&](std::vector<std::unique_ptr<kvtier::client::Client>>* cs) {
        auto put = [&, cs](int c, uint64_t i) {
          return (*cs)[c]->Put("bench", sdk_key(c, i), value_bytes, sdk_put_options).ok();
        };
        auto get = [&, cs](int c, uint64_t i) {
          auto g = (*cs)[c]->Get("bench", sdk_key(c, i), sdk_get_options);
          return g.ok() && g->data.size() == value.size();
        };
        return std::make_pair(put, get);
      };
      auto sdk_sock = sdk_clients(false);
      auto sdk_shm = sdk_clients(true);
      auto [sock_put, sock_get] = sdk_ops(&sdk_sock);
      auto [shm_put, shm_get] = sdk_ops(&sdk_shm);
      auto wanted = [&](const std::string& system, const std::string& op) {
        return std::count(systems.begin(), systems.end(), system) > 0 &&
               std::count(ops.begin(), ops.end(), op) > 0 && !(skip_redis && system == "redis");
      };
      std::vector<Result> point;
      auto run = [&](const std::string& system, const std::string& op, auto fn) {
        if (wanted(system, op)) point.push_back(Measure(system, op, nominal, clients, seconds, fn));
      };
      run("kvtierd", "put", kv_put);
      run("kvtierd-sdk", "put", sock_put);
      run("kvtierd-shm", "put", shm_put);
      run("redis", "put", rd_put);
      run("kvtierd", "get", kv_get);
      run("kvtierd-sdk", "get", sock_get);
      run("kvtierd-shm", "get", shm_get);
      run("redis", "get", rd_get);
      for (const Result& r : point) {
        print(r);
        results.push_back(r);
      }
    }
  }

  if (auto m = daemon.ScrapeMetrics(); m.ok()) {
    std::printf("in flight after the Put/Get phase: %.0f\n",
                kvtier::testing::MetricValue(*m, "kvtier_rpcs_in_flight"));
  }
  // Batched Lookup: 4096 small chunks stored, then full-prefix lookups.
  const kvtier::v1::Layout small = kvtier::rpc::MhaLayout(1, 1, 1, 64);
  if (!create_ns("lookup", small, 16)) {
    std::fprintf(stderr, "lookup setup: CreateNamespace failed\n");
    return 1;
  }
  std::vector<std::string> keys;
  const std::string small_value = kvtier::rpc::SyntheticFp16(kvtier::rpc::TensorBytes(small, 16), 1);
  for (int i = 0; i < 4096; ++i) {
    keys.push_back(kvtier::rpc::SeedKey(777000000 + i));
    auto put = kvtier::rpc::Put(stub0.get(), "lookup", keys.back(), small_value,
                                kvtier::v1::DATA_FORMAT_TENSOR, 16);
    if (!put.status.ok()) {
      std::fprintf(stderr, "lookup setup: Put %d failed: %s\n", i,
                   put.status.error_message().c_str());
      return 1;
    }
  }
  for (size_t batch : {1024u, 4096u}) {
    kvtier::v1::LookupRequest req;
    req.set_namespace_("lookup");
    for (size_t i = 0; i < batch; ++i) req.add_keys(keys[i]);
    for (int clients : {1, 4}) {
      std::vector<std::unique_ptr<kvtier::v1::KvTier::Stub>> stubs;
      for (int c = 0; c < clients; ++c) stubs.push_back(daemon.Stub());
      Result r = Measure("kvtierd", "lookup", batch, clients, seconds, [&](int c, uint64_t) {
        grpc::ClientContext ctx;
        kvtier::v1::LookupResponse resp;
        return stubs[c]->Lookup(&ctx, req, &resp).ok() && resp.prefix_chunks() == batch;
      });
      const double keys_per_s = static_cast<double>(r.ops - r.errors) * batch / r.seconds;
      std::printf("kvtierd  lookup batch %4zu  %2d clients  %10.0f keys/s  p50 %8.1f us  "
                  "p99 %8.1f us  (%llu calls, %llu errors)\n",
                  batch, clients, keys_per_s, r.p50_us, r.p99_us,
                  static_cast<unsigned long long>(r.ops),
                  static_cast<unsigned long long>(r.errors));
      r.gbps = keys_per_s;  // reported as keys_per_second in JSON
      results.push_back(r);
    }
  }

  // Server-side view: mean time inside kvtierd's handlers (from its own histogram).
  if (auto m = daemon.ScrapeMetrics(); m.ok()) {
    for (const char* method : {"Put", "Get", "Lookup"}) {
      const std::string base = std::string("kvtier_rpc_duration_seconds_");
      const std::string labels = std::string("{code=\"OK\",method=\"") + method + "\"}";
      double n = kvtier::testing::MetricValue(*m, base + "count" + labels);
      double sum = kvtier::testing::MetricValue(*m, base + "sum" + labels);
      if (n > 0) std::printf("server-side mean %-6s %9.1f us over %.0f calls\n", method, 1e6 * sum / n, n);
    }
  }
  ::kill(redis, SIGTERM);
  ::waitpid(redis, nullptr, 0);
  redis = -1;
  daemon.Signal(SIGTERM);
  daemon.WaitExit();

  if (!json_path.empty()) {
    std::ofstream out(json_path);
    char host[256] = {0};
    ::gethostname(host, sizeof(host) - 1);
    out << "{\n  \"bench\": \"rpc_bench\",\n  \"host\": \"" << host << "\",\n  \"cpus\": "
        << std::thread::hardware_concurrency() << ",\n  \"seconds_per_point\": " << seconds
        << ",\n  \"results\": [\n";
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      out << fmt::format(
          "    {{\"system\": \"{}\", \"op\": \"{}\", \"{}\": {}, \"clients\": {}, \"ops\": {}, "
          "\"errors\": {}, \"{}\": {:.4f}, \"p50_us\": {:.1f}, \"p99_us\": {:.1f}}}{}\n",
          r.system, r.op, r.op == "lookup" ? "batch_keys" : "value_bytes", r.value_bytes,
          r.clients, r.ops, r.errors, r.op == "lookup" ? "keys_per_second" : "gb_per_second",
          r.gbps, r.p50_us, r.p99_us, i + 1 < results.size() ? "," : "");
    }
    out << "  ]\n}\n";
  }
  return 0;
}
