#include "kvtier/common/shm_protocol.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kvtier::shm {
namespace {

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
uint64_t GetLE(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    v |= static_cast<uint64_t>(static_cast<uint8_t>(s[at + static_cast<size_t>(i)])) << (8 * i);
  }
  return v;
}
constexpr char kAttachMagic[8] = {'K', 'V', 'T', 'S', 'H', 'A', '0', '1'};
constexpr char kCallMagic[8] = {'K', 'V', 'T', 'S', 'H', 'C', '0', '2'};
constexpr char kCallReplyMagic[8] = {'K', 'V', 'T', 'S', 'H', 'R', '0', '2'};

bool HasMagic(const std::string& s, const char (&magic)[8] = kMagic) {
  return s.size() >= sizeof(magic) && std::memcmp(s.data(), magic, sizeof(magic)) == 0;
}

constexpr size_t kReplyFixedBytes = sizeof(kMagic) + 4 + kHandleBytes + 8;

}  // namespace

std::string EncodeRequest(const std::string& token) {
  std::string out(kMagic, sizeof(kMagic));
  PutU32(&out, static_cast<uint32_t>(token.size()));
  out += token;
  return out;
}

absl::StatusOr<std::string> DecodeRequest(const std::string& packet) {
  if (!HasMagic(packet) || packet.size() < sizeof(kMagic) + 4) {
    return absl::InvalidArgumentError("not a kvtier shared-memory registration (bad magic)");
  }
  const uint64_t n = GetLE(packet, sizeof(kMagic), 4);
  if (n > kMaxTokenBytes || packet.size() != sizeof(kMagic) + 4 + n) {
    return absl::InvalidArgumentError("malformed shared-memory registration (token length)");
  }
  return packet.substr(sizeof(kMagic) + 4);
}

std::string EncodeReply(const Reply& reply) {
  std::string out(kMagic, sizeof(kMagic));
  PutU32(&out, static_cast<uint32_t>(reply.status.code()));
  std::string handle = reply.handle;
  handle.resize(kHandleBytes, '\0');
  out += handle;
  PutU64(&out, reply.region_bytes);
  out.append(reply.status.message().data(),
             std::min(reply.status.message().size(), kMaxPacketBytes - kReplyFixedBytes));
  return out;
}

absl::StatusOr<Reply> DecodeReply(const std::string& packet) {
  if (!HasMagic(packet) || packet.size() < kReplyFixedBytes) {
    return absl::InternalError("malformed reply from kvtierd's shared-memory socket");
  }
  Reply r;
  const auto code = static_cast<absl::StatusCode>(GetLE(packet, sizeof(kMagic), 4));
  const std::string message = packet.substr(kReplyFixedBytes);
  r.status = code == absl::StatusCode::kOk ? absl::OkStatus() : absl::Status(code, message);
  r.handle = packet.substr(sizeof(kMagic) + 4, kHandleBytes);
  r.region_bytes = GetLE(packet, sizeof(kMagic) + 4 + kHandleBytes, 8);
  return r;
}

Hello ClassifyHello(const std::string& packet) {
  if (HasMagic(packet)) return Hello::kRegister;
  if (HasMagic(packet, kAttachMagic)) return Hello::kAttach;
  return Hello::kUnknown;
}

std::string EncodeAttach(const std::string& handle, const std::string& token) {
  std::string out(kAttachMagic, sizeof(kAttachMagic));
  std::string h = handle;
  h.resize(kHandleBytes, '\0');
  out += h;
  PutU32(&out, static_cast<uint32_t>(token.size()));
  out += token;
  return out;
}

absl::StatusOr<Attach> DecodeAttach(const std::string& packet) {
  constexpr size_t kFixed = sizeof(kAttachMagic) + kHandleBytes + 4;
  if (!HasMagic(packet, kAttachMagic) || packet.size() < kFixed) {
    return absl::InvalidArgumentError("malformed shared-memory attach request");
  }
  const uint64_t n = GetLE(packet, kFixed - 4, 4);
  if (n > kMaxTokenBytes || packet.size() != kFixed + n) {
    return absl::InvalidArgumentError("malformed shared-memory attach request (token length)");
  }
  return Attach{packet.substr(sizeof(kAttachMagic), kHandleBytes), packet.substr(kFixed)};
}

