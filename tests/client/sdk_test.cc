// The C++ SDK against a real kvtierd (started per test on a temporary Unix socket): namespaces,
// keys, Lookup/Put/Get (blocking and async), paged decode, deadlines, retries, token auth, stats.
#include "kvtier/client/client.h"

#include <gtest/gtest.h>
#include <fmt/format.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "daemon_process.h"
#include "kvtier/kernels/codec.h"
#include "kvtier/kernels/paged.h"
#include "synthetic.h"

namespace kvtier::client {
namespace {

using kvtier::testing::DaemonProcess;
using kvtier::testing::TempDir;

class SdkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = std::make_unique<DaemonProcess>(KVTIER_KVTIERD, dir_.path());
  }
  void StartDaemon() {
    ASSERT_TRUE(daemon_->Start()) << daemon_->ReadLog();
  }
  ClientOptions Options() const {
    ClientOptions o;
    o.target = "unix:" + daemon_->socket_path();
    return o;
  }
  std::unique_ptr<Client> Connect(ClientOptions o) {
    auto c = Client::Connect(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }
  static NamespaceSpec Spec(const std::string& name) {
    NamespaceSpec s;
    s.name = name;
    s.model_id = "test/model";
    s.layout = kernels::KvLayout::Mha(2, 2, 4, 64);
    s.codec = "raw";
    s.tokens_per_chunk = 16;
    s.salt = "salt-" + name;
    return s;
  }

  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(SdkTest, ConnectToNothingSaysWhatToDo) {
  ClientOptions o;
  o.target = "unix:" + dir_.path() + "/nobody.sock";
  o.connect_timeout = std::chrono::milliseconds(300);
  auto c = Client::Connect(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(std::string(c.status().message()).find("is it running"), std::string::npos);
  o.tls = true;  // TLS over a unix socket is refused before dialing
  EXPECT_EQ(Client::Connect(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SdkTest, NamespacesLookupPutGet) {
  StartDaemon();
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  auto healthy = c->Healthy();
  ASSERT_TRUE(healthy.ok()) << healthy.status();
  EXPECT_TRUE(*healthy);

  auto ns = c->CreateNamespace(Spec("llm"));
  ASSERT_TRUE(ns.ok()) << ns.status();
  EXPECT_EQ(ns->tokens_per_chunk, 16u);
  EXPECT_EQ(ns->layout, Spec("llm").layout);
  EXPECT_TRUE(c->CreateNamespace(Spec("llm")).ok());  // idempotent
  NamespaceSpec other = Spec("llm");
  other.codec = "fp8";
  EXPECT_EQ(c->CreateNamespace(other).status().code(), absl::StatusCode::kAlreadyExists);
  auto list = c->ListNamespaces();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].name, "llm");
  EXPECT_EQ(c->GetNamespace("nope").status().code(), absl::StatusCode::kNotFound);

  std::vector<uint32_t> tokens(40);
  for (uint32_t i = 0; i < tokens.size(); ++i) tokens[i] = 1000 + i * 7;
  const auto keys = Client::ComputeKeys(*ns, tokens);
  ASSERT_EQ(keys.size(), 2u);  // 40 tokens = 2 full chunks of 16

  CallStats stats;
  auto miss = c->Lookup("llm", keys, 0, {{}, &stats});
  ASSERT_TRUE(miss.ok()) << miss.status();
  EXPECT_EQ(miss->prefix_chunks, 0u);
  EXPECT_EQ(stats.attempts, 1u);
  EXPECT_TRUE(stats.status.ok());

  const auto kv0 = cli::SyntheticKv(ns->layout, 16, 0);
  const auto kv1 = cli::SyntheticKv(ns->layout, 16, 1);
  PutOptions put;
  put.num_tokens = 16;
  auto p0 = c->Put("llm", keys[0], kv0, put, {{}, &stats});
  ASSERT_TRUE(p0.ok()) << p0.status();
  EXPECT_EQ(p0->tensor_bytes, kv0.size());
  EXPECT_EQ(stats.bytes_sent, kv0.size());
  put.first_position = 16;
  ASSERT_TRUE(c->Put("llm", keys[1], kv1, put).ok());

  auto hit = c->Lookup("llm", keys, 5000);
  ASSERT_TRUE(hit.ok()) << hit.status();
  EXPECT_EQ(hit->prefix_chunks, 2u);
  EXPECT_EQ(hit->prefix_tokens, 32u);
  EXPECT_EQ(hit->tiers.size(), 2u);

  auto g0 = c->Get("llm", keys[0], {}, {{}, &stats});
  ASSERT_TRUE(g0.ok()) << g0.status();
  EXPECT_EQ(g0->data, kv0);
  EXPECT_EQ(g0->num_tokens, 16u);
  EXPECT_EQ(g0->layout, ns->layout);
  EXPECT_EQ(stats.bytes_received, kv0.size());
  EXPECT_GT(stats.latency.count(), 0);

  GetOptions payload;
  payload.format = DataFormat::kPayload;
  payload.release_lease_id = hit->lease_id;
  auto g1 = c->Get("llm", keys[1], payload);
  ASSERT_TRUE(g1.ok()) << g1.status();
  auto info = kernels::InspectPayload(g1->data);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->num_tokens, 16u);
  EXPECT_EQ(info->first_position, 16u);

  // Prefix rule: a missing first chunk means no hit at all.
  ASSERT_TRUE(c->Delete("llm", {&keys[0], 1}).ok());
  auto after = c->Lookup("llm", keys);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->prefix_chunks, 0u);
  EXPECT_EQ(c->Get("llm", keys[0]).status().code(), absl::StatusCode::kNotFound);

  auto s = c->Stats();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->namespaces, 1u);
  EXPECT_GE(s->ingest_tensor_bytes, kv0.size() + kv1.size());
  const ClientTotals totals = c->Totals();
  EXPECT_GE(totals.calls, 14u);
  EXPECT_GE(totals.failed_calls, 3u);  // AlreadyExists, NotFound namespace, NotFound Get
  EXPECT_GE(totals.bytes_sent, kv0.size() + kv1.size());
}

