// NamespaceRegistry: the daemon's namespaces (name -> layout, codec, chunk size, salt) and the
// small integer id storage keys them by. Persisted as a TOML file (<data_dir>/namespaces.toml,
// replaced atomically on every change) so that chunks stored on disk stay addressable after a
// restart.
//
// Thread-safety: all methods are safe to call concurrently. Get() returns shared immutable entries
// that stay valid while held.
#ifndef KVTIER_SERVICE_SRC_NAMESPACE_REGISTRY_H_
#define KVTIER_SERVICE_SRC_NAMESPACE_REGISTRY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kvtier/kernels/codec.h"
#include "kvtier/kernels/layout.h"
#include "kvtier/storage/types.h"

namespace kvtier::service {

struct NamespaceInfo {
  std::string name;
  std::string model_id;
  kernels::KvLayout layout;
  kernels::CodecParams codec;
  uint32_t tokens_per_chunk = 0;
  std::string salt;
  storage::NamespaceId id = 0;  // assigned by the registry

  // Same settings (the id is not compared).
  bool SameSettings(const NamespaceInfo& other) const;
};

class NamespaceRegistry {
 public:
  // Loads `path` when it exists (an empty registry otherwise). `path` empty = in memory only.
  static absl::StatusOr<std::unique_ptr<NamespaceRegistry>> Open(std::string path,
                                                                 uint32_t max_namespaces);

  // Validates `info` (name, layout, codec against the layout, tokens_per_chunk, salt), assigns an
  // id and persists. An identical existing namespace returns it with *created = false; a
  // different one of the same name is AlreadyExists.
  absl::StatusOr<std::shared_ptr<const NamespaceInfo>> Create(NamespaceInfo info, bool* created);
  // NotFound when absent.
  absl::StatusOr<std::shared_ptr<const NamespaceInfo>> Get(const std::string& name) const;
  std::vector<std::shared_ptr<const NamespaceInfo>> List() const;  // sorted by name
  size_t size() const;

 private:
  NamespaceRegistry(std::string path, uint32_t max_namespaces)
      : path_(std::move(path)), max_namespaces_(max_namespaces) {}
  absl::Status Load();
  absl::Status SaveLocked() const;

  const std::string path_;
  const uint32_t max_namespaces_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<const NamespaceInfo>> by_name_;
  storage::NamespaceId next_id_ = 1;
};

// Checks name, layout, codec compatibility, tokens_per_chunk and salt of a namespace.
absl::Status ValidateNamespace(const NamespaceInfo& info);

}  // namespace kvtier::service

#endif  // KVTIER_SERVICE_SRC_NAMESPACE_REGISTRY_H_
