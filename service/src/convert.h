// Conversions between kvtier.v1 proto messages and domain types, and absl::Status <->
// grpc::Status (absl status codes and gRPC codes map one to one). Proto types stop here and in
// the handlers; the registry, storage and kernels see domain types only.
//
// Thread-safety: pure functions.
#ifndef KVTIER_SERVICE_SRC_CONVERT_H_
#define KVTIER_SERVICE_SRC_CONVERT_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvtier.pb.h"
#include "kvtier/common/chunk_key.h"
#include "kvtier/kernels/layout.h"
#include "kvtier/storage/types.h"
#include "namespace_registry.h"

namespace kvtier::service {

inline grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// Canonical code name ("OK", "NOT_FOUND", ...) for metric labels.
const char* CodeName(absl::StatusCode code);

absl::StatusOr<kernels::KvLayout> LayoutFromProto(const v1::Layout& p);
void LayoutToProto(const kernels::KvLayout& l, v1::Layout* p);

// Fills defaults (tokens_per_chunk 0 -> `default_tokens_per_chunk`, codec "" -> "raw") and parses.
absl::StatusOr<NamespaceInfo> NamespaceFromProto(const v1::Namespace& p,
                                                 uint32_t default_tokens_per_chunk);
void NamespaceToProto(const NamespaceInfo& n, v1::Namespace* p);

v1::Tier TierToProto(storage::TierKind t);

// A 32-byte key from the wire; InvalidArgument otherwise (naming `what`, e.g. "keys[3]").
absl::StatusOr<ChunkKey> KeyFromProto(const std::string& bytes, const char* what, int index = -1);

}  // namespace kvtier::service

#endif  // KVTIER_SERVICE_SRC_CONVERT_H_
