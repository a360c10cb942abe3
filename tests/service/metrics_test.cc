// Integration (RELIABILITY.md 23): a REAL Prometheus server (the Debian `prometheus` binary, on
// loopback, scraping every second) scrapes the real kvtierd; after a known mix of operations the
// counter deltas Prometheus reports through its HTTP API equal the expected ones. The same deltas
// are checked on a direct scrape of /metrics, and every documented family is exposed with its
// type.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <cmath>
#include <fstream>
#include <thread>

#include "daemon_process.h"
#include "gtest/gtest.h"
#include "rpc_util.h"

namespace kvtier {
namespace {

using testing::DaemonProcess;
using testing::TempDir;

constexpr uint32_t kTpc = 16;
const v1::Layout kLayout = rpc::MhaLayout(2, 2, 2, 64);

class PrometheusServer {
 public:
  PrometheusServer(const std::string& dir, int target_port) {
    port_ = testing::PickFreePort();
    const std::string config = dir + "/prometheus.yml";
    std::ofstream(config) << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                          << "scrape_configs:\n  - job_name: kvtierd\n    static_configs:\n"
                          << "      - targets: ['127.0.0.1:" << target_port << "']\n";
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
      int fd = ::open((dir + "/prometheus.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      const std::string a1 = "--config.file=" + config;
      const std::string a2 = "--storage.tsdb.path=" + dir + "/tsdb";
      const std::string a3 = "--web.listen-address=127.0.0.1:" + std::to_string(port_);
      ::execlp("prometheus", "prometheus", a1.c_str(), a2.c_str(), a3.c_str(),
               "--log.level=warn", static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~PrometheusServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  // The single value of an instant query (sum(...) queries), NaN when empty or unreachable.
  double Query(const std::string& expr) const {
    std::string enc;
    for (char c : expr) {
      if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.') {
        enc += c;
      } else {
        char buf[4];
        std::snprintf(buf, sizeof(buf), "%%%02X", static_cast<unsigned char>(c));
        enc += buf;
      }
    }
    auto body = testing::HttpGet(port_, "/api/v1/query?query=" + enc);
    if (!body.ok()) return NAN;
    // {"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[t,"v"]}]}}
    size_t v = body->find("\"value\":[");
    if (v == std::string::npos) return NAN;
    size_t q = body->find('"', body->find(',', v) + 1);
    if (q == std::string::npos) return NAN;
    return std::strtod(body->c_str() + q + 1, nullptr);
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

bool HavePrometheus() { return std::system("command -v prometheus >/dev/null 2>&1") == 0; }

struct Counter {
  std::string promql;  // sum(...) form for Prometheus
  std::string series;  // exact series name as exposed
  double delta;        // expected change after the mix
};

TEST(MetricsTest, RealPrometheusSeesExactCounterDeltas) {
  if (!HavePrometheus()) GTEST_SKIP() << "prometheus binary not installed";
  TempDir dir;
  DaemonProcess d(KVTIER_KVTIERD, dir.path());
  ASSERT_TRUE(d.Start()) << d.ReadLog();
  auto stub = d.Stub();
  {
    grpc::ClientContext ctx;
    v1::CreateNamespaceRequest req;
    req.mutable_namespace_()->set_name("m");
    req.mutable_namespace_()->set_codec("fp8");
    *req.mutable_namespace_()->mutable_layout() = kLayout;
    req.mutable_namespace_()->set_tokens_per_chunk(kTpc);
    v1::CreateNamespaceResponse resp;
    ASSERT_TRUE(stub->CreateNamespace(&ctx, req, &resp).ok());
  }
  PrometheusServer prom(dir.path(), d.metrics_port());
  bool up = false;
  for (int i = 0; i < 300 && !up; ++i) {
    up = prom.Query("sum(up{job=\"kvtierd\"})") == 1;
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(up) << "Prometheus never scraped kvtierd";

  const uint64_t chunk = rpc::TensorBytes(kLayout, kTpc);
  // Run the mix first partially to learn the payload size (fp8 payload of one chunk).
  std::vector<std::string> keys;
  for (int i = 0; i < 5; ++i) keys.push_back(rpc::SeedKey(i));
  const std::string data0 = rpc::SyntheticFp16(chunk, 0);

  // Baseline: Prometheus must agree with a direct scrape before the mix.
  auto before = d.ScrapeMetrics();
  ASSERT_TRUE(before.ok()) << before.status();

  // ---- The known mix. Host hits: 3 (Lookup) + 3 (tensor Gets) + 2 (payload Gets) = 8; misses
  // on every enabled tier: the Lookup's first missing key and the Get of an absent key. ----
  uint64_t payload_bytes = 0;
  for (int i = 0; i < 5; ++i) {
    auto put = rpc::Put(stub.get(), "m", keys[i], rpc::SyntheticFp16(chunk, i),
                        v1::DATA_FORMAT_TENSOR, kTpc);
    ASSERT_TRUE(put.status.ok()) << put.status.error_message();
    payload_bytes = put.response.stored_bytes();  // same shape, same codec: same size
  }
  {  // one Put whose declared CRC is wrong
    grpc::ClientContext ctx;
    v1::PutResponse resp;
    auto w = stub->Put(&ctx, &resp);
    v1::PutRequest m;
    m.mutable_header()->set_namespace_("m");
    m.mutable_header()->set_key(rpc::SeedKey(99));
    m.mutable_header()->set_num_tokens(kTpc);
    m.mutable_header()->set_total_bytes(data0.size());
    m.mutable_header()->set_crc32c(rpc::Crc32c(data0) ^ 0xFF);
    m.set_data(data0);
    w->Write(m);
    w->WritesDone();
    ASSERT_EQ(w->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {  // Lookup: 3 hits, then a missing key (k4 after it is not examined)
    grpc::ClientContext ctx;
    v1::LookupRequest req;
    req.set_namespace_("m");
    for (int i : {0, 1, 2}) req.add_keys(keys[i]);
    req.add_keys(rpc::SeedKey(1000));
    req.add_keys(keys[4]);
    v1::LookupResponse resp;
    ASSERT_TRUE(stub->Lookup(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.prefix_chunks(), 3u);
  }
  for (int i : {0, 1, 2}) {
    auto g = rpc::Get(stub.get(), "m", keys[i], v1::DATA_FORMAT_TENSOR);
    ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  }
  for (int i = 0; i < 2; ++i) {
    auto g = rpc::Get(stub.get(), "m", keys[0], v1::DATA_FORMAT_PAYLOAD);
    ASSERT_TRUE(g.status.ok());
    ASSERT_EQ(g.data.size(), payload_bytes);
  }
  ASSERT_EQ(rpc::Get(stub.get(), "m", rpc::SeedKey(1000), v1::DATA_FORMAT_PAYLOAD)
                .status.error_code(),
            grpc::StatusCode::NOT_FOUND);

  const std::vector<Counter> expected = {
      {"sum(kvtier_transfer_bytes_total{path=\"ingest_tensor\"})",
       "kvtier_transfer_bytes_total{path=\"ingest_tensor\"}", 5.0 * chunk},
      {"sum(kvtier_transfer_bytes_total{path=\"fetch_tensor\"})",
       "kvtier_transfer_bytes_total{path=\"fetch_tensor\"}", 3.0 * chunk},
      {"sum(kvtier_transfer_bytes_total{path=\"fetch_payload\"})",
       "kvtier_transfer_bytes_total{path=\"fetch_payload\"}", 2.0 * payload_bytes},
      {"sum(kvtier_codec_tensor_bytes_total{codec=\"fp8\",op=\"encode\"})",
       "kvtier_codec_tensor_bytes_total{codec=\"fp8\",op=\"encode\"}", 5.0 * chunk},
      {"sum(kvtier_codec_payload_bytes_total{codec=\"fp8\",op=\"encode\"})",
       "kvtier_codec_payload_bytes_total{codec=\"fp8\",op=\"encode\"}", 5.0 * payload_bytes},
      {"sum(kvtier_codec_tensor_bytes_total{codec=\"fp8\",op=\"decode\"})",
       "kvtier_codec_tensor_bytes_total{codec=\"fp8\",op=\"decode\"}", 3.0 * chunk},
      {"sum(kvtier_compression_ratio_count{codec=\"fp8\"})",
       "kvtier_compression_ratio_count{codec=\"fp8\"}", 5},
      {"sum(kvtier_lookup_tokens_requested_total)", "kvtier_lookup_tokens_requested_total",
       5.0 * kTpc},
      {"sum(kvtier_lookup_tokens_hit_total)", "kvtier_lookup_tokens_hit_total", 3.0 * kTpc},
      {"sum(kvtier_tier_hits_total{tier=\"host\"})", "kvtier_tier_hits_total{tier=\"host\"}", 8},
      {"sum(kvtier_tier_misses_total{tier=\"host\"})", "kvtier_tier_misses_total{tier=\"host\"}",
       2},
      {"sum(kvtier_tier_misses_total{tier=\"disk\"})", "kvtier_tier_misses_total{tier=\"disk\"}",
       2},
      {"sum(kvtier_checksum_failures_total{source=\"put_stream\"})",
       "kvtier_checksum_failures_total{source=\"put_stream\"}", 1},
      {"sum(kvtier_rpc_duration_seconds_count{method=\"Put\",code=\"OK\"})",
       "kvtier_rpc_duration_seconds_count{code=\"OK\",method=\"Put\"}", 5},
      {"sum(kvtier_rpc_duration_seconds_count{method=\"Put\",code=\"INVALID_ARGUMENT\"})",
       "kvtier_rpc_duration_seconds_count{code=\"INVALID_ARGUMENT\",method=\"Put\"}", 1},
      {"sum(kvtier_rpc_duration_seconds_count{method=\"Get\",code=\"NOT_FOUND\"})",
       "kvtier_rpc_duration_seconds_count{code=\"NOT_FOUND\",method=\"Get\"}", 1},
  };

  // Direct scrape: exact deltas right away.
  auto after = d.ScrapeMetrics();
  ASSERT_TRUE(after.ok());
  for (const Counter& c : expected) {
    EXPECT_EQ(testing::MetricValue(*after, c.series) - testing::MetricValue(*before, c.series),
              c.delta)
        << "direct scrape: " << c.series;
  }
  // Prometheus: the values it scraped reach before + delta (polled: it scrapes every second).
  for (const Counter& c : expected) {
    const double want = testing::MetricValue(*before, c.series) + c.delta;
    double got = NAN;
    for (int i = 0; i < 150; ++i) {
      got = prom.Query(c.promql);
      if (got == want) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(got, want) << "Prometheus: " << c.promql;
  }
  // Storage-owned gauges are scraped too.
  EXPECT_EQ(prom.Query("sum(kvtier_tier_chunks{tier=\"host\"})"), 5);
  EXPECT_EQ(prom.Query("sum(kvtier_serving)"), 1);
}

TEST(MetricsTest, EveryDocumentedFamilyIsExposedWithItsType) {
  TempDir dir;
  DaemonProcess d(KVTIER_KVTIERD, dir.path());
  // Start() returns once health says SERVING, and kvtierd says SERVING only after the storage
  // engine is open and its metrics are registered (health starts NOT_SERVING; tests/service/
  // health_test.cc), so every family, storage-owned ones included, must be in the first scrape.
  ASSERT_TRUE(d.Start()) << d.ReadLog();
  auto body = testing::HttpGet(d.metrics_port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_NE(body->find("\nkvtier_serving 1\n"), std::string::npos) << *body;
  const std::vector<std::pair<std::string, std::string>> families = {
      {"kvtier_rpc_duration_seconds", "histogram"},
      {"kvtier_rpcs_in_flight", "gauge"},
      {"kvtier_serving", "gauge"},
      {"kvtier_rejected_calls_total", "counter"},
      {"kvtier_auth_failures_total", "counter"},
      {"kvtier_tier_hits_total", "counter"},
      {"kvtier_tier_misses_total", "counter"},
      {"kvtier_lookups_total", "counter"},
      {"kvtier_lookup_tokens_requested_total", "counter"},
      {"kvtier_lookup_tokens_hit_total", "counter"},
      {"kvtier_transfer_bytes_total", "counter"},
      {"kvtier_codec_tensor_bytes_total", "counter"},
      {"kvtier_codec_payload_bytes_total", "counter"},
      {"kvtier_codec_seconds_total", "counter"},
      {"kvtier_codec_calls_total", "counter"},
      {"kvtier_connections_open", "gauge"},
      {"kvtier_connections_refused_total", "counter"},
      {"kvtier_compression_ratio", "histogram"},
      {"kvtier_checksum_failures_total", "counter"},
      {"kvtier_tier_capacity_bytes", "gauge"},
      {"kvtier_tier_used_bytes", "gauge"},
      {"kvtier_tier_chunks", "gauge"},
      {"kvtier_tier_evictions_total", "counter"},
      {"kvtier_tier_written_bytes_total", "counter"},
      {"kvtier_tier_read_bytes_total", "counter"},
      {"kvtier_tier_put_rejections_total", "counter"},
      {"kvtier_tier_moved_bytes_total", "counter"},
      {"kvtier_storage_io_errors_total", "counter"},
      {"kvtier_storage_disk_full_total", "counter"},
      {"kvtier_indexed_chunks", "gauge"},
      {"kvtier_pinned_chunks", "gauge"},
      {"kvtier_active_leases", "gauge"},
      {"kvtier_leases_expired_total", "counter"},
  };
  for (const auto& [name, type] : families) {
    EXPECT_NE(body->find("# TYPE " + name + " " + type + "\n"), std::string::npos)
        << name << " (" << type << ") missing";
    EXPECT_NE(body->find("# HELP " + name + " "), std::string::npos) << name << " has no help";
  }
}

}  // namespace
}  // namespace kvtier
