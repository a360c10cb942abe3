// The shared-memory registration and call-channel packets (kvtier/common/shm_protocol.h): every
// packet decodes to what was encoded, and every truncated, padded or foreign packet is refused
// with a status instead of being misread. Descriptors travel with a packet over a real
// SOCK_SEQPACKET pair.
#include "kvtier/common/shm_protocol.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

namespace kvtier::shm {
namespace {

TEST(ShmProtocolTest, PacketsRoundTrip) {
  auto token = DecodeRequest(EncodeRequest("tok"));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "tok");
  EXPECT_EQ(ClassifyHello(EncodeRequest("")), Hello::kRegister);

  const std::string handle(kHandleBytes, '\x7f');
  EXPECT_EQ(ClassifyHello(EncodeAttach(handle, "t")), Hello::kAttach);
  auto attach = DecodeAttach(EncodeAttach(handle, "t"));
  ASSERT_TRUE(attach.ok()) << attach.status();
  EXPECT_EQ(attach->handle, handle);
  EXPECT_EQ(attach->token, "t");

  Reply ok;
  ok.handle = handle;
  ok.region_bytes = uint64_t{5} << 32;
  auto r = DecodeReply(EncodeReply(ok));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->status.ok());
  EXPECT_EQ(r->handle, handle);
  EXPECT_EQ(r->region_bytes, uint64_t{5} << 32);
  Reply bad;
  bad.status = absl::FailedPreconditionError("not sealed");
  r = DecodeReply(EncodeReply(bad));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, absl::FailedPreconditionError("not sealed"));

  auto call = DecodeCall(EncodeCall(Op::kGet, 123456, std::string("\0body", 5)));
  ASSERT_TRUE(call.ok());
  EXPECT_EQ(call->op, Op::kGet);
  EXPECT_EQ(call->timeout_ms, 123456u);
  EXPECT_EQ(call->body, std::string("\0body", 5));
  auto reply = DecodeCallReply(EncodeCallReply(absl::OkStatus(), "answer"));
  ASSERT_TRUE(reply.ok());
  EXPECT_TRUE(reply->status.ok());
  EXPECT_EQ(reply->body, "answer");
  reply = DecodeCallReply(EncodeCallReply(absl::NotFoundError("no key"), "ignored"));
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(reply->status, absl::NotFoundError("no key"));
  EXPECT_TRUE(reply->body.empty());
  // A long message is cut to fit one packet.
  EXPECT_LE(EncodeCallReply(absl::InternalError(std::string(1 << 20, 'm')), "").size(),
            kMaxPacketBytes);
  EXPECT_LE(EncodeReply(Reply{absl::InternalError(std::string(1 << 20, 'm')), "", 0}).size(),
            kMaxPacketBytes);
}

TEST(ShmProtocolTest, MalformedPacketsAreRefused) {
  const std::string req = EncodeRequest("token");
  for (size_t n = 0; n < req.size(); ++n) {
    EXPECT_FALSE(DecodeRequest(req.substr(0, n)).ok()) << n;
  }
  EXPECT_FALSE(DecodeRequest(req + "x").ok());
  EXPECT_FALSE(DecodeRequest(EncodeRequest(std::string(kMaxTokenBytes + 1, 't'))).ok());
  const std::string att = EncodeAttach(std::string(kHandleBytes, 'h'), "token");
  for (size_t n = 0; n < att.size(); ++n) EXPECT_FALSE(DecodeAttach(att.substr(0, n)).ok()) << n;
  EXPECT_FALSE(DecodeAttach(req).ok());  // a registration is not an attach
  EXPECT_EQ(ClassifyHello("KVTSHX01"), Hello::kUnknown);
  for (size_t n = 0; n < 13; ++n) {  // magic, op and timeout are all needed
    EXPECT_FALSE(DecodeCall(EncodeCall(Op::kPut, 5, "").substr(0, n)).ok()) << n;
  }
  EXPECT_TRUE(DecodeCall(EncodeCall(Op::kPut, 5, "")).ok());  // an empty body is the handler's to refuse
  std::string unknown_op = EncodeCall(Op::kPut, 0, "b");
  unknown_op[8] = 9;
  EXPECT_EQ(DecodeCall(unknown_op).status().code(), absl::StatusCode::kInvalidArgument);
  std::string other_version = EncodeCall(Op::kPut, 0, "b");
  other_version[7] = '9';  // "KVTSHC09": a later channel version; the caller falls back to gRPC
  EXPECT_EQ(DecodeCall(other_version).status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_FALSE(DecodeCall(req).ok());
  const std::string rep = EncodeCallReply(absl::NotFoundError("abc"), "");
  for (size_t n = 0; n < rep.size() - 3; ++n) {
    EXPECT_FALSE(DecodeCallReply(rep.substr(0, n)).ok()) << n;
  }
  const std::string reg = EncodeReply(Reply{});
  for (size_t n = 0; n < reg.size(); ++n) EXPECT_FALSE(DecodeReply(reg.substr(0, n)).ok()) << n;
}

TEST(ShmProtocolTest, DescriptorsTravelWithPackets) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  ASSERT_TRUE(SendPacket(sv[0], EncodeRequest("t"), pipe_fds[1]).ok());
  std::string packet;
  int fd = -1;
  ASSERT_TRUE(ReceivePacket(sv[1], &packet, &fd).ok());
  EXPECT_EQ(packet, EncodeRequest("t"));
  ASSERT_GE(fd, 0);
  EXPECT_EQ(::write(fd, "x", 1), 1);  // the received descriptor is the pipe's write end
  char c = 0;
  EXPECT_EQ(::read(pipe_fds[0], &c, 1), 1);
  EXPECT_EQ(c, 'x');
  EXPECT_NE(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  ::close(fd);
  // A packet without a descriptor, then an orderly close: an empty packet.
  ASSERT_TRUE(SendPacket(sv[0], "plain", -1).ok());
  ASSERT_TRUE(ReceivePacket(sv[1], &packet, &fd).ok());
  EXPECT_EQ(packet, "plain");
  EXPECT_EQ(fd, -1);
  ::close(sv[0]);
  ASSERT_TRUE(ReceivePacket(sv[1], &packet, &fd).ok());
  EXPECT_TRUE(packet.empty());
  // Too large for one packet: refused, not cut.
  int big[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, big), 0);
  int sndbuf = 4 << 20;
  ::setsockopt(big[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
  ASSERT_TRUE(SendPacket(big[0], std::string(kMaxPacketBytes + 100, 'z'), -1).ok());
  EXPECT_EQ(ReceivePacket(big[1], &packet, &fd).code(), absl::StatusCode::kInvalidArgument);
  for (int f : {sv[1], big[0], big[1], pipe_fds[0], pipe_fds[1]}) ::close(f);
}

}  // namespace
}  // namespace kvtier::shm
