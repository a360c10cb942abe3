#include "namespace_registry.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include <toml++/toml.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "kvtier/common/logging.h"
#include "kvtier/common/status.h"

namespace kvtier::service {
namespace {

constexpr size_t kMaxSaltBytes = 256;
constexpr size_t kMaxNameBytes = 128;

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// Writes `contents` to `path` atomically: temp file, fsync, rename, fsync of the directory.
absl::Status WriteFileAtomically(const std::string& path, const std::string& contents) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot create ", tmp));
  size_t off = 0;
  while (off < contents.size()) {
    ssize_t n = ::write(fd, contents.data() + off, contents.size() - off);
    if (n < 0) {
      ::close(fd);
      return absl::UnavailableError(absl::StrCat("write failed: ", tmp));
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("fsync failed: ", tmp));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("rename failed: ", path));
  }
  std::string dir = path.substr(0, path.find_last_of('/') == std::string::npos
                                       ? 0
                                       : path.find_last_of('/'));
  if (dir.empty()) dir = ".";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace

bool NamespaceInfo::SameSettings(const NamespaceInfo& o) const {
  return name == o.name && model_id == o.model_id && layout == o.layout && codec == o.codec &&
         tokens_per_chunk == o.tokens_per_chunk && salt == o.salt;
}

absl::Status ValidateNamespace(const NamespaceInfo& info) {
  if (!ValidName(info.name)) {
    return absl::InvalidArgumentError(
        "namespace name must be 1-128 characters of [A-Za-z0-9._-]");
  }
  if (info.model_id.size() > 1024) {
    return absl::InvalidArgumentError("model_id longer than 1024 bytes");
  }
  if (info.salt.size() > kMaxSaltBytes) {
    return absl::InvalidArgumentError("salt longer than 256 bytes");
  }
  if (info.tokens_per_chunk == 0 || info.tokens_per_chunk > 65536) {
    return absl::InvalidArgumentError("tokens_per_chunk must be in [1, 65536]");
  }
  absl::Status s = info.layout.Validate();
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("layout: ", s.message()));
  s = info.codec.Validate();
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("codec: ", s.message()));
  // Sizing a full chunk runs the codec's compatibility checks against the layout.
  auto max = kernels::MaxPayloadSize(info.codec, info.layout, info.tokens_per_chunk);
  if (!max.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("codec ", info.codec.ToString(), " with this layout: ",
                     max.status().message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<NamespaceRegistry>> NamespaceRegistry::Open(
    std::string path, uint32_t max_namespaces) {
  std::unique_ptr<NamespaceRegistry> r(new NamespaceRegistry(std::move(path), max_namespaces));
  KVTIER_RETURN_IF_ERROR(r->Load());
  return r;
}

absl::Status NamespaceRegistry::Load() {
  if (path_.empty() || ::access(path_.c_str(), F_OK) != 0) return absl::OkStatus();
  toml::table root;
  try {
    root = toml::parse_file(path_);
  } catch (const toml::parse_error& e) {
    return absl::DataLossError(absl::StrCat(path_, ": ", e.what()));
  }
  const toml::array* list = root["namespace"].as_array();
  if (list == nullptr) return absl::OkStatus();
  for (const toml::node& node : *list) {
    const toml::table* t = node.as_table();
    if (t == nullptr) return absl::DataLossError(absl::StrCat(path_, ": bad [[namespace]]"));
    auto info = std::make_shared<NamespaceInfo>();
    auto u32 = [&](const char* k) { return static_cast<uint32_t>((*t)[k].value_or(int64_t{0})); };
    info->name = (*t)["name"].value_or(std::string());
    info->model_id = (*t)["model_id"].value_or(std::string());
    info->id = u32("id");
    info->tokens_per_chunk = u32("tokens_per_chunk");
    std::string salt_hex = (*t)["salt_hex"].value_or(std::string());
    info->salt = absl::HexStringToBytes(salt_hex);
    std::string kind = (*t)["layout_kind"].value_or(std::string());
    info->layout.kind = kind == "mla" ? kernels::LayoutKind::kMla : kernels::LayoutKind::kMha;
    info->layout.dtype = static_cast<kernels::DType>(u32("dtype"));
    info->layout.num_layers = u32("num_layers");
    info->layout.num_kv_heads = u32("num_kv_heads");
    info->layout.num_query_heads = u32("num_query_heads");
    info->layout.head_dim = u32("head_dim");
    info->layout.latent_dim = u32("latent_dim");
    info->layout.rope_dim = u32("rope_dim");
    auto codec = kernels::CodecParams::Parse((*t)["codec"].value_or(std::string("raw")));
    if (!codec.ok()) {
      return absl::DataLossError(absl::StrCat(path_, ": namespace '", info->name,
                                              "': ", codec.status().message()));
    }
    info->codec = *codec;
    absl::Status s = ValidateNamespace(*info);
    if (!s.ok() || info->id == 0 || by_name_.count(info->name)) {
      return absl::DataLossError(absl::StrCat(path_, ": namespace '", info->name,
                                              "' is invalid: ", s.message()));
    }
    next_id_ = std::max(next_id_, info->id + 1);
    by_name_[info->name] = std::move(info);
  }
  KVTIER_LOG(INFO, "loaded {} namespaces from {}", by_name_.size(), path_);
  return absl::OkStatus();
}

absl::Status NamespaceRegistry::SaveLocked() const {
  if (path_.empty()) return absl::OkStatus();
  toml::array list;
  for (const auto& [name, info] : by_name_) {
    const kernels::KvLayout& l = info->layout;
    list.push_back(toml::table{
        {"name", info->name},
        {"id", static_cast<int64_t>(info->id)},
        {"model_id", info->model_id},
        {"codec", info->codec.ToString()},
        {"tokens_per_chunk", static_cast<int64_t>(info->tokens_per_chunk)},
        {"salt_hex", absl::BytesToHexString(info->salt)},
        {"layout_kind", l.kind == kernels::LayoutKind::kMla ? "mla" : "mha"},
        {"dtype", static_cast<int64_t>(l.dtype)},
        {"num_layers", static_cast<int64_t>(l.num_layers)},
        {"num_kv_heads", static_cast<int64_t>(l.num_kv_heads)},
        {"num_query_heads", static_cast<int64_t>(l.num_query_heads)},
        {"head_dim", static_cast<int64_t>(l.head_dim)},
        {"latent_dim", static_cast<int64_t>(l.latent_dim)},
        {"rope_dim", static_cast<int64_t>(l.rope_dim)},
    });
  }
  toml::table root{{"namespace", std::move(list)}};
  std::ostringstream out;
  out << "# kvtierd namespaces; written by the daemon, do not edit while it runs.\n" << root
      << "\n";
  return WriteFileAtomically(path_, out.str());
}

absl::StatusOr<std::shared_ptr<const NamespaceInfo>> NamespaceRegistry::Create(
    NamespaceInfo info, bool* created) {
  *created = false;
  KVTIER_RETURN_IF_ERROR(ValidateNamespace(info));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_name_.find(info.name);
  if (it != by_name_.end()) {
    if (it->second->SameSettings(info)) return it->second;
    return absl::AlreadyExistsError(
        absl::StrCat("namespace '", info.name, "' exists with different settings"));
  }
  if (by_name_.size() >= max_namespaces_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("namespace limit reached (", max_namespaces_, ")"));
  }
  info.id = next_id_;
  auto entry = std::make_shared<const NamespaceInfo>(std::move(info));
  by_name_[entry->name] = entry;
  absl::Status s = SaveLocked();
  if (!s.ok()) {
    by_name_.erase(entry->name);
    return s;
  }
  ++next_id_;
  *created = true;
  return entry;
}

absl::StatusOr<std::shared_ptr<const NamespaceInfo>> NamespaceRegistry::Get(
    const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    return absl::NotFoundError(absl::StrCat("no namespace '", name, "'"));
  }
  return it->second;
}

std::vector<std::shared_ptr<const NamespaceInfo>> NamespaceRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<const NamespaceInfo>> out;
  out.reserve(by_name_.size());
  for (const auto& [name, info] : by_name_) out.push_back(info);
  return out;
}

size_t NamespaceRegistry::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return by_name_.size();
}

}  // namespace kvtier::service