TEST_F(SdkTest, AsyncCallsReturnFutures) {
  StartDaemon();
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  auto ns = c->CreateNamespace(Spec("async"));
  ASSERT_TRUE(ns.ok()) << ns.status();
  std::vector<uint32_t> tokens(16 * 4);
  for (uint32_t i = 0; i < tokens.size(); ++i) tokens[i] = i;
  const auto keys = Client::ComputeKeys(*ns, tokens);
  std::vector<std::vector<uint8_t>> data;
  for (size_t i = 0; i < keys.size(); ++i) data.push_back(cli::SyntheticKv(ns->layout, 16, 50 + i));
  std::vector<std::future<absl::StatusOr<PutResult>>> puts;
  PutOptions put;
  put.num_tokens = 16;
  for (size_t i = 0; i < keys.size(); ++i) puts.push_back(c->PutAsync("async", keys[i], data[i], put));
  for (auto& f : puts) ASSERT_TRUE(f.get().ok());
  auto lookup = c->LookupAsync("async", keys).get();
  ASSERT_TRUE(lookup.ok());
  EXPECT_EQ(lookup->prefix_chunks, 4u);
  std::vector<std::future<absl::StatusOr<GetResult>>> gets;
  std::vector<CallStats> stats(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    gets.push_back(c->GetAsync("async", keys[i], {}, {{}, &stats[i]}));
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    auto r = gets[i].get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->data, data[i]);
    EXPECT_EQ(stats[i].bytes_received, data[i].size());
  }
}

