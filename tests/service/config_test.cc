// Unit tests of kvtierd's pure logic: options validation (safe listening surface), the config
// file, token comparison and the namespace registry's persistence.
#include <unistd.h>

#include <fstream>

#include "auth.h"
#include "daemon_process.h"
#include "gtest/gtest.h"
#include "kvtier/service/config.h"
#include "kvtier/service/options.h"
#include "namespace_registry.h"

namespace kvtier::service {
namespace {

TEST(OptionsTest, DefaultsAreValidAndLocal) {
  DaemonOptions o;
  o.Finalize();
  EXPECT_TRUE(o.Validate().ok()) << o.Validate();
  EXPECT_TRUE(IsLoopbackAddress(o.server.tcp_address));
  EXPECT_TRUE(IsLoopbackAddress(o.metrics.address));
  EXPECT_EQ(o.storage.disk.path, "./data/rocksdb");
  EXPECT_FALSE(o.server.unix_socket.empty());
}

TEST(OptionsTest, LoopbackDetection) {
  EXPECT_TRUE(IsLoopbackAddress("127.0.0.1:1"));
  EXPECT_TRUE(IsLoopbackAddress("127.8.9.10:80"));
  EXPECT_TRUE(IsLoopbackAddress("[::1]:7470"));
  EXPECT_TRUE(IsLoopbackAddress("localhost:7470"));
  EXPECT_FALSE(IsLoopbackAddress("0.0.0.0:7470"));
  EXPECT_FALSE(IsLoopbackAddress("[::]:7470"));
  EXPECT_FALSE(IsLoopbackAddress("10.0.0.1:7470"));
  EXPECT_FALSE(IsLoopbackAddress("example.com:7470"));
  EXPECT_FALSE(IsLoopbackAddress("127.0.0.1"));  // no port
}

TEST(OptionsTest, PublicAddressNeedsTlsAndToken) {
  ServerOptions s;
  s.tcp_address = "0.0.0.0:7470";
  EXPECT_EQ(s.Validate().code(), absl::StatusCode::kFailedPrecondition);
  s.tls_cert_file = "c.pem";
  s.tls_key_file = "k.pem";
  EXPECT_EQ(s.Validate().code(), absl::StatusCode::kFailedPrecondition);  // TLS, no token
  s.token = "secret";
  EXPECT_TRUE(s.Validate().ok());
  s.tls_cert_file.clear();
  s.tls_key_file.clear();
  EXPECT_EQ(s.Validate().code(), absl::StatusCode::kFailedPrecondition);  // token, no TLS
}

TEST(OptionsTest, RejectsBadLimits) {
  ServerOptions s;
  s.unix_socket.clear();
  s.tcp_address.clear();
  EXPECT_FALSE(s.Validate().ok());
  s = ServerOptions();
  s.stream_message_bytes = s.max_message_bytes;
  EXPECT_FALSE(s.Validate().ok());
  s = ServerOptions();
  s.tcp_address = "nonsense";
  EXPECT_FALSE(s.Validate().ok());
  s = ServerOptions();
  s.tls_cert_file = "only-cert.pem";
  EXPECT_FALSE(s.Validate().ok());
  ServiceOptions v;
  v.gpu_tier = "maybe";
  EXPECT_FALSE(v.Validate().ok());
}

TEST(ConfigTest, AppliesSectionsAndRejectsUnknownKeys) {
  DaemonOptions o;
  ASSERT_TRUE(ApplyConfigText(R"(
[server]
tcp_address = "127.0.0.1:9000"
max_inflight_calls = 7
[storage]
policy = "lru"
[storage.host]
capacity_bytes = 123456
pin_memory = false
[storage.disk]
sync_writes = true
[storage]
)",
                              "inline", &o)
                  .ok() == false);  // duplicate [storage] table is a TOML error
  DaemonOptions p;
  absl::Status s = ApplyConfigText(R"(
[server]
tcp_address = "127.0.0.1:9000"
max_inflight_calls = 7
[storage]
policy = "lru"
demote_high_watermark = 0.9
[storage.host]
capacity_bytes = 123456
pin_memory = false
[storage.disk]
sync_writes = true
)",
                                   "inline", &p);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(p.server.tcp_address, "127.0.0.1:9000");
  EXPECT_EQ(p.server.max_inflight_calls, 7u);
  EXPECT_EQ(p.storage.policy, "lru");
  EXPECT_DOUBLE_EQ(p.storage.demote_high_watermark, 0.9);
  EXPECT_EQ(p.storage.host.capacity_bytes, 123456u);
  EXPECT_FALSE(p.storage.host.pin_memory);
  EXPECT_TRUE(p.storage.disk.sync_writes);

