#include "tensor_io.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace kvtier::cli {

std::string NpyDescr(kernels::DType dtype) {
  switch (dtype) {
    case kernels::DType::kFloat32: return "<f4";
    case kernels::DType::kBFloat16: return "<u2";
    default: return "<f2";
  }
}

std::vector<uint64_t> ChunkShape(const kernels::KvLayout& l, uint32_t num_tokens) {
  if (l.kind == kernels::LayoutKind::kMla) {
    return {l.num_layers, num_tokens, uint64_t{l.latent_dim} + l.rope_dim};
  }
  return {l.num_layers, 2, l.num_kv_heads, num_tokens, l.head_dim};
}

absl::StatusOr<uint32_t> ChunkTokens(const NpyArray& a, const kernels::KvLayout& l) {
  const std::string want = NpyDescr(l.dtype);
  const bool bf16_alias = l.dtype == kernels::DType::kBFloat16 &&
                          (a.descr == "<i2" || a.descr == "|V2" || a.descr == "<V2");
  if (a.descr != want && !bf16_alias) {
    return absl::InvalidArgumentError(fmt::format(
        "tensor dtype '{}' does not match the namespace dtype {} (save it as '{}', e.g. "
        "x.astype('{}'){})",
        a.descr, kernels::DTypeName(l.dtype), want, want,
        l.dtype == kernels::DType::kBFloat16 ? "; bf16 travels as its raw uint16 bits" : ""));
  }
  const bool mla = l.kind == kernels::LayoutKind::kMla;
  const size_t token_axis = mla ? 1 : 3;
  if (a.shape.size() != (mla ? 3u : 5u)) {
    return absl::InvalidArgumentError(fmt::format(
        "tensor has shape ({}); a chunk of this namespace is shaped ({})",
        fmt::join(a.shape, ", "), fmt::join(ChunkShape(l, 0), ", ")) +
        " with any token count in place of the 0");
  }
  const uint64_t tokens = a.shape[token_axis];
  if (tokens == 0 || tokens > UINT32_MAX || a.shape != ChunkShape(l, static_cast<uint32_t>(tokens))) {
    return absl::InvalidArgumentError(fmt::format(
        "tensor has shape ({}); expected ({})", fmt::join(a.shape, ", "),
        fmt::join(ChunkShape(l, static_cast<uint32_t>(tokens)), ", ")));
  }
  return static_cast<uint32_t>(tokens);
}

absl::StatusOr<std::vector<uint32_t>> ParseTokens(const std::string& text) {
  std::string t = text;
  for (char& c : t) {
    if (c == ',') c = ' ';
  }
  std::stringstream ss(t);
  std::vector<uint32_t> out;
  std::string item;
  while (ss >> item) {
    if (item.find_first_not_of("0123456789") != std::string::npos || item.size() > 10 ||
        std::stoull(item) > UINT32_MAX) {
      return absl::InvalidArgumentError(
          fmt::format("'{}' is not a token id (non-negative 32-bit integer)", item));
    }
    out.push_back(static_cast<uint32_t>(std::stoull(item)));
  }
  return out;
}

absl::StatusOr<std::vector<uint32_t>> ReadTokens(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(fmt::format("cannot open token file {}", path));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string bytes = ss.str();
  if (bytes.rfind("\x93NUMPY", 0) != 0) return ParseTokens(bytes);
  auto arr = ParseNpy(bytes);
  if (!arr.ok()) return arr.status();
  const char kind = arr->descr.size() >= 2 ? arr->descr[1] : '?';
  const size_t item = arr->ItemSize();
  if ((kind != 'i' && kind != 'u') || (item != 1 && item != 2 && item != 4 && item != 8)) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: token ids must be an integer array, got dtype '{}'", path, arr->descr));
  }
  std::vector<uint32_t> out(arr->NumElements());
  for (size_t i = 0; i < out.size(); ++i) {
    int64_t v = 0;
    uint64_t u = 0;
    std::memcpy(&u, &arr->data[i * item], item);
    if (kind == 'i') {
      const int shift = 64 - static_cast<int>(item) * 8;
      v = static_cast<int64_t>(u << shift) >> shift;
    } else {
      v = static_cast<int64_t>(u);
    }
    if (v < 0 || v > UINT32_MAX) {
      return absl::InvalidArgumentError(fmt::format("{}: token id {} out of range", path, v));
    }
    out[i] = static_cast<uint32_t>(v);
  }
  return out;
}

}  // namespace kvtier::cli
