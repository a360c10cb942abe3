// Integration: every kvtier.v1 RPC against the real kvtierd (Unix socket), the bad inputs of
// RELIABILITY.md items 11-13 (oversized, wrong shapes, bad codec params, count mismatches, a Put
// cancelled mid-stream never visible, a 1 ms deadline on a large Get), and concurrent clients.
#include <atomic>
#include <thread>

#include "daemon_process.h"
#include "gtest/gtest.h"
#include <cstring>

#include "kvtier/kernels/codec.h"
#include "kvtier/kernels/compacted.h"
#include "rpc_util.h"

namespace kvtier {
namespace {

using testing::DaemonProcess;
using testing::TempDir;
using v1::DATA_FORMAT_PAYLOAD;
using v1::DATA_FORMAT_TENSOR;

constexpr uint32_t kTpc = 16;  // tokens per chunk of the small namespaces

class RpcTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    daemon_ = new DaemonProcess(KVTIER_KVTIERD, dir_->path());
    daemon_->flags = {"--server.max_message_bytes=1179648", "--server.max_value_bytes=33554432",
                      "--server.max_keys_per_request=4096"};
    ASSERT_TRUE(daemon_->Start()) << daemon_->ReadLog();
    auto stub = daemon_->Stub();
    for (const char* codec : {"raw", "fp8"}) {
      ASSERT_TRUE(CreateNs(stub.get(), codec, codec, rpc::MhaLayout(2, 2, 2, 64), kTpc).ok());
    }
    // 16 KiB per token x 1024 tokens = 16 MiB chunks, for the deadline test.
    ASSERT_TRUE(CreateNs(stub.get(), "big", "raw", rpc::MhaLayout(4, 8, 8, 128), 1024).ok());
  }
  static void TearDownTestSuite() {
    delete daemon_;
    delete dir_;
  }

  static grpc::Status CreateNs(v1::KvTier::Stub* stub, const std::string& name,
                               const std::string& codec, const v1::Layout& layout, uint32_t tpc,
                               v1::CreateNamespaceResponse* out = nullptr) {
    grpc::ClientContext ctx;
    v1::CreateNamespaceRequest req;
    req.mutable_namespace_()->set_name(name);
    req.mutable_namespace_()->set_codec(codec);
    *req.mutable_namespace_()->mutable_layout() = layout;
    req.mutable_namespace_()->set_tokens_per_chunk(tpc);
    req.mutable_namespace_()->set_salt("salt");
    v1::CreateNamespaceResponse resp;
    grpc::Status s = stub->CreateNamespace(&ctx, req, &resp);
    if (out) *out = resp;
    return s;
  }

  static std::string Chunk(uint64_t seed, uint32_t tokens = kTpc) {
    return rpc::SyntheticFp16(rpc::TensorBytes(rpc::MhaLayout(2, 2, 2, 64), tokens), seed);
  }

  static v1::LookupResponse Lookup(v1::KvTier::Stub* stub, const std::string& ns,
                                   const std::vector<std::string>& keys, uint32_t lease_ms,
                                   grpc::Status* status) {
    grpc::ClientContext ctx;
    v1::LookupRequest req;
    req.set_namespace_(ns);
    for (const auto& k : keys) req.add_keys(k);
    req.set_lease_ms(lease_ms);
    v1::LookupResponse resp;
    *status = stub->Lookup(&ctx, req, &resp);
    return resp;
  }

  static TempDir* dir_;
  static DaemonProcess* daemon_;
};
TempDir* RpcTest::dir_ = nullptr;
DaemonProcess* RpcTest::daemon_ = nullptr;

