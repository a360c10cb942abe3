#include "eviction_policy.h"

#include <deque>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "kvtier/common/logging.h"

namespace kvtier::storage::internal {

void HookList::PushFront(PolicyHook* h) {
  h->prev = nullptr;
  h->next = head_;
  if (head_ != nullptr) head_->prev = h;
  head_ = h;
  if (tail_ == nullptr) tail_ = h;
  bytes_ += h->charge;
  ++size_;
}

void HookList::InsertAfter(PolicyHook* pos, PolicyHook* h) {
  h->prev = pos;
  h->next = pos->next;
  if (pos->next != nullptr) {
    pos->next->prev = h;
  } else {
    tail_ = h;
  }
  pos->next = h;
  bytes_ += h->charge;
  ++size_;
}

void HookList::Remove(PolicyHook* h) {
  if (h->prev != nullptr) {
    h->prev->next = h->next;
  } else {
    head_ = h->next;
  }
  if (h->next != nullptr) {
    h->next->prev = h->prev;
  } else {
    tail_ = h->prev;
  }
  h->prev = h->next = nullptr;
  bytes_ -= h->charge;
  --size_;
}

namespace {

constexpr uint8_t kInList = 1;

// Exact LRU; with `prefix_aware`, the prefix ordering described in eviction_policy.h.
class LruPolicy final : public EvictionPolicy {
 public:
  explicit LruPolicy(bool prefix_aware) : prefix_aware_(prefix_aware) {}
  const char* name() const override { return prefix_aware_ ? "prefix_lru" : "lru"; }

  void OnInsert(PolicyHook* h, PolicyHook* parent) override {
    h->queue = kInList;
    if (prefix_aware_ && parent != nullptr && parent->queue == kInList) {
      list_.InsertAfter(parent, h);
    } else {
      list_.PushFront(h);
    }
  }
  void OnAccess(PolicyHook* h) override {
    list_.Remove(h);
    list_.PushFront(h);
  }
  void OnAccessBatch(absl::Span<PolicyHook* const> hooks) override {
    if (!prefix_aware_) {
      for (PolicyHook* h : hooks) OnAccess(h);
      return;
    }
    // Deepest first, so the chain's first chunk ends up most recent and its tail goes first.
    for (size_t i = hooks.size(); i-- > 0;) OnAccess(hooks[i]);
  }
  void OnRemove(PolicyHook* h, bool evicted) override {
    (void)evicted;
    list_.Remove(h);
    h->queue = 0;
  }
  PolicyHook* Victim(const std::function<bool(PolicyHook*)>& evictable) override {
    for (PolicyHook* h = list_.tail(); h != nullptr; h = h->prev) {
      if (evictable(h)) return h;
    }
    return nullptr;
  }

 private:
  const bool prefix_aware_;
  HookList list_;
};

class S3FifoPolicy final : public EvictionPolicy {
 public:
  static constexpr uint8_t kSmall = 1;
  static constexpr uint8_t kMain = 2;

  S3FifoPolicy(uint64_t capacity_bytes, double small_fraction, uint8_t move_threshold)
      : small_target_(static_cast<uint64_t>(capacity_bytes * small_fraction)),
        ghost_limit_(capacity_bytes - small_target_),
        move_threshold_(move_threshold) {}
  const char* name() const override { return "s3fifo"; }

  void OnInsert(PolicyHook* h, PolicyHook* parent) override {
    (void)parent;
    h->freq = 0;
    auto g = ghost_index_.find(h->key_hash);
    if (g != ghost_index_.end()) {
      // Returned soon after eviction: admit straight to main. The ghost record ages out.
      if (--g->second == 0) ghost_index_.erase(g);
      h->queue = kMain;
      main_.PushFront(h);
    } else {
      h->queue = kSmall;
      small_.PushFront(h);
    }
  }
  void OnAccess(PolicyHook* h) override {
    if (h->freq < 3) ++h->freq;
  }
  void OnRemove(PolicyHook* h, bool evicted) override {
    if (h->queue == kSmall) {
      small_.Remove(h);
      if (evicted) AddGhost(h->key_hash, h->charge);
    } else if (h->queue == kMain) {
      main_.Remove(h);
    }
    h->queue = 0;
  }
  PolicyHook* Victim(const std::function<bool(PolicyHook*)>& evictable) override {
    // Each step either returns, or moves one entry (rotation, promotion or a lowered frequency),
    // so a bound of a few passes over both queues guarantees termination when all are pinned.
    uint64_t budget = 3 * (small_.size() + main_.size()) + 8;
    while (budget-- > 0) {
      if (!small_.empty() && (small_.bytes() >= small_target_ || main_.empty())) {
        PolicyHook* t = small_.tail();
        if (!evictable(t)) {
          small_.Remove(t);
          small_.PushFront(t);
          continue;
        }
        if (t->freq >= move_threshold_) {
          small_.Remove(t);
          t->freq = 0;
          t->queue = kMain;
          main_.PushFront(t);
          continue;
        }
        return t;
      }
      if (main_.empty()) return nullptr;
      PolicyHook* t = main_.tail();
      if (!evictable(t)) {
        main_.Remove(t);
        main_.PushFront(t);
        continue;
      }
      if (t->freq > 0) {
        --t->freq;
        main_.Remove(t);
        main_.PushFront(t);
        continue;
      }
      return t;
    }
    return nullptr;
  }

 private:
  void AddGhost(uint64_t hash, uint64_t charge) {
    ghost_.emplace_back(hash, charge);
    ghost_bytes_ += charge;
    ++ghost_index_[hash];
    while (ghost_bytes_ > ghost_limit_ && !ghost_.empty()) {
      auto [old_hash, old_charge] = ghost_.front();
      ghost_.pop_front();
      ghost_bytes_ -= old_charge;
      auto it = ghost_index_.find(old_hash);
      if (it != ghost_index_.end() && --it->second == 0) ghost_index_.erase(it);
    }
  }

  const uint64_t small_target_;
  const uint64_t ghost_limit_;
  const uint8_t move_threshold_;
  HookList small_;
  HookList main_;
  std::deque<std::pair<uint64_t, uint64_t>> ghost_;  // (key hash, charge), oldest first.
  uint64_t ghost_bytes_ = 0;
  absl::flat_hash_map<uint64_t, uint32_t> ghost_index_;  // key hash -> records in ghost_.
};

}  // namespace

absl::StatusOr<std::unique_ptr<EvictionPolicy>> NewEvictionPolicy(const std::string& name,
                                                                  uint64_t capacity_bytes,
                                                                  double small_fraction) {
  if (name == "lru") return std::unique_ptr<EvictionPolicy>(new LruPolicy(false));
  if (name == "prefix_lru") return std::unique_ptr<EvictionPolicy>(new LruPolicy(true));
  if (name == "s3fifo") {
    return std::unique_ptr<EvictionPolicy>(new S3FifoPolicy(capacity_bytes, small_fraction, 1));
  }
  return absl::InvalidArgumentError("unknown eviction policy '" + name + "'");
}

}  // namespace kvtier::storage::internal
