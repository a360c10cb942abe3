// Same-node shared memory against the real kvtierd, at the wire level (kvtier/common/
// shm_protocol.h and the `shm` fields of kvtier.v1): registering a sealed memfd, Put and Get
// naming ranges of it through gRPC and through the call channel, and every way it can be misused
// (unsealed or non-memfd descriptors, wrong token, unknown handles, ranges outside the region,
// lengths that disagree, a wrong CRC, answers that do not fit), each refused with a clear status
// and nothing stored. A region goes away with its registration connection.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "daemon_process.h"
#include "gtest/gtest.h"
#include "kvtier/common/crc32c.h"
#include "kvtier/common/shm_protocol.h"
#include "kvtier/kernels/codec.h"
#include "rpc_util.h"

namespace kvtier {
namespace {

using testing::DaemonProcess;
using testing::TempDir;

constexpr size_t kRegionBytes = 4 << 20;
constexpr uint32_t kTokens = 16;

// A connected SOCK_SEQPACKET socket to `path` (-1 on failure).
int Connect(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// A memfd of `bytes`, sealed against shrinking when `seal`.
int MakeMemfd(size_t bytes, bool seal) {
  const int fd = ::memfd_create("shm-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) return -1;
  if (seal && ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) return -1;
  return fd;
}

// Sends one packet (with `fd` attached when >= 0) and reads the reply packet.
absl::StatusOr<std::string> Exchange(int sock, const std::string& packet, int fd = -1) {
  if (absl::Status s = shm::SendPacket(sock, packet, fd); !s.ok()) return s;
  std::string reply;
  int got = -1;
  absl::Status s = shm::ReceivePacket(sock, &reply, &got);
  if (got >= 0) ::close(got);
  if (!s.ok()) return s;
  return reply;
}

// A registered region: the registration connection, the mapping and the handle.
struct Region {
  int sock = -1;
  int memfd = -1;
  uint8_t* base = nullptr;
  std::string handle;
  ~Region() {
    if (base != nullptr) ::munmap(base, kRegionBytes);
    if (memfd >= 0) ::close(memfd);
    if (sock >= 0) ::close(sock);
  }
};

class SharedMemoryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    daemon_ = new DaemonProcess(KVTIER_KVTIERD, dir_->path());
    daemon_->env = {"KVTIER_TOKEN=secret-token"};
    ASSERT_TRUE(daemon_->Start()) << daemon_->ReadLog();
    grpc::ClientContext ctx;
    rpc::Prepare(&ctx, Settings());
    v1::CreateNamespaceRequest req;
    req.mutable_namespace_()->set_name("ns");
    req.mutable_namespace_()->set_codec("raw");
    *req.mutable_namespace_()->mutable_layout() = rpc::MhaLayout(2, 2, 2, 64);
    req.mutable_namespace_()->set_tokens_per_chunk(kTokens);
    v1::CreateNamespaceResponse resp;
    ASSERT_TRUE(daemon_->Stub()->CreateNamespace(&ctx, req, &resp).ok());
    // 32 layers x 8 KV heads x 128 dims fp16: 2 MiB per 16 tokens, encoded with TurboQuant.
    grpc::ClientContext ctx2;
    rpc::Prepare(&ctx2, Settings());
    req.mutable_namespace_()->set_name("tq");
    req.mutable_namespace_()->set_codec("turboquant:b=3");
    *req.mutable_namespace_()->mutable_layout() = rpc::MhaLayout(32, 8, 8, 128);
    ASSERT_TRUE(daemon_->Stub()->CreateNamespace(&ctx2, req, &resp).ok());
  }
  static void TearDownTestSuite() {
    delete daemon_;
    delete dir_;
  }
  static rpc::CallSettings Settings() {
    rpc::CallSettings s;
    s.token = "secret-token";
    return s;
  }
  static std::string SocketPath() { return shm::SocketPathFor(daemon_->socket_path()); }

  // Registers a fresh sealed region; fails the test otherwise.
  static void Register(Region* r) {
    r->sock = Connect(SocketPath());
    ASSERT_GE(r->sock, 0);
    r->memfd = MakeMemfd(kRegionBytes, true);
    ASSERT_GE(r->memfd, 0);
    auto reply = Exchange(r->sock, shm::EncodeRequest("secret-token"), r->memfd);
    ASSERT_TRUE(reply.ok()) << reply.status();
    auto decoded = shm::DecodeReply(*reply);
    ASSERT_TRUE(decoded.ok());
    ASSERT_TRUE(decoded->status.ok()) << decoded->status;
    EXPECT_EQ(decoded->region_bytes, kRegionBytes);
    ASSERT_EQ(decoded->handle.size(), shm::kHandleBytes);
    r->handle = decoded->handle;
    void* p = ::mmap(nullptr, kRegionBytes, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd, 0);
    ASSERT_NE(p, MAP_FAILED);
    r->base = static_cast<uint8_t*>(p);
  }

  // The registration's status for a given descriptor and token.
  static absl::Status RegisterStatus(int memfd, const std::string& token) {
    const int sock = Connect(SocketPath());
    auto reply = Exchange(sock, shm::EncodeRequest(token), memfd);
    ::close(sock);
    if (!reply.ok()) return reply.status();
    auto decoded = shm::DecodeReply(*reply);
    return decoded.ok() ? decoded->status : decoded.status();
  }

  // A raw-codec payload of kTokens tokens (seeded content).
  static std::string Payload(uint64_t seed) {
    const std::string tensor =
        rpc::SyntheticFp16(rpc::TensorBytes(rpc::MhaLayout(2, 2, 2, 64), kTokens), seed);
    kernels::ChunkInput in;
    in.data = tensor.data();
    in.layout = kernels::KvLayout::Mha(2, 2, 2, 64);
    in.num_tokens = kTokens;
    std::vector<uint8_t> p;
    EXPECT_TRUE(kernels::Encode(*kernels::CodecParams::Parse("raw"), in, &p).ok());
    return std::string(p.begin(), p.end());
  }

  static v1::PutHeader PutHeader(const std::string& key, const std::string& value,
                                 const Region& r, uint64_t offset) {
    v1::PutHeader h;
    h.set_namespace_("ns");
    h.set_key(key);
    h.set_format(v1::DATA_FORMAT_PAYLOAD);
    h.set_total_bytes(value.size());
    h.mutable_shm()->set_region(r.handle);
    h.mutable_shm()->set_offset(offset);
    h.mutable_shm()->set_length(value.size());
    return h;
  }

  // A gRPC Put whose stream carries only `header`.
  static grpc::Status GrpcPut(const v1::PutHeader& header) {
    grpc::ClientContext ctx;
    rpc::Prepare(&ctx, Settings());
    v1::PutResponse resp;
    auto writer = daemon_->Stub()->Put(&ctx, &resp);
    v1::PutRequest msg;
    *msg.mutable_header() = header;
    writer->Write(msg);
    writer->WritesDone();
    return writer->Finish();
  }

  static bool Stored(const std::string& key) {
    return rpc::Get(daemon_->Stub().get(), "ns", key, v1::DATA_FORMAT_PAYLOAD, Settings())
        .status.ok();
  }

  static double Metric(const std::string& name) {
    auto m = daemon_->ScrapeMetrics();
    return m.ok() ? testing::MetricValue(*m, name) : -1;
  }

  static TempDir* dir_;
  static DaemonProcess* daemon_;
};
TempDir* SharedMemoryTest::dir_ = nullptr;
DaemonProcess* SharedMemoryTest::daemon_ = nullptr;

TEST_F(SharedMemoryTest, PutAndGetThroughGrpcMoveTheBytesThroughTheRegion) {
  Region r;
  ASSERT_NO_FATAL_FAILURE(Register(&r));
  const double put_bytes = Metric("kvtier_shared_memory_bytes_total{direction=\"put\"}");
  const std::string value = Payload(1), key = rpc::SeedKey(1);
  std::memcpy(r.base + 4096, value.data(), value.size());
  v1::PutHeader h = PutHeader(key, value, r, 4096);
  ASSERT_TRUE(GrpcPut(h).ok());
  EXPECT_EQ(Metric("kvtier_shared_memory_bytes_total{direction=\"put\"}") - put_bytes,
            value.size());
  // Changing the region afterwards does not change what was stored.
  std::memset(r.base + 4096, 0x5A, value.size());
  auto plain = rpc::Get(daemon_->Stub().get(), "ns", key, v1::DATA_FORMAT_PAYLOAD, Settings());
  ASSERT_TRUE(plain.status.ok()) << plain.status.error_message();
  EXPECT_EQ(plain.data, value);
  EXPECT_FALSE(plain.header.in_shared_memory());

  // Get into the region: only the header is streamed, the bytes are at the range's start.
  grpc::ClientContext ctx;
  rpc::Prepare(&ctx, Settings());
  v1::GetRequest req;
  req.set_namespace_("ns");
  req.set_key(key);
  req.set_format(v1::DATA_FORMAT_PAYLOAD);
  req.mutable_shm()->set_region(r.handle);
  req.mutable_shm()->set_offset(1 << 20);
  req.mutable_shm()->set_length(1 << 20);
  std::memset(r.base + (1 << 20), 0, value.size());
  auto reader = daemon_->Stub()->Get(&ctx, req);
  v1::GetResponse msg;
  int messages = 0;
  v1::GetHeader header;
  while (reader->Read(&msg)) {
    if (messages++ == 0) header = msg.header();
    EXPECT_TRUE(msg.data().empty());
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(messages, 1);
  EXPECT_TRUE(header.in_shared_memory());
  ASSERT_EQ(header.total_bytes(), value.size());
  EXPECT_EQ(0, std::memcmp(r.base + (1 << 20), value.data(), value.size()));
  EXPECT_EQ(header.crc32c(), Crc32c(value.data(), value.size()));

  // A range too small for the answer: streamed as usual.
  req.mutable_shm()->set_length(value.size() - 1);
  grpc::ClientContext ctx2;
  rpc::Prepare(&ctx2, Settings());
  auto reader2 = daemon_->Stub()->Get(&ctx2, req);
  std::string streamed;
  bool first = true;
  while (reader2->Read(&msg)) {
    if (first) {
      EXPECT_FALSE(msg.header().in_shared_memory());
    }
    first = false;
    streamed += msg.data();
  }
  ASSERT_TRUE(reader2->Finish().ok());
  EXPECT_EQ(streamed, value);
}

TEST_F(SharedMemoryTest, BadRegionsAreRefusedAtRegistration) {
  const int unsealed = MakeMemfd(kRegionBytes, false);
  absl::Status s = RegisterStatus(unsealed, "secret-token");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("F_SEAL_SHRINK"), std::string::npos) << s;
  ::close(unsealed);

  const std::string path = dir_->path() + "/plain-file";
  const int file = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_EQ(::ftruncate(file, kRegionBytes), 0);
  s = RegisterStatus(file, "secret-token");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  ::close(file);

  const int sealed = MakeMemfd(kRegionBytes, true);
  s = RegisterStatus(sealed, "wrong-token");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << s;
  EXPECT_EQ(s.message().find("wrong-token"), std::string::npos) << "token echoed: " << s;
  s = RegisterStatus(-1, "secret-token");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  const double refused = Metric("kvtier_shared_memory_registrations_refused_total");
  EXPECT_GE(refused, 4);
  // A correct registration still works after all that.
  EXPECT_TRUE(RegisterStatus(sealed, "secret-token").ok());
  ::close(sealed);
}

TEST_F(SharedMemoryTest, BadRangesAndChecksumsStoreNothing) {
  Region r;
  ASSERT_NO_FATAL_FAILURE(Register(&r));
  const std::string value = Payload(2);
  std::memcpy(r.base, value.data(), value.size());
  const std::string key = rpc::SeedKey(2);

  v1::PutHeader h = PutHeader(key, value, r, 0);
  h.mutable_shm()->set_region(std::string(shm::kHandleBytes, 'x'));  // not registered
  grpc::Status s = GrpcPut(h);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();

  h = PutHeader(key, value, r, kRegionBytes - value.size() + 1);  // one byte past the end
  s = GrpcPut(h);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_NE(s.error_message().find("outside the region"), std::string::npos);

  h = PutHeader(key, value, r, ~uint64_t{0} - 10);  // offset + length overflows
  EXPECT_EQ(GrpcPut(h).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  h = PutHeader(key, value, r, 0);
  h.mutable_shm()->set_length(value.size() - 1);  // disagrees with total_bytes
  EXPECT_EQ(GrpcPut(h).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  h = PutHeader(key, value, r, 0);
  h.set_crc32c(Crc32c(value.data(), value.size()) ^ 1);  // a CRC, and a wrong one
  s = GrpcPut(h);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();

  r.base[value.size() / 2] ^= 0xFF;  // the payload's own checksum no longer matches
  h = PutHeader(key, value, r, 0);
  s = GrpcPut(h);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_FALSE(Stored(key));

  r.base[value.size() / 2] ^= 0xFF;  // repaired: with the right CRC it is accepted
  h.set_crc32c(Crc32c(value.data(), value.size()));
  EXPECT_TRUE(GrpcPut(h).ok());
  EXPECT_TRUE(Stored(key));
}

TEST_F(SharedMemoryTest, RegionGoesAwayWithItsConnection) {
  const double before = Metric("kvtier_shared_memory_regions");
  std::string handle;
  std::string value = Payload(3);
  {
    Region r;
    ASSERT_NO_FATAL_FAILURE(Register(&r));
    handle = r.handle;
    EXPECT_EQ(Metric("kvtier_shared_memory_regions"), before + 1);
    EXPECT_GE(Metric("kvtier_shared_memory_mapped_bytes"), kRegionBytes);
  }  // closes the registration connection
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = Metric("kvtier_shared_memory_regions") == before;
    if (!gone) usleep(20000);
  }
  EXPECT_TRUE(gone);
  Region stale;
  stale.handle = handle;
  const grpc::Status s = GrpcPut(PutHeader(rpc::SeedKey(3), value, stale, 0));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_FALSE(Stored(rpc::SeedKey(3)));
}

TEST_F(SharedMemoryTest, CallChannelServesPutAndGet) {
  Region r;
  ASSERT_NO_FATAL_FAILURE(Register(&r));
  // Attaching needs the token and a registered handle.
  {
    const int bad = Connect(SocketPath());
    auto reply = Exchange(bad, shm::EncodeAttach(r.handle, "wrong-token"));
    ASSERT_TRUE(reply.ok());
    EXPECT_EQ(shm::DecodeReply(*reply)->status.code(), absl::StatusCode::kUnauthenticated);
    ::close(bad);
    const int unknown = Connect(SocketPath());
    reply = Exchange(unknown, shm::EncodeAttach(std::string(16, 'z'), "secret-token"));
    ASSERT_TRUE(reply.ok());
    EXPECT_EQ(shm::DecodeReply(*reply)->status.code(), absl::StatusCode::kFailedPrecondition);
    ::close(unknown);
  }
  const int ch = Connect(SocketPath());
  auto attached = Exchange(ch, shm::EncodeAttach(r.handle, "secret-token"));
  ASSERT_TRUE(attached.ok());
  ASSERT_TRUE(shm::DecodeReply(*attached)->status.ok());

  auto call = [&](shm::Op op, const std::string& body,
                  uint32_t timeout_ms = 0) -> absl::StatusOr<std::string> {
    auto reply = Exchange(ch, shm::EncodeCall(op, timeout_ms, body));
    if (!reply.ok()) return reply.status();
    auto decoded = shm::DecodeCallReply(*reply);
    if (!decoded.ok()) return decoded.status();
    if (!decoded->status.ok()) return decoded->status;
    return decoded->body;
  };

  const std::string value = Payload(4), key = rpc::SeedKey(4);
  std::memcpy(r.base, value.data(), value.size());
  auto put = call(shm::Op::kPut, PutHeader(key, value, r, 0).SerializeAsString());
  ASSERT_TRUE(put.ok()) << put.status();
  v1::PutResponse put_resp;
  ASSERT_TRUE(put_resp.ParseFromString(*put));
  EXPECT_EQ(put_resp.stored_bytes(), value.size());

  v1::GetRequest get;
  get.set_namespace_("ns");
  get.set_key(key);
  get.set_format(v1::DATA_FORMAT_PAYLOAD);
  get.mutable_shm()->set_region(r.handle);
  get.mutable_shm()->set_offset(2 << 20);
  get.mutable_shm()->set_length(1 << 20);
  auto got = call(shm::Op::kGet, get.SerializeAsString());
  ASSERT_TRUE(got.ok()) << got.status();
  v1::GetHeader header;
  ASSERT_TRUE(header.ParseFromString(*got));
  EXPECT_TRUE(header.in_shared_memory());
  ASSERT_EQ(header.total_bytes(), value.size());
  EXPECT_EQ(0, std::memcmp(r.base + (2 << 20), value.data(), value.size()));

  // Errors come back as statuses and the channel stays usable.
  get.mutable_shm()->set_length(value.size() - 1);
  EXPECT_EQ(call(shm::Op::kGet, get.SerializeAsString()).status().code(),
            absl::StatusCode::kResourceExhausted);
  get.set_key(rpc::SeedKey(999));
  get.mutable_shm()->set_length(1 << 20);
  EXPECT_EQ(call(shm::Op::kGet, get.SerializeAsString()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(call(shm::Op::kPut, "not a protobuf \xff\xff").status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::PutHeader no_shm = PutHeader(rpc::SeedKey(5), value, r, 0);
  no_shm.clear_shm();
  EXPECT_EQ(call(shm::Op::kPut, no_shm.SerializeAsString()).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto garbage = Exchange(ch, "garbage packet");
  ASSERT_TRUE(garbage.ok());
  EXPECT_EQ(shm::DecodeCallReply(*garbage)->status.code(), absl::StatusCode::kInvalidArgument);
  get.set_key(key);
  EXPECT_TRUE(call(shm::Op::kGet, get.SerializeAsString()).ok());

  // The caller's deadline travels with the call: a TurboQuant tensor Put (its encode takes
  // milliseconds on the CPU) with 1 ms left is refused before storing; with time left it goes in.
  const std::string tensor = rpc::SyntheticFp16(2 << 20, 7);  // 32 layers x 8 heads x 16 tokens
  std::memcpy(r.base, tensor.data(), tensor.size());
  v1::PutHeader th;
  th.set_namespace_("tq");
  th.set_key(rpc::SeedKey(6));
  th.set_format(v1::DATA_FORMAT_TENSOR);
  th.set_num_tokens(kTokens);
  th.set_total_bytes(tensor.size());
  th.mutable_shm()->set_region(r.handle);
  th.mutable_shm()->set_length(tensor.size());
  EXPECT_EQ(call(shm::Op::kPut, th.SerializeAsString(), 1).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(rpc::Get(daemon_->Stub().get(), "tq", rpc::SeedKey(6), v1::DATA_FORMAT_PAYLOAD,
                     Settings()).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(call(shm::Op::kPut, th.SerializeAsString(), 60000).ok());
  ::close(ch);
}

}  // namespace
}  // namespace kvtier
