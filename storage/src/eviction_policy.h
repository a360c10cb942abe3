// EvictionPolicy: decides which copy a tier gives up first. One instance per tier; the manager
// calls it under its lock for every insert, access, removal and victim choice. Policies keep their
// queues as intrusive lists threaded through a PolicyHook embedded in each index entry (one hook
// per tier), so they allocate nothing per chunk and every operation is O(1) amortized.
//
//   "lru"        exact LRU; a batched prefix access touches keys in request order (the last key of
//                the prefix becomes most recent): the baseline.
//   "prefix_lru" LRU ordered for prefix caches: a batched access touches keys deepest-first, and a
//                chunk put with a known parent is queued just behind its parent, so chain tails are
//                evicted before the prefixes every request needs.
//   "s3fifo"     S3-FIFO (Yang et al., SOSP'23): a small probationary FIFO (a configurable share of the bytes), a main
//                FIFO with reinsertion of recently used entries, and a ghost FIFO of recently
//                evicted key hashes that admits returning keys straight to main.
//
// Thread-safety: none; the TierManager serializes all calls.
#ifndef KVTIER_STORAGE_SRC_EVICTION_POLICY_H_
#define KVTIER_STORAGE_SRC_EVICTION_POLICY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvtier::storage::internal {

// Per-entry, per-tier policy state.
struct PolicyHook {
  PolicyHook* prev = nullptr;  // Towards the most recently used / newest end.
  PolicyHook* next = nullptr;  // Towards the eviction end.
  uint64_t charge = 0;         // Bytes the copy uses in the tier.
  uint64_t key_hash = 0;       // For ghost queues.
  uint8_t queue = 0;           // Which of the policy's queues holds it (0 = none).
  uint8_t freq = 0;            // Saturating access counter (S3-FIFO).
  void* owner = nullptr;       // The index entry holding this hook (set by the manager).
  bool linked() const { return queue != 0; }
};

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;
  virtual const char* name() const = 0;

  // A new copy in the tier. `parent` is the hook (in this tier) of the chunk that precedes it in
  // its chain, when known; prefix-aware policies order the child just behind it.
  virtual void OnInsert(PolicyHook* hook, PolicyHook* parent) = 0;
  // One access (Get, single-key Lookup).
  virtual void OnAccess(PolicyHook* hook) = 0;
  // The hits of one prefix lookup, in prefix order (hooks[0] is the first chunk).
  virtual void OnAccessBatch(absl::Span<PolicyHook* const> hooks) {
    for (PolicyHook* h : hooks) OnAccess(h);
  }
  // The copy left the tier; `evicted` when the policy chose it (ghost bookkeeping) rather than a
  // delete, replace or move.
  virtual void OnRemove(PolicyHook* hook, bool evicted) = 0;
  // The copy the policy would evict next among those `evictable` accepts (pinned or moving copies
  // are refused), or nullptr. May reorder internal queues (S3-FIFO moves entries between queues);
  // does not remove the victim: the caller calls OnRemove(victim, true) once it has gone.
  virtual PolicyHook* Victim(const std::function<bool(PolicyHook*)>& evictable) = 0;
};

// "lru", "prefix_lru" or "s3fifo". `capacity_bytes` and `small_fraction` size S3-FIFO's queues.
absl::StatusOr<std::unique_ptr<EvictionPolicy>> NewEvictionPolicy(const std::string& name,
                                                                  uint64_t capacity_bytes,
                                                                  double small_fraction = 0.25);

// Intrusive doubly linked list of PolicyHooks: head = newest, tail = next to evict.
class HookList {
 public:
  bool empty() const { return head_ == nullptr; }
  PolicyHook* head() const { return head_; }
  PolicyHook* tail() const { return tail_; }
  uint64_t bytes() const { return bytes_; }
  uint64_t size() const { return size_; }
  void PushFront(PolicyHook* h);
  void InsertAfter(PolicyHook* pos, PolicyHook* h);  // h goes right behind pos (towards tail).
  void Remove(PolicyHook* h);

 private:
  PolicyHook* head_ = nullptr;
  PolicyHook* tail_ = nullptr;
  uint64_t bytes_ = 0;
  uint64_t size_ = 0;
};

}  // namespace kvtier::storage::internal

#endif  // KVTIER_STORAGE_SRC_EVICTION_POLICY_H_