TEST_F(RpcTest, HealthIsServing) {
  auto h = daemon_->Health();
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(*h, grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(RpcTest, Namespaces) {
  auto stub = daemon_->Stub();
  v1::CreateNamespaceResponse r;
  ASSERT_TRUE(CreateNs(stub.get(), "ns-a", "kivi:b=2,g=32", rpc::MhaLayout(2, 2, 2, 64), 0, &r)
                  .ok());
  EXPECT_TRUE(r.created());
  EXPECT_EQ(r.namespace_().tokens_per_chunk(), 256u);  // daemon default filled in
  ASSERT_TRUE(CreateNs(stub.get(), "ns-a", "kivi:b=2,g=32", rpc::MhaLayout(2, 2, 2, 64), 0, &r)
                  .ok());
  EXPECT_FALSE(r.created());  // idempotent
  EXPECT_EQ(CreateNs(stub.get(), "ns-a", "fp8", rpc::MhaLayout(2, 2, 2, 64), 0).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);

  grpc::ClientContext ctx;
  v1::GetNamespaceRequest g;
  g.set_name("ns-a");
  v1::GetNamespaceResponse gr;
  ASSERT_TRUE(stub->GetNamespace(&ctx, g, &gr).ok());
  EXPECT_EQ(gr.namespace_().layout().head_dim(), 64u);
  EXPECT_EQ(gr.namespace_().salt(), "salt");
  grpc::ClientContext ctx2;
  g.set_name("missing");
  EXPECT_EQ(stub->GetNamespace(&ctx2, g, &gr).error_code(), grpc::StatusCode::NOT_FOUND);

  grpc::ClientContext ctx3;
  v1::ListNamespacesResponse lr;
  ASSERT_TRUE(stub->ListNamespaces(&ctx3, {}, &lr).ok());
  std::vector<std::string> names;
  for (const auto& n : lr.namespaces()) names.push_back(n.name());
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_NE(std::find(names.begin(), names.end(), "ns-a"), names.end());
}

TEST_F(RpcTest, BadNamespacesAreInvalidArgument) {
  auto stub = daemon_->Stub();
  for (const char* codec : {"kivi:b=7", "nonsense", "fp8:bits=3", "turboquant:b=9"}) {
    EXPECT_EQ(CreateNs(stub.get(), "bad-codec", codec, rpc::MhaLayout(2, 2, 2, 64), 16)
                  .error_code(),
              grpc::StatusCode::INVALID_ARGUMENT)
        << codec;
  }
  EXPECT_EQ(CreateNs(stub.get(), "bad-layout", "raw", rpc::MhaLayout(0, 2, 2, 64), 16)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(CreateNs(stub.get(), "bad-gqa", "raw", rpc::MhaLayout(2, 3, 4, 64), 16).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(CreateNs(stub.get(), "bad name", "raw", rpc::MhaLayout(2, 2, 2, 64), 16).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::Layout no_dtype = rpc::MhaLayout(2, 2, 2, 64);
  no_dtype.set_dtype(v1::DTYPE_UNSPECIFIED);
  EXPECT_EQ(CreateNs(stub.get(), "bad-dtype", "raw", no_dtype, 16).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(RpcTest, PutLookupGetDeleteRoundTrip) {
  auto stub = daemon_->Stub();
  std::vector<std::string> keys, data;
  for (int i = 0; i < 4; ++i) {
    keys.push_back(rpc::SeedKey(100 + i));
    data.push_back(Chunk(100 + i));
    rpc::CallSettings call;
    call.message_bytes = 5000;  // several messages per value
    auto put = rpc::Put(stub.get(), "raw", keys[i], data[i], DATA_FORMAT_TENSOR, kTpc, call);
    ASSERT_TRUE(put.status.ok()) << put.status.error_message();
    EXPECT_EQ(put.response.tensor_bytes(), data[i].size());
    EXPECT_GT(put.response.stored_bytes(), data[i].size());  // raw = header + body
  }
  // Prefix rule: keys 0,1 hit, 2 missing breaks the run.
  grpc::Status s;
  auto lr = Lookup(stub.get(), "raw", {keys[0], keys[1], rpc::SeedKey(999), keys[3]}, 0, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(lr.prefix_chunks(), 2u);
  EXPECT_EQ(lr.prefix_tokens(), 2u * kTpc);
  ASSERT_EQ(lr.chunks_size(), 2);
  EXPECT_NE(lr.chunks(0).tier(), v1::TIER_UNSPECIFIED);
  EXPECT_EQ(lr.lease_id(), 0u);
  lr = Lookup(stub.get(), "raw", keys, 2000, &s);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(lr.prefix_chunks(), 4u);
  EXPECT_NE(lr.lease_id(), 0u);

  // Tensor format: exactly the bytes we put (raw codec is lossless).
  for (int i = 0; i < 4; ++i) {
    auto g = rpc::Get(stub.get(), "raw", keys[i], DATA_FORMAT_TENSOR, {},
                      i == 3 ? lr.lease_id() : 0);
    ASSERT_TRUE(g.status.ok()) << g.status.error_message();
    EXPECT_TRUE(g.crc_ok);
    EXPECT_EQ(g.data, data[i]);
    EXPECT_EQ(g.header.num_tokens(), kTpc);
    EXPECT_EQ(g.header.codec(), "raw");
  }
  // Payload format: a valid kvtier payload that decodes locally to the same tensor.
  auto p = rpc::Get(stub.get(), "raw", keys[0], DATA_FORMAT_PAYLOAD);
  ASSERT_TRUE(p.status.ok());
  EXPECT_TRUE(p.crc_ok);
  auto bytes = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(p.data.data()), p.data.size());
  auto info = kernels::InspectPayload(bytes);
  ASSERT_TRUE(info.ok()) << info.status();
  std::string decoded(info->DecodedBytes(), '\0');
  ASSERT_TRUE(kernels::Decode(bytes, kernels::DecodeTarget::Contiguous(decoded.data(),
                                                                        info->layout,
                                                                        info->num_tokens))
                  .ok());
  EXPECT_EQ(decoded, data[0]);

  // Delete: gone afterwards; a second delete counts nothing.
  grpc::ClientContext dctx;
  v1::DeleteRequest dreq;
  dreq.set_namespace_("raw");
  dreq.add_keys(keys[3]);
  dreq.add_keys(rpc::SeedKey(12345));
  v1::DeleteResponse dresp;
  ASSERT_TRUE(stub->Delete(&dctx, dreq, &dresp).ok());
  EXPECT_EQ(dresp.deleted(), 1u);
  EXPECT_EQ(rpc::Get(stub.get(), "raw", keys[3], DATA_FORMAT_TENSOR).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(rpc::Get(stub.get(), "nope", keys[0], DATA_FORMAT_TENSOR).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(RpcTest, CodecNamespaceCompressesAndDecodesAtTheLastStep) {
  auto stub = daemon_->Stub();
  const std::string key = rpc::SeedKey(200), data = Chunk(200);
  auto put = rpc::Put(stub.get(), "fp8", key, data, DATA_FORMAT_TENSOR, kTpc);
  ASSERT_TRUE(put.status.ok()) << put.status.error_message();
  EXPECT_LT(put.response.stored_bytes(), data.size() * 3 / 4);  // fp8 about halves fp16
  auto p = rpc::Get(stub.get(), "fp8", key, DATA_FORMAT_PAYLOAD);
  ASSERT_TRUE(p.status.ok());
  EXPECT_EQ(p.data.size(), put.response.stored_bytes());
  EXPECT_EQ(p.header.codec(), "fp8");
  auto t = rpc::Get(stub.get(), "fp8", key, DATA_FORMAT_TENSOR);
  ASSERT_TRUE(t.status.ok());
  EXPECT_TRUE(t.crc_ok);
  ASSERT_EQ(t.data.size(), data.size());
  // The daemon's decode equals decoding its payload ourselves.
  auto bytes = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(p.data.data()), p.data.size());
  auto info = kernels::InspectPayload(bytes);
  ASSERT_TRUE(info.ok());
  std::string local(info->DecodedBytes(), '\0');
  ASSERT_TRUE(kernels::Decode(bytes, kernels::DecodeTarget::Contiguous(
                                         local.data(), info->layout, info->num_tokens))
                  .ok());
  EXPECT_EQ(t.data, local);
}

TEST_F(RpcTest, PutOfAnEncodedPayload) {
  auto stub = daemon_->Stub();
  const std::string data = Chunk(300);
  kernels::ChunkInput in;
  in.data = data.data();
  in.layout = kernels::KvLayout::Mha(2, 2, 2, 64);
  in.num_tokens = kTpc;
  std::vector<uint8_t> payload;
  ASSERT_TRUE(kernels::Encode(*kernels::CodecParams::Parse("fp8"), in, &payload).ok());
  const std::string bytes(payload.begin(), payload.end());
  const std::string key = rpc::SeedKey(300);
  auto put = rpc::Put(stub.get(), "fp8", key, bytes, DATA_FORMAT_PAYLOAD, 0);
  ASSERT_TRUE(put.status.ok()) << put.status.error_message();
  auto g = rpc::Get(stub.get(), "fp8", key, DATA_FORMAT_PAYLOAD);
  ASSERT_TRUE(g.status.ok());
  EXPECT_EQ(g.data, bytes);

  // A payload of another codec or layout than the namespace's is refused.
  EXPECT_EQ(rpc::Put(stub.get(), "raw", rpc::SeedKey(301), bytes, DATA_FORMAT_PAYLOAD, 0)
                .status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // A corrupted payload (stream CRC correct, payload's own checksum wrong) is refused.
  std::string corrupt = bytes;
  corrupt[corrupt.size() / 2] ^= 0x40;
  auto bad = rpc::Put(stub.get(), "fp8", rpc::SeedKey(302), corrupt, DATA_FORMAT_PAYLOAD, 0);
  EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(rpc::Get(stub.get(), "fp8", rpc::SeedKey(302), DATA_FORMAT_PAYLOAD)
                .status.error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(RpcTest, PinUnpinStats) {
  auto stub = daemon_->Stub();
  const std::string key = rpc::SeedKey(400);
  ASSERT_TRUE(rpc::Put(stub.get(), "raw", key, Chunk(400), DATA_FORMAT_TENSOR, kTpc).status.ok());
  {
    grpc::ClientContext ctx;
    v1::PinRequest req;
    req.set_namespace_("raw");
    req.add_keys(key);
    req.add_keys(rpc::SeedKey(401));  // absent: skipped
    v1::PinResponse resp;
    ASSERT_TRUE(stub->Pin(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.pinned(), 1u);
  }
  {
    grpc::ClientContext ctx;
    v1::StatsResponse resp;
    ASSERT_TRUE(stub->Stats(&ctx, {}, &resp).ok());
    EXPECT_GE(resp.pinned_chunks(), 1u);
    EXPECT_GE(resp.namespaces(), 3u);
    EXPECT_GE(resp.tiers_size(), 2);  // host + disk
    EXPECT_FALSE(resp.version().empty());
  }
  {
    grpc::ClientContext ctx;
    v1::UnpinRequest req;
    req.set_namespace_("raw");
    req.add_keys(key);
    v1::UnpinResponse resp;
    ASSERT_TRUE(stub->Unpin(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.unpinned(), 1u);
  }
}

TEST_F(RpcTest, CompactStoresASelectedContext) {
  auto stub = daemon_->Stub();
  constexpr uint32_t kTokens = 64;
  const v1::Layout layout = rpc::MhaLayout(2, 2, 2, 64);
  const std::string kv = rpc::SyntheticFp16(rpc::TensorBytes(layout, kTokens), 900);
  auto compact = [&](const std::string& key, const std::string& method, const std::string& queries,
                     v1::CompactResponse* resp) {
    grpc::ClientContext ctx;
    v1::CompactRequest req;
    req.set_namespace_("raw");
    req.set_context_key(key);
    req.set_method(method);
    req.set_kv(kv);
    req.set_num_tokens(kTokens);
    req.set_observation_queries(queries);
    return stub->Compact(&ctx, req, resp);
  };
  v1::CompactResponse resp;
  // StreamingLLM: 4 sinks + 12 recent tokens in every layer and head.
  grpc::Status s = compact(rpc::SeedKey(901), "streamingllm:sink=4,recent=12", "", &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.kept_tokens(), 16u);
  auto g = rpc::Get(stub.get(), "raw", rpc::SeedKey(901), DATA_FORMAT_PAYLOAD);
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  EXPECT_EQ(g.header.num_tokens(), kTokens);
  auto ctx = kernels::DecodeCompacted(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(g.data.data()), g.data.size()));
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  auto kept = ctx->selection.Kept(1, 1);
  ASSERT_EQ(kept.size(), 16u);
  EXPECT_EQ(kept[0], 0u);
  EXPECT_EQ(kept[4], kTokens - 12);
  // Raw inner codec: the kept K vector of (layer 1, head 1, token kept[5]) is the source's.
  const size_t vec = 64 * 2;
  const size_t src_off = ((1 * 2 + 0) * 2 + 1) * kTokens * vec + kept[5] * vec;  // K of layer 1
  EXPECT_EQ(std::memcmp(ctx->Vector(1, 0, 1, 5), kv.data() + src_off, vec), 0);
  // A compacted context is fetched as its payload, not as a tensor.
  EXPECT_EQ(rpc::Get(stub.get(), "raw", rpc::SeedKey(901), DATA_FORMAT_TENSOR).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // SnapKV with an 8-query observation window keeps 16 tokens (window included).
  const std::string queries = rpc::SyntheticFp16(2 * 2 * 8 * 64 * 2, 902);
  s = compact(rpc::SeedKey(902), "snapkv:budget=16,window=8", queries, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.kept_tokens(), 16u);
  EXPECT_GT(resp.stored_bytes(), 0u);

  // Bad methods and shapes.
  EXPECT_EQ(compact(rpc::SeedKey(903), "snapkv:budget=16,window=8", queries.substr(2), &resp)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(compact(rpc::SeedKey(903), "magic:budget=1", "", &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(compact(rpc::SeedKey(903), "streamingllm:sink=4,colour=blue", "", &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(compact(rpc::SeedKey(903), "streamingllm:sink=40,recent=40", "", &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);  // more than the prompt
}

// RELIABILITY.md 11: oversized or malformed input is rejected cheaply, memory flat.
TEST_F(RpcTest, MalformedPutsAreRejected) {
  auto stub = daemon_->Stub();
  const std::string data = Chunk(500);
  // Wrong shape: total_bytes not the layout's bytes for num_tokens.
  EXPECT_EQ(rpc::Put(stub.get(), "raw", rpc::SeedKey(500), data.substr(100), DATA_FORMAT_TENSOR,
                     kTpc)
                .status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // More tokens than a chunk holds.
  EXPECT_EQ(rpc::Put(stub.get(), "raw", rpc::SeedKey(501), Chunk(501, 2 * kTpc),
                     DATA_FORMAT_TENSOR, 2 * kTpc)
                .status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // Key of the wrong length; unknown namespace.
  EXPECT_EQ(rpc::Put(stub.get(), "raw", "short", data, DATA_FORMAT_TENSOR, kTpc)
                .status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(rpc::Put(stub.get(), "nope", rpc::SeedKey(502), data, DATA_FORMAT_TENSOR, kTpc)
                .status.error_code(),
            grpc::StatusCode::NOT_FOUND);

  // Byte-count and checksum mismatches in the stream itself.
  auto raw_put = [&](const std::string& key, uint64_t declared, uint32_t crc,
                     const std::vector<std::string>& pieces, bool header_twice = false) {
    grpc::ClientContext ctx;
    v1::PutResponse resp;
    auto w = stub->Put(&ctx, &resp);
    v1::PutRequest m;
    auto* h = m.mutable_header();
    h->set_namespace_("raw");
    h->set_key(key);
    h->set_format(DATA_FORMAT_TENSOR);
    h->set_num_tokens(kTpc);
    h->set_total_bytes(declared);
    h->set_crc32c(crc);
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (i > 0 && !header_twice) m.clear_header();
      m.set_data(pieces[i]);
      if (!w->Write(m)) break;
    }
    w->WritesDone();
    return w->Finish();
  };
  const uint32_t crc = rpc::Crc32c(data);
  const std::string half = data.substr(0, data.size() / 2);
  const std::string rest = data.substr(data.size() / 2);
  EXPECT_EQ(raw_put(rpc::SeedKey(510), data.size(), crc, {half}).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);  // stream ends early
  EXPECT_EQ(raw_put(rpc::SeedKey(511), data.size(), crc, {half, rest, "x"}).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);  // more than declared
  EXPECT_EQ(raw_put(rpc::SeedKey(512), data.size(), crc ^ 1, {half, rest}).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);  // checksum mismatch
  EXPECT_EQ(raw_put(rpc::SeedKey(513), data.size(), crc, {half, rest}, true).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);  // header repeated
  EXPECT_TRUE(raw_put(rpc::SeedKey(514), data.size(), crc, {half, rest}).ok());
  grpc::Status s;
  auto lr = Lookup(stub.get(), "raw", {rpc::SeedKey(510)}, 0, &s);
  EXPECT_EQ(lr.prefix_chunks(), 0u);
  for (int k = 511; k <= 513; ++k) {
    EXPECT_EQ(Lookup(stub.get(), "raw", {rpc::SeedKey(k)}, 0, &s).prefix_chunks(), 0u) << k;
  }

  // Lookup: too many keys, a key of the wrong size.
  std::vector<std::string> many(5000, rpc::SeedKey(1));
  Lookup(stub.get(), "raw", many, 0, &s);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  Lookup(stub.get(), "raw", {rpc::SeedKey(1), "abc"}, 0, &s);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(RpcTest, OversizedInputIsRejectedWithFlatMemory) {
  auto stub = daemon_->Stub();
  // Warm up, then measure RSS around many oversized attempts.
  (void)rpc::Put(stub.get(), "raw", rpc::SeedKey(600), Chunk(600), DATA_FORMAT_TENSOR, kTpc);
  const uint64_t rss_before = daemon_->RssBytes();
  const std::string mib(1 << 20, 'x');
  for (int i = 0; i < 40; ++i) {
    // Declared value above max_value_bytes (32 MiB): refused before any data is buffered.
    grpc::ClientContext ctx;
    v1::PutResponse resp;
    auto w = stub->Put(&ctx, &resp);
    v1::PutRequest m;
    auto* h = m.mutable_header();
    h->set_namespace_("big");
    h->set_key(rpc::SeedKey(601));
    h->set_format(DATA_FORMAT_PAYLOAD);
    h->set_total_bytes(1ull << 30);
    m.set_data(mib);
    for (int j = 0; j < 4 && w->Write(m); ++j) m.clear_header();
    w->WritesDone();
    EXPECT_EQ(w->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  // One message above max_message_bytes (1.125 MiB): gRPC refuses it.
  {
    rpc::CallSettings call;
    call.message_bytes = 4 << 20;
    auto put = rpc::Put(stub.get(), "big", rpc::SeedKey(602),
                        rpc::SyntheticFp16(16 << 20, 602), DATA_FORMAT_TENSOR, 1024, call);
    EXPECT_EQ(put.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  const uint64_t rss_after = daemon_->RssBytes();
  EXPECT_LT(rss_after, rss_before + (64ull << 20))
      << "RSS grew from " << rss_before << " to " << rss_after;
}

// RELIABILITY.md 12: a streamed Put cancelled mid-stream never becomes visible.
TEST_F(RpcTest, CancelledPutIsNeverVisible) {
  auto stub = daemon_->Stub();
  const std::string key = rpc::SeedKey(700);
  const std::string data = rpc::SyntheticFp16(16 << 20, 700);
  {
    grpc::ClientContext ctx;
    v1::PutResponse resp;
    auto w = stub->Put(&ctx, &resp);
    v1::PutRequest m;
    auto* h = m.mutable_header();
    h->set_namespace_("big");
    h->set_key(key);
    h->set_format(DATA_FORMAT_TENSOR);
    h->set_num_tokens(1024);
    h->set_total_bytes(data.size());
    h->set_crc32c(rpc::Crc32c(data));
    for (int i = 0; i < 8; ++i) {  // half of the 16 MiB
      m.set_data(data.substr(static_cast<size_t>(i) << 20, 1 << 20));
      ASSERT_TRUE(w->Write(m));
      m.clear_header();
    }
    ctx.TryCancel();
    EXPECT_EQ(w->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  grpc::Status s;
  EXPECT_EQ(Lookup(stub.get(), "big", {key}, 0, &s).prefix_chunks(), 0u);
  EXPECT_EQ(rpc::Get(stub.get(), "big", key, DATA_FORMAT_PAYLOAD).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// RELIABILITY.md 13: 1 ms deadline on a large Get -> DEADLINE_EXCEEDED; daemon idle again.
TEST_F(RpcTest, TinyDeadlineOnLargeGet) {
  auto stub = daemon_->Stub();
  const std::string key = rpc::SeedKey(800);
  const std::string data = rpc::SyntheticFp16(16 << 20, 800);
  ASSERT_TRUE(rpc::Put(stub.get(), "big", key, data, DATA_FORMAT_TENSOR, 1024).status.ok());
  rpc::CallSettings call;
  call.timeout = std::chrono::milliseconds(1);
  for (int i = 0; i < 5; ++i) {
    auto g = rpc::Get(stub.get(), "big", key, DATA_FORMAT_TENSOR, call);
    EXPECT_EQ(g.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  // The daemon stops the work: no call left in flight within a second or so.
  double inflight = -1;
  for (int i = 0; i < 100; ++i) {
    auto m = daemon_->ScrapeMetrics();
    ASSERT_TRUE(m.ok()) << m.status();
    inflight = testing::MetricValue(*m, "kvtier_rpcs_in_flight", -1);
    if (inflight == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(inflight, 0);
  auto ok = rpc::Get(stub.get(), "big", key, DATA_FORMAT_TENSOR);
  ASSERT_TRUE(ok.status.ok());
  EXPECT_EQ(ok.data, data);
}

TEST_F(RpcTest, ConcurrentClients) {
  constexpr int kClients = 8, kOps = 20;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      auto stub = daemon_->Stub();  // own channel per client
      for (int i = 0; i < kOps; ++i) {
        const uint64_t seed = 10000 + c * 1000 + i;
        const std::string ns = (i % 2) ? "fp8" : "raw";
        const std::string key = rpc::SeedKey(seed), data = Chunk(seed);
        auto put = rpc::Put(stub.get(), ns, key, data, DATA_FORMAT_TENSOR, kTpc);
        if (!put.status.ok()) { ++failures; continue; }
        auto g = rpc::Get(stub.get(), ns, key, DATA_FORMAT_TENSOR);
        if (!g.status.ok() || !g.crc_ok || g.data.size() != data.size()) ++failures;
        if (ns == "raw" && g.data != data) ++failures;
        grpc::Status s;
        if (Lookup(stub.get(), ns, {key}, 0, &s).prefix_chunks() != 1) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace kvtier