  EXPECT_EQ(ApplyConfigText("[server]\ntcp_adress = \"x\"\n", "t", &p).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyConfigText("[server]\nmax_inflight_calls = \"many\"\n", "t", &p).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyConfigText("[server]\nmax_inflight_calls = -1\n", "t", &p).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyConfigText("[server]\ntoken = \"secret\"\n", "t", &p).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ConfigTest, EveryFieldHasHelpAndAUniqueName) {
  DaemonOptions o;
  std::set<std::string> names;
  for (const ConfigField& f : ConfigFields(&o)) {
    EXPECT_FALSE(f.help.empty()) << f.name;
    EXPECT_TRUE(names.insert(f.name).second) << "duplicate " << f.name;
  }
  EXPECT_GT(names.size(), 30u);
}

TEST(AuthTest, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
  EXPECT_FALSE(ConstantTimeEquals("ab", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", std::string_view("abc\0", 4)));
}

TEST(AuthTest, ChecksBearerToken) {
  TokenAuthenticator off("");
  EXPECT_TRUE(off.Check(nullptr).ok());
  TokenAuthenticator on("s3cret");
  std::string_view good = "Bearer s3cret", bad = "Bearer s3creT", raw = "s3cret";
  EXPECT_TRUE(on.Check(&good).ok());
  EXPECT_EQ(on.Check(nullptr).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(on.Check(&bad).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(on.Check(&raw).code(), absl::StatusCode::kUnauthenticated);
  // The message never echoes the token or the candidate.
  EXPECT_EQ(std::string(on.Check(&bad).message()).find("s3cre"), std::string::npos);
}

NamespaceInfo Llama(const std::string& name) {
  NamespaceInfo n;
  n.name = name;
  n.model_id = "test-model";
  n.layout = kernels::KvLayout::Mha(2, 2, 4, 64);
  n.codec = *kernels::CodecParams::Parse("fp8");
  n.tokens_per_chunk = 16;
  n.salt = std::string("\x00\x01salt", 6);
  return n;
}

TEST(NamespaceRegistryTest, CreateIsIdempotentAndPersists) {
  kvtier::testing::TempDir dir;
  const std::string path = dir.path() + "/namespaces.toml";
  storage::NamespaceId id_a;
  {
    auto reg = NamespaceRegistry::Open(path, 4);
    ASSERT_TRUE(reg.ok()) << reg.status();
    bool created = false;
    auto a = (*reg)->Create(Llama("a"), &created);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_TRUE(created);
    id_a = (*a)->id;
    auto again = (*reg)->Create(Llama("a"), &created);
    ASSERT_TRUE(again.ok());
    EXPECT_FALSE(created);
    EXPECT_EQ((*again)->id, id_a);
    NamespaceInfo other = Llama("a");
    other.tokens_per_chunk = 32;
    EXPECT_EQ((*reg)->Create(other, &created).status().code(), absl::StatusCode::kAlreadyExists);
    ASSERT_TRUE((*reg)->Create(Llama("b"), &created).ok());
  }
  auto reg = NamespaceRegistry::Open(path, 4);
  ASSERT_TRUE(reg.ok()) << reg.status();
  ASSERT_EQ((*reg)->size(), 2u);
  auto a = (*reg)->Get("a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)->id, id_a);
  EXPECT_TRUE((*a)->SameSettings(Llama("a")));
  bool created;
  auto c = (*reg)->Create(Llama("c"), &created);
  ASSERT_TRUE(c.ok());
  EXPECT_NE((*c)->id, id_a);  // ids are never reused
  EXPECT_EQ((*reg)->Get("zzz").status().code(), absl::StatusCode::kNotFound);
}

TEST(NamespaceRegistryTest, RejectsBadNamespaces) {
  auto reg = NamespaceRegistry::Open("", 2);
  ASSERT_TRUE(reg.ok());
  bool created;
  NamespaceInfo n = Llama("bad name!");
  EXPECT_EQ((*reg)->Create(n, &created).status().code(), absl::StatusCode::kInvalidArgument);
  n = Llama("ok");
  n.tokens_per_chunk = 0;
  EXPECT_EQ((*reg)->Create(n, &created).status().code(), absl::StatusCode::kInvalidArgument);
  n = Llama("ok");
  n.layout.num_layers = 0;
  EXPECT_EQ((*reg)->Create(n, &created).status().code(), absl::StatusCode::kInvalidArgument);
  n = Llama("ok");
  n.salt = std::string(300, 'x');
  EXPECT_EQ((*reg)->Create(n, &created).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*reg)->Create(Llama("x1"), &created).ok());
  ASSERT_TRUE((*reg)->Create(Llama("x2"), &created).ok());
  EXPECT_EQ((*reg)->Create(Llama("x3"), &created).status().code(),
            absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace kvtier::service