// Put from and Get straight into a vLLM-layout paged cache in host memory.
TEST_F(SdkTest, PagedPutAndDecodeIntoPages) {
  StartDaemon();
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  auto ns = c->CreateNamespace(Spec("paged"));
  ASSERT_TRUE(ns.ok()) << ns.status();
  const auto& layout = ns->layout;
  constexpr uint32_t kBlocks = 12, kBlockSize = 8;
  auto make_cache = [&](std::vector<std::vector<uint8_t>>* storage, uint64_t seed) {
    kernels::PagedKvCache cache;
    cache.layout = layout;
    cache.num_blocks = kBlocks;
    cache.block_size = kBlockSize;
    for (uint32_t l = 0; l < layout.num_layers; ++l) {
      storage->push_back(cli::SyntheticKv(layout, kBlocks * kBlockSize, seed + l));
      cache.layer_base.push_back(storage->back().data());
    }
    return cache;
  };
  std::vector<std::vector<uint8_t>> src_mem, dst_mem;
  const auto src = make_cache(&src_mem, 10);
  const auto dst = make_cache(&dst_mem, 20);
  const std::vector<int32_t> src_ids = {3, 7, 1, 0}, dst_ids = {5, 2, 11, 9};
  std::vector<uint32_t> tokens(32, 5);
  const auto keys = Client::ComputeKeys(*ns, tokens);
  ASSERT_EQ(keys.size(), 2u);

  // Chunk 1 of the sequence = tokens [16, 32) = blocks 2 and 3 of the table.
  PutOptions put;
  put.first_position = 16;
  auto stored = c->PutFromPaged("paged", keys[1], src, {src_ids, 16, 16}, put);
  ASSERT_TRUE(stored.ok()) << stored.status();
  auto st = c->GetIntoPaged("paged", keys[1], dst, {dst_ids, 16, 16});
  ASSERT_TRUE(st.ok()) << st;
  std::vector<uint8_t> want(layout.ChunkBytes(16)), got(layout.ChunkBytes(16));
  ASSERT_TRUE(kernels::GatherChunks(src, {src_ids, 16, 16}, 16, want.data()).ok());
  ASSERT_TRUE(kernels::GatherChunks(dst, {dst_ids, 16, 16}, 16, got.data()).ok());
  EXPECT_EQ(got, want);
  // A run that does not match the chunk is refused before anything is written.
  EXPECT_EQ(c->GetIntoPaged("paged", keys[1], dst, {dst_ids, 16, 8}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c->GetIntoPaged("paged", keys[1], dst, {dst_ids, 4, 16}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SdkTest, DeadlineExceededOnALargeGet) {
  daemon_->flags.push_back("--server.max_value_bytes=67108864");
  StartDaemon();
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  NamespaceSpec spec = Spec("big");
  spec.layout = kernels::KvLayout::Mha(32, 8, 8, 128);  // 128 KiB per token
  spec.tokens_per_chunk = 256;                          // 32 MiB chunks
  auto ns = c->CreateNamespace(spec);
  ASSERT_TRUE(ns.ok()) << ns.status();
  std::vector<uint32_t> tokens(256, 1);
  const auto key = Client::ComputeKeys(*ns, tokens).at(0);
  const auto kv = cli::SyntheticKv(ns->layout, 256, 3);
  PutOptions put;
  put.num_tokens = 256;
  ASSERT_TRUE(c->Put("big", key, kv, put, {std::chrono::milliseconds(60000), nullptr}).ok());
  CallStats stats;
  auto r = c->Get("big", key, {}, {std::chrono::milliseconds(1), &stats});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_EQ(stats.attempts, 1u);  // not retried
  // The client and the daemon are fine afterwards.
  auto again = c->Get("big", key, {}, {std::chrono::milliseconds(60000), nullptr});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->data, kv);
}

TEST_F(SdkTest, RetriesUnavailableAndRecoversWhenTheDaemonReturns) {
  StartDaemon();
  ClientOptions o = Options();
  o.retry.max_attempts = 3;
  o.retry.initial_backoff = std::chrono::milliseconds(5);
  o.retry.max_backoff = std::chrono::milliseconds(10);
  auto c = Connect(o);
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->CreateNamespace(Spec("r")).ok());
  daemon_->Kill9();
  CallStats stats;
  auto down = c->ListNamespaces({std::chrono::milliseconds(5000), &stats});
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable) << down.status();
  EXPECT_EQ(stats.attempts, 3u);
  EXPECT_NE(std::string(down.status().message()).find("is kvtierd running"), std::string::npos);

  // Restart in the background; a call with a patient retry policy rides it out.
  ClientOptions patient = Options();
  patient.retry.max_attempts = 1000;
  patient.retry.initial_backoff = std::chrono::milliseconds(20);
  patient.retry.max_backoff = std::chrono::milliseconds(200);
  std::thread restart([&] { daemon_->Start(); });
  auto c2 = Client::Connect([&] {
    auto p = patient;
    p.connect_timeout = std::chrono::milliseconds(30000);
    return p;
  }());
  restart.join();
  ASSERT_TRUE(c2.ok()) << c2.status() << daemon_->ReadLog();
  auto back = (*c2)->ListNamespaces({std::chrono::milliseconds(30000), &stats});
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->size(), 1u);  // the namespace survived the restart
}

