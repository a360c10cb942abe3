// Reading and writing NumPy .npy files (format versions 1.0, 2.0 and 3.0), enough for the CLI to
// move KV tensors in and out: little-endian or byte-order-free dtypes, C order.
//
// bf16 has no NumPy dtype; kvtier writes it as "<u2" (the raw bits) and accepts "<u2"/"<i2"/"|V2".
// Thread-compatible value types and reentrant functions.
#ifndef KVTIER_CLIENT_CLI_NPY_H_
#define KVTIER_CLIENT_CLI_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvtier::cli {

struct NpyArray {
  std::string descr;          // NumPy dtype string, e.g. "<f2", "<f4", "<u2", "|u1"
  std::vector<uint64_t> shape;
  std::vector<uint8_t> data;  // C-order element bytes

  uint64_t NumElements() const;
  // Bytes of one element from descr ("<f2" -> 2); 0 when descr is not understood.
  size_t ItemSize() const;
};

// Errors: NotFound / PermissionDenied (open), InvalidArgument (not an .npy file, Fortran order,
// big-endian data, a size that does not match the shape).
absl::StatusOr<NpyArray> ReadNpy(const std::string& path);
absl::StatusOr<NpyArray> ParseNpy(const std::string& bytes);

absl::Status WriteNpy(const std::string& path, const NpyArray& array);
std::string SerializeNpy(const NpyArray& array);

}  // namespace kvtier::cli

#endif  // KVTIER_CLIENT_CLI_NPY_H_
