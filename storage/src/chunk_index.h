// ChunkIndex: the in-memory index of every stored chunk, keyed by (namespace id, chunk key). Each
// entry records the chunk's metadata, size and CRC32C, its copy in each tier, its pins, its access
// statistics and one eviction-policy hook per tier.
//
// Layout: an absl::flat_hash_set of owning pointers looked up by StorageKey (heterogeneous lookup),
// so the key is stored once (in the entry) and entries never move (policies link them in
// intrusive lists). bench/storage_bench measures the bytes per indexed chunk (docs/BENCHMARKS.md).
//
// Thread-safety: none; the TierManager guards it with its mutex.
#ifndef KVTIER_STORAGE_SRC_CHUNK_INDEX_H_
#define KVTIER_STORAGE_SRC_CHUNK_INDEX_H_

#include <array>
#include <cstdint>
#include <memory>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "eviction_policy.h"
#include "kvtier/storage/types.h"
#include "tier.h"

namespace kvtier::storage::internal {

struct IndexEntry {
  // Hot fields first (a lookup touches the key, the access statistics and the copies).
  StorageKey key;
  uint32_t accesses = 0;       // Lookup/Get hits (saturating).
  int64_t last_access_nanos = 0;
  uint32_t pins = 0;           // Explicit pins + leases.
  uint8_t moving = 0;          // Bit per tier: that tier's copy is being copied elsewhere.
  bool crc_known = false;      // Memory-only chunks get their CRC32C when first written to disk.
  uint32_t crc32c = 0;         // Valid when crc_known.
  std::array<std::shared_ptr<TierCopy>, kNumTiers> copies;
  ChunkMeta meta;
  uint64_t size = 0;           // Payload bytes.
  uint64_t version = 0;        // Changes whenever the chunk is replaced by a Put.
  uint64_t incarnation = 0;    // Changes only when the entry is created (leases refer to it).
  std::array<PolicyHook, kNumTiers> hooks;

  bool has_copy() const { return copies[0] || copies[1] || copies[2]; }
  // Index of the fastest tier holding a copy, or -1.
  int fastest() const {
    for (int t = 0; t < kNumTiers; ++t) {
      if (copies[t]) return t;
    }
    return -1;
  }
};

class ChunkIndex {
 public:
  IndexEntry* Find(const StorageKey& key) const {
    auto it = set_.find(key);
    return it == set_.end() ? nullptr : it->get();
  }
  // The entry for `key`, created empty (new incarnation) if missing; `*created` tells which.
  IndexEntry* FindOrCreate(const StorageKey& key, bool* created) {
    auto it = set_.find(key);
    if (it != set_.end()) {
      *created = false;
      return it->get();
    }
    auto entry = std::make_unique<IndexEntry>();
    entry->key = key;
    entry->incarnation = ++incarnations_;
    for (int t = 0; t < kNumTiers; ++t) entry->hooks[t].owner = entry.get();
    IndexEntry* raw = entry.get();
    set_.insert(std::move(entry));
    *created = true;
    return raw;
  }
  void Erase(const StorageKey& key) { set_.erase(key); }
  size_t size() const { return set_.size(); }

  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (const auto& e : set_) fn(e.get());
  }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(const StorageKey& k) const { return absl::Hash<StorageKey>()(k); }
    size_t operator()(const std::unique_ptr<IndexEntry>& e) const { return (*this)(e->key); }
  };
  struct Eq {
    using is_transparent = void;
    static const StorageKey& K(const StorageKey& k) { return k; }
    static const StorageKey& K(const std::unique_ptr<IndexEntry>& e) { return e->key; }
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      return K(a) == K(b);
    }
  };

  absl::flat_hash_set<std::unique_ptr<IndexEntry>, Hash, Eq> set_;
  uint64_t incarnations_ = 0;
};

inline IndexEntry* OwnerOf(PolicyHook* hook) { return static_cast<IndexEntry*>(hook->owner); }

}  // namespace kvtier::storage::internal

#endif  // KVTIER_STORAGE_SRC_CHUNK_INDEX_H_