// Same-node shared memory (the default for unix: targets): Put and Get move their bytes through
// the registered region, as kvtierd's counters show byte for byte, with the same results as the
// socket; values that do not fit the region or the Get block take the socket instead; a daemon
// restart is ridden out by registering again; one Client serves many threads at once.
TEST_F(SdkTest, SharedMemoryCarriesPutAndGet) {
  StartDaemon();
  auto shm_bytes = [&](const char* direction) {
    auto m = daemon_->ScrapeMetrics();
    return m.ok() ? kvtier::testing::MetricValue(
                        *m, fmt::format("kvtier_shared_memory_bytes_total{{direction=\"{}\"}}",
                                        direction))
                  : -1.0;
  };
  auto regions = [&] {
    auto m = daemon_->ScrapeMetrics();
    return m.ok() ? kvtier::testing::MetricValue(*m, "kvtier_shared_memory_regions") : -1.0;
  };
  auto c = Connect(Options());
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(regions(), 1);  // registered at Connect
  auto ns = c->CreateNamespace(Spec("shm"));
  ASSERT_TRUE(ns.ok()) << ns.status();
  std::vector<uint32_t> tokens(64);
  for (uint32_t i = 0; i < tokens.size(); ++i) tokens[i] = 7 * i + 1;
  const auto keys = Client::ComputeKeys(*ns, tokens);
  PutOptions put;
  put.num_tokens = 16;
  const auto kv0 = cli::SyntheticKv(ns->layout, 16, 10);
  CallStats stats;
  ASSERT_TRUE(c->Put("shm", keys[0], kv0, put, {{}, &stats}).ok());
  EXPECT_EQ(stats.bytes_sent, kv0.size());
  EXPECT_EQ(shm_bytes("put"), kv0.size());
  auto got = c->Get("shm", keys[0], {}, {{}, &stats});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->data, kv0);
  EXPECT_EQ(got->num_tokens, 16u);
  EXPECT_EQ(stats.bytes_received, kv0.size());
  EXPECT_EQ(shm_bytes("get"), kv0.size());
  GetOptions as_payload;
  as_payload.format = DataFormat::kPayload;
  auto payload = c->Get("shm", keys[0], as_payload);
  ASSERT_TRUE(payload.ok()) << payload.status();
  EXPECT_EQ(shm_bytes("get"), kv0.size() + payload->data.size());
  EXPECT_EQ(c->Get("shm", keys[3]).status().code(), absl::StatusCode::kNotFound);

  // Off, too small a region, too small a Get block: the socket, same answers, no shm bytes.
  const double put_before = shm_bytes("put"), get_before = shm_bytes("get");
  ClientOptions off = Options();
  off.shared_memory_bytes = 0;
  ClientOptions tiny = Options();
  tiny.shared_memory_bytes = 8 << 10;         // a 16 KiB value does not fit
  ClientOptions small_get = Options();
  small_get.shared_memory_get_bytes = 4096;   // the answer does not fit the Get block
  uint64_t seed = 20;
  for (const ClientOptions& o : {off, tiny, small_get}) {
    auto other = Connect(o);
    ASSERT_NE(other, nullptr);
    const auto kv = cli::SyntheticKv(ns->layout, 16, seed++);
    put.first_position = 16;
    ASSERT_TRUE(other->Put("shm", keys[1], kv, put).ok());
    auto back = other->Get("shm", keys[1]);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->data, kv);
  }
  // small_get's Put went through shared memory (the region is big enough), nothing else did.
  EXPECT_EQ(shm_bytes("put") - put_before, kv0.size());
  EXPECT_EQ(shm_bytes("get"), get_before);

  // Many threads on one Client: each its own values, all through shared memory.
  const double put_mid = shm_bytes("put");
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        std::vector<uint32_t> own(16, static_cast<uint32_t>(1000 * t + i));
        const auto key = Client::ComputeKeys(*ns, own).at(0);
        const auto kv = cli::SyntheticKv(ns->layout, 16, 100 + 10 * t + i);
        PutOptions p;
        p.num_tokens = 16;
        auto r = c->Put("shm", key, kv, p);
        auto g = c->Get("shm", key);
        if (!r.ok() || !g.ok() || g->data != kv) bad.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(shm_bytes("put") - put_mid, 80.0 * kv0.size());

  // A restart: the old region is gone; the next call registers again and goes through it.
  daemon_->Signal(SIGTERM);
  ASSERT_EQ(daemon_->WaitExit(), 0);
  StartDaemon();
  const auto kv2 = cli::SyntheticKv(ns->layout, 16, 30);
  put.first_position = 32;
  auto after = c->Put("shm", keys[2], kv2, put, {std::chrono::milliseconds(10000), nullptr});
  ASSERT_TRUE(after.ok()) << after.status();
  auto back = c->Get("shm", keys[2]);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->data, kv2);
  EXPECT_EQ(regions(), 1);
  EXPECT_GE(shm_bytes("put") + shm_bytes("get"), kv2.size());
}

