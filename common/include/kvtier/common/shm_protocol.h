// The registration protocol of kvtier's same-node shared memory (docs/API.md, "Shared memory"),
// shared by kvtierd and the client SDK.
//
// A client on the daemon's node creates a memfd, seals it against shrinking (so the daemon's
// mapping can never fault), and registers it on kvtierd's shared-memory socket (a Unix SOCK_SEQPACKET
// socket at <unix socket path>.shm): one request message carrying the descriptor (SCM_RIGHTS) and
// the daemon's token, one reply carrying a status and a random 16-byte region handle. Put and Get
// then name byte ranges of the region (SharedMemoryRef) instead of streaming the bytes. The
// region stays registered while the client keeps that connection open; closing it (or exiting)
// unregisters it.
//
// Put and Get naming the region can go through gRPC, or through the call channel: more
// connections to the same socket, each attached to the region (handle + token), that carry one
// call at a time as one request packet and one reply packet, served by a daemon thread of their
// own. That path has no HTTP/2 framing and no thread hand-offs, which is most of a gRPC call's
// cost for a value already in shared memory.
//
// Wire format (all integers little-endian):
//   register: "KVTSHM01" | u32 token_bytes | token                     (+ 1 descriptor)
//   attach:   "KVTSHA01" | 16-byte handle | u32 token_bytes | token
//   reply to either: "KVTSHM01" | u32 status code (absl::StatusCode, 0 = OK) | 16-byte handle |
//            u64 region_bytes | message (UTF-8, the rest of the packet)
//   (version 02 of the call channel; 01, without timeout_ms, was never released)
//   call:     "KVTSHC02" | u8 op (1 = Put, 2 = Get) | u32 timeout_ms (the caller's time left;
//             0 = none) | body (kvtier.v1.PutHeader with `shm` set, or kvtier.v1.GetRequest with
//             `shm` set, serialized)
//   call reply: "KVTSHR02" | u32 status code | u32 message_bytes | message |
//             body (kvtier.v1.PutResponse, or kvtier.v1.GetHeader with in_shared_memory set)
//
// Thread-safety: pure functions.
#ifndef KVTIER_COMMON_SHM_PROTOCOL_H_
#define KVTIER_COMMON_SHM_PROTOCOL_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvtier::shm {

inline constexpr char kMagic[8] = {'K', 'V', 'T', 'S', 'H', 'M', '0', '1'};
inline constexpr size_t kHandleBytes = 16;
inline constexpr size_t kMaxTokenBytes = 4096;
// Largest packet either side sends (a reply's message is cut to fit).
inline constexpr size_t kMaxPacketBytes = 64 << 10;

enum class Op : uint8_t { kPut = 1, kGet = 2 };

// The shared-memory socket beside a daemon's Unix socket.
inline std::string SocketPathFor(const std::string& unix_socket) { return unix_socket + ".shm"; }

struct Reply {
  absl::Status status;
  std::string handle;  // kHandleBytes bytes when status is OK
  uint64_t region_bytes = 0;
};

std::string EncodeRequest(const std::string& token);
// The token of a request packet; InvalidArgument for anything malformed.
absl::StatusOr<std::string> DecodeRequest(const std::string& packet);
std::string EncodeReply(const Reply& reply);
absl::StatusOr<Reply> DecodeReply(const std::string& packet);

// What the first packet of a connection asks for.
enum class Hello { kRegister, kAttach, kUnknown };
Hello ClassifyHello(const std::string& packet);
std::string EncodeAttach(const std::string& handle, const std::string& token);
struct Attach {
  std::string handle;
  std::string token;
};
absl::StatusOr<Attach> DecodeAttach(const std::string& packet);

struct Call {
  Op op = Op::kPut;
  uint32_t timeout_ms = 0;  // 0 = no deadline
  std::string body;
};
std::string EncodeCall(Op op, uint32_t timeout_ms, const std::string& body);
// InvalidArgument for a malformed call; Unimplemented for a call of another channel version
// ("KVTSHC" with other last two magic bytes), which the caller should send through gRPC.
absl::StatusOr<Call> DecodeCall(const std::string& packet);
struct CallReply {
  absl::Status status;
  std::string body;  // empty unless status is OK
};
std::string EncodeCallReply(const absl::Status& status, const std::string& body);
absl::StatusOr<CallReply> DecodeCallReply(const std::string& packet);

// Sends one packet on a SOCK_SEQPACKET socket, with `fd` attached when >= 0.
absl::Status SendPacket(int sock, const std::string& packet, int fd);
// Receives one packet (at most kMaxPacketBytes). `fd` receives an attached descriptor
// (close-on-exec) or -1; any further descriptors are closed. An orderly shutdown by the peer
// gives an empty packet.
absl::Status ReceivePacket(int sock, std::string* packet, int* fd);

}  // namespace kvtier::shm

#endif  // KVTIER_COMMON_SHM_PROTOCOL_H_
