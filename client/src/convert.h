// Internal: conversions between kvtier.proto messages and the SDK's domain types, and between
// gRPC and Abseil statuses. Proto types stop here (docs/ARCHITECTURE.md).
#ifndef KVTIER_CLIENT_SRC_CONVERT_H_
#define KVTIER_CLIENT_SRC_CONVERT_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvtier.pb.h"
#include "kvtier/client/types.h"

namespace kvtier::client::internal {

absl::Status FromGrpc(const grpc::Status& status);

kvtier::v1::Layout ToProto(const kernels::KvLayout& layout);
absl::StatusOr<kernels::KvLayout> FromProto(const kvtier::v1::Layout& layout);

kvtier::v1::Namespace ToProto(const NamespaceSpec& spec);
absl::StatusOr<NamespaceSpec> FromProto(const kvtier::v1::Namespace& ns);

Tier FromProto(kvtier::v1::Tier tier);
kvtier::v1::DataFormat ToProto(DataFormat format);
DataFormat FromProto(kvtier::v1::DataFormat format);

ServerStats FromProto(const kvtier::v1::StatsResponse& stats);

}  // namespace kvtier::client::internal

#endif  // KVTIER_CLIENT_SRC_CONVERT_H_