TEST_F(SdkTest, TokenIsRequiredAndChecked) {
  daemon_->env.push_back("KVTIER_TOKEN=s3cret-token");
  StartDaemon();
  ClientOptions o = Options();
  o.retry.max_attempts = 1;
  auto none = Connect(o);
  ASSERT_NE(none, nullptr);
  auto r = none->ListNamespaces();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated) << r.status();
  EXPECT_NE(std::string(r.status().message()).find("token"), std::string::npos);
  o.token = "wrong";
  EXPECT_EQ(Connect(o)->ListNamespaces().status().code(), absl::StatusCode::kUnauthenticated);
  o.token = "s3cret-token";
  auto ok = Connect(o)->ListNamespaces();
  EXPECT_TRUE(ok.ok()) << ok.status();
}

// TCP with TLS (a self-signed certificate made by the openssl tool) plus a token.
TEST_F(SdkTest, TlsOverTcpWithToken) {
  const std::string cert = dir_.path() + "/cert.pem", key = dir_.path() + "/key.pem";
  const std::string cmd =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext "
      "subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " + key + " -out " + cert +
      " >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "the openssl tool is not available";
  daemon_->flags.push_back("--server.tls_cert_file=" + cert);
  daemon_->flags.push_back("--server.tls_key_file=" + key);
  daemon_->env.push_back("KVTIER_TOKEN=tls-token");
  StartDaemon();
  std::ifstream in(cert);
  std::stringstream pem;
  pem << in.rdbuf();
  ClientOptions o;
  o.target = "127.0.0.1:" + std::to_string(daemon_->tcp_port());
  o.tls = true;
  o.tls_root_certs_pem = pem.str();
  o.tls_server_name = "localhost";
  o.token = "tls-token";
  auto c = Connect(o);
  ASSERT_NE(c, nullptr);
  auto ns = c->CreateNamespace(Spec("tls"));
  ASSERT_TRUE(ns.ok()) << ns.status();
  std::vector<uint32_t> tokens(16, 3);
  const auto key0 = Client::ComputeKeys(*ns, tokens).at(0);
  const auto kv = cli::SyntheticKv(ns->layout, 16, 4);
  PutOptions put;
  put.num_tokens = 16;
  ASSERT_TRUE(c->Put("tls", key0, kv, put).ok());
  auto got = c->Get("tls", key0);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->data, kv);
  // A plaintext client cannot talk to the TLS listener.
  ClientOptions plain = o;
  plain.tls = false;
  plain.connect_timeout = std::chrono::milliseconds(500);
  auto p = Client::Connect(plain);
  if (p.ok()) {
    EXPECT_FALSE((*p)->ListNamespaces({std::chrono::milliseconds(1000), nullptr}).ok());
  }
}

}  // namespace
}  // namespace kvtier::client
