// Helpers shared by the storage tests: deterministic payloads, chunk keys and temporary
// directories.
#ifndef KVTIER_TESTS_STORAGE_TEST_UTIL_H_
#define KVTIER_TESTS_STORAGE_TEST_UTIL_H_

#include <stdlib.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "kvtier/common/chunk_key.h"

namespace kvtier::storage::testing {

// Key number `i` (distinct for distinct i).
inline ChunkKey TestKey(uint64_t i) {
  std::array<uint8_t, ChunkKey::kSize> b{};
  for (int j = 0; j < 8; ++j) b[j] = static_cast<uint8_t>(i >> (8 * j));
  b[31] = 0x5a;
  return ChunkKey(b);
}

// A chain of `n` keys starting at `first`.
inline std::vector<ChunkKey> TestKeys(uint64_t first, size_t n) {
  std::vector<ChunkKey> keys;
  for (size_t i = 0; i < n; ++i) keys.push_back(TestKey(first + i));
  return keys;
}

// Deterministic payload: value = PRNG(seed), so any reader can check it without a copy.
inline std::vector<uint8_t> TestPayload(uint64_t seed, size_t size) {
  std::vector<uint8_t> out(size);
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 1);
  for (size_t i = 0; i < size; i += 8) {
    uint64_t v = rng();
    for (size_t j = 0; j < 8 && i + j < size; ++j) out[i + j] = static_cast<uint8_t>(v >> (8 * j));
  }
  return out;
}

// A fresh directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "kvtier-storage-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace kvtier::storage::testing

#endif  // KVTIER_TESTS_STORAGE_TEST_UTIL_H_
