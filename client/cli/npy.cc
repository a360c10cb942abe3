// .npy reader and writer (format: numpy.lib.format, versions 1.0 to 3.0).
#include "npy.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace kvtier::cli {
namespace {

constexpr char kMagic[] = "\x93NUMPY";

// Returns the value text of `key` in the header dict, e.g. "'<f2'" or "(2, 3)".
absl::StatusOr<std::string> DictValue(const std::string& header, const std::string& key) {
  const std::string quoted = "'" + key + "'";
  size_t pos = header.find(quoted);
  if (pos == std::string::npos) {
    return absl::InvalidArgumentError(fmt::format(".npy header has no '{}'", key));
  }
  pos = header.find(':', pos + quoted.size());
  if (pos == std::string::npos) return absl::InvalidArgumentError(".npy header: missing ':'");
  ++pos;
  while (pos < header.size() && header[pos] == ' ') ++pos;
  size_t end = pos;
  if (header[pos] == '(') {
    end = header.find(')', pos);
    if (end == std::string::npos) return absl::InvalidArgumentError(".npy header: bad shape");
    return header.substr(pos, end - pos + 1);
  }
  if (header[pos] == '\'' || header[pos] == '"') {
    end = header.find(header[pos], pos + 1);
    if (end == std::string::npos) return absl::InvalidArgumentError(".npy header: bad string");
    return header.substr(pos + 1, end - pos - 1);
  }
  while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
  return header.substr(pos, end - pos);
}

absl::StatusOr<std::vector<uint64_t>> ParseShape(const std::string& text) {
  std::vector<uint64_t> shape;
  std::string inner = text.substr(1, text.size() - 2);
  std::stringstream ss(inner);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t b = item.find_first_not_of(" ");
    if (b == std::string::npos) continue;  // trailing comma of a 1-tuple
    item = item.substr(b);
    item = item.substr(0, item.find_last_not_of(" ") + 1);
    if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos) {
      return absl::InvalidArgumentError(fmt::format(".npy header: bad shape entry '{}'", item));
    }
    shape.push_back(std::stoull(item));
  }
  return shape;
}

}  // namespace

uint64_t NpyArray::NumElements() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

size_t NpyArray::ItemSize() const {
  if (descr.size() < 3) return 0;
  const char order = descr[0];
  if (order != '<' && order != '|' && order != '=') return 0;
  const std::string digits = descr.substr(2);
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return 0;
  return std::stoul(digits);
}

absl::StatusOr<NpyArray> ParseNpy(const std::string& bytes) {
  if (bytes.size() < 10 || bytes.compare(0, 6, kMagic, 6) != 0) {
    return absl::InvalidArgumentError("not an .npy file (bad magic); write it with numpy.save");
  }
  const uint8_t major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return absl::InvalidArgumentError(".npy file truncated");
    header_len = 0;
    for (int i = 3; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(bytes[8 + i]);
    offset = 12;
  } else {
    return absl::InvalidArgumentError(fmt::format(".npy format version {} not supported", major));
  }
  if (bytes.size() < offset + header_len) return absl::InvalidArgumentError(".npy header truncated");
  const std::string header = bytes.substr(offset, header_len);
  NpyArray out;
  auto descr = DictValue(header, "descr");
  if (!descr.ok()) return descr.status();
  out.descr = *descr;
  auto fortran = DictValue(header, "fortran_order");
  if (!fortran.ok()) return fortran.status();
  if (fortran->find("True") != std::string::npos) {
    return absl::InvalidArgumentError(
        ".npy array is in Fortran order; save numpy.ascontiguousarray(x) instead");
  }
  auto shape_text = DictValue(header, "shape");
  if (!shape_text.ok()) return shape_text.status();
  auto shape = ParseShape(*shape_text);
  if (!shape.ok()) return shape.status();
  out.shape = *shape;
  if (out.descr[0] == '>') {
    return absl::InvalidArgumentError(".npy data is big-endian; convert with x.astype('<f2') etc.");
  }
  const size_t item = out.ItemSize();
  if (item == 0) {
    return absl::InvalidArgumentError(fmt::format(".npy dtype '{}' not supported", out.descr));
  }
  const size_t data_off = offset + header_len;
  const uint64_t want = out.NumElements() * item;
  if (bytes.size() - data_off != want) {
    return absl::InvalidArgumentError(fmt::format(
        ".npy data has {} bytes, shape and dtype say {}", bytes.size() - data_off, want));
  }
  out.data.assign(bytes.begin() + data_off, bytes.end());
  return out;
}

absl::StatusOr<NpyArray> ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  auto parsed = ParseNpy(ss.str());
  if (!parsed.ok()) {
    return absl::Status(parsed.status().code(),
                        fmt::format("{}: {}", path, std::string(parsed.status().message())));
  }
  return parsed;
}

std::string SerializeNpy(const NpyArray& array) {
  std::string shape = "(";
  for (size_t i = 0; i < array.shape.size(); ++i) {
    shape += std::to_string(array.shape[i]);
    shape += (array.shape.size() == 1 || i + 1 < array.shape.size()) ? "," : "";
    if (i + 1 < array.shape.size()) shape += " ";
  }
  shape += ")";
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
                                   array.descr, shape);
  // Pad with spaces so that magic + version + length + header + '\n' is a multiple of 64.
  const size_t base = 10;
  size_t total = base + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out(kMagic, 6);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  out.append(reinterpret_cast<const char*>(array.data.data()), array.data.size());
  return out;
}

absl::Status WriteNpy(const std::string& path, const NpyArray& array) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::PermissionDeniedError(
        fmt::format("cannot write {}: {}", path, std::strerror(errno)));
  }
  const std::string bytes = SerializeNpy(array);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) return absl::DataLossError(fmt::format("short write to {}", path));
  return absl::OkStatus();
}

}  // namespace kvtier::cli