std::string EncodeCall(Op op, uint32_t timeout_ms, const std::string& body) {
  std::string out(kCallMagic, sizeof(kCallMagic));
  out.push_back(static_cast<char>(op));
  PutU32(&out, timeout_ms);
  out += body;
  return out;
}

absl::StatusOr<Call> DecodeCall(const std::string& packet) {
  constexpr size_t kFixed = sizeof(kCallMagic) + 1 + 4;
  if (!HasMagic(packet, kCallMagic) && packet.size() >= sizeof(kCallMagic) &&
      std::memcmp(packet.data(), kCallMagic, 6) == 0) {
    // A call of another version of the channel (the last two magic bytes): the caller can still
    // use gRPC.
    return absl::UnimplementedError(absl::StrCat(
        "shared-memory call version ", packet.substr(6, 2), " is not spoken by this kvtierd (",
        std::string(kCallMagic + 6, 2), "): use gRPC"));
  }
  if (!HasMagic(packet, kCallMagic) || packet.size() < kFixed) {
    return absl::InvalidArgumentError("malformed shared-memory call");
  }
  const auto op = static_cast<uint8_t>(packet[sizeof(kCallMagic)]);
  if (op != static_cast<uint8_t>(Op::kPut) && op != static_cast<uint8_t>(Op::kGet)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown shared-memory call op ", op));
  }
  return Call{static_cast<Op>(op), static_cast<uint32_t>(GetLE(packet, sizeof(kCallMagic) + 1, 4)),
              packet.substr(kFixed)};
}

std::string EncodeCallReply(const absl::Status& status, const std::string& body) {
  std::string out(kCallReplyMagic, sizeof(kCallReplyMagic));
  PutU32(&out, static_cast<uint32_t>(status.code()));
  const size_t room = kMaxPacketBytes - out.size() - 4 - body.size();
  const size_t n = std::min(status.message().size(), room);
  PutU32(&out, static_cast<uint32_t>(n));
  out.append(status.message().data(), n);
  out += body;
  return out;
}

absl::StatusOr<CallReply> DecodeCallReply(const std::string& packet) {
  constexpr size_t kFixed = sizeof(kCallReplyMagic) + 8;
  if (!HasMagic(packet, kCallReplyMagic) || packet.size() < kFixed) {
    return absl::InternalError("malformed reply on kvtierd's shared-memory call channel");
  }
  const auto code = static_cast<absl::StatusCode>(GetLE(packet, sizeof(kCallReplyMagic), 4));
  const uint64_t n = GetLE(packet, sizeof(kCallReplyMagic) + 4, 4);
  if (n > packet.size() - kFixed) {
    return absl::InternalError("malformed reply on kvtierd's shared-memory call channel");
  }
  CallReply r;
  if (code != absl::StatusCode::kOk) {
    r.status = absl::Status(code, packet.substr(kFixed, n));
  } else {
    r.body = packet.substr(kFixed + n);
  }
  return r;
}

absl::Status SendPacket(int sock, const std::string& packet, int fd) {
  iovec iov{const_cast<char*>(packet.data()), packet.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  ssize_t n;
  do {
    n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return absl::UnavailableError(absl::StrCat("sendmsg: ", std::strerror(errno)));
  if (static_cast<size_t>(n) != packet.size()) return absl::InternalError("short sendmsg");
  return absl::OkStatus();
}

absl::Status ReceivePacket(int sock, std::string* packet, int* fd) {
  *fd = -1;
  packet->assign(kMaxPacketBytes + 1, '\0');
  iovec iov{packet->data(), packet->size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return absl::UnavailableError(absl::StrCat("recvmsg: ", std::strerror(errno)));
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int got;
      std::memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (*fd < 0) {
        *fd = got;
      } else {
        ::close(got);
      }
    }
  }
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
    return absl::InvalidArgumentError("shared-memory packet too large");
  }
  packet->resize(static_cast<size_t>(n));
  return absl::OkStatus();
}

}  // namespace kvtier::shm
