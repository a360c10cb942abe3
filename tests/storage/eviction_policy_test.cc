#include "eviction_policy.h"

#include <gtest/gtest.h>

#include <deque>
#include <vector>

namespace kvtier::storage::internal {
namespace {

// Owns hooks and evicts through a policy the way the TierManager does.
class Harness {
 public:
  Harness(const std::string& policy, uint64_t capacity) {
    policy_ = NewEvictionPolicy(policy, capacity, 0.1).value();
    hooks_.resize(1000);
    for (size_t i = 0; i < hooks_.size(); ++i) {
      hooks_[i].charge = 1;
      hooks_[i].key_hash = 1000 + i;
    }
  }
  void Insert(int i, int parent = -1) {
    policy_->OnInsert(&hooks_[i], parent >= 0 ? &hooks_[parent] : nullptr);
  }
  void Access(int i) { policy_->OnAccess(&hooks_[i]); }
  void AccessBatch(const std::vector<int>& ids) {
    std::vector<PolicyHook*> h;
    for (int i : ids) h.push_back(&hooks_[i]);
    policy_->OnAccessBatch(h);
  }
  // Evicts one and returns its id (-1 if none).
  int Evict() {
    PolicyHook* v = policy_->Victim([&](PolicyHook* h) { return !pinned_[h - hooks_.data()]; });
    if (v == nullptr) return -1;
    policy_->OnRemove(v, true);
    return static_cast<int>(v - hooks_.data());
  }
  void Remove(int i) { policy_->OnRemove(&hooks_[i], false); }
  void SetPinned(int i, bool p) { pinned_[i] = p; }

 private:
  std::unique_ptr<EvictionPolicy> policy_;
  std::vector<PolicyHook> hooks_;
  std::vector<bool> pinned_ = std::vector<bool>(1000, false);
};

TEST(EvictionPolicyTest, UnknownNameIsInvalid) {
  EXPECT_EQ(NewEvictionPolicy("mru", 10).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(EvictionPolicyTest, LruEvictsLeastRecentlyUsed) {
  Harness h("lru", 100);
  for (int i = 0; i < 5; ++i) h.Insert(i);
  h.Access(0);
  h.Access(2);
  EXPECT_EQ(h.Evict(), 1);
  EXPECT_EQ(h.Evict(), 3);
  EXPECT_EQ(h.Evict(), 4);
  EXPECT_EQ(h.Evict(), 0);
  EXPECT_EQ(h.Evict(), 2);
  EXPECT_EQ(h.Evict(), -1);
}

TEST(EvictionPolicyTest, LruBatchTouchesInRequestOrder) {
  Harness h("lru", 100);
  for (int i = 0; i < 4; ++i) h.Insert(i);
  h.AccessBatch({0, 1, 2});  // 2 is now the most recent: the chain head 0 goes first.
  EXPECT_EQ(h.Evict(), 3);
  EXPECT_EQ(h.Evict(), 0);
}

TEST(EvictionPolicyTest, PrefixLruEvictsChainTailsFirst) {
  Harness h("prefix_lru", 100);
  for (int i = 0; i < 4; ++i) h.Insert(i);
  h.AccessBatch({0, 1, 2});  // Deepest first: 0 is the most recent.
  EXPECT_EQ(h.Evict(), 3);
  EXPECT_EQ(h.Evict(), 2);
  EXPECT_EQ(h.Evict(), 1);
  EXPECT_EQ(h.Evict(), 0);
}

TEST(EvictionPolicyTest, PrefixLruQueuesChildBehindParent) {
  Harness h("prefix_lru", 100);
  h.Insert(10);
  h.Insert(0);       // Chain 0 -> 1 -> 2, put in order with parents.
  h.Insert(1, 0);
  h.Insert(2, 1);
  h.Insert(11);      // Unrelated, newest.
  EXPECT_EQ(h.Evict(), 10);
  EXPECT_EQ(h.Evict(), 2);  // The tail of the chain before its prefix.
  EXPECT_EQ(h.Evict(), 1);
  EXPECT_EQ(h.Evict(), 0);
  EXPECT_EQ(h.Evict(), 11);
}

TEST(EvictionPolicyTest, PinnedAreSkipped) {
  for (const char* name : {"lru", "prefix_lru", "s3fifo"}) {
    SCOPED_TRACE(name);
    Harness h(name, 10);
    for (int i = 0; i < 3; ++i) h.Insert(i);
    h.SetPinned(0, true);
    h.SetPinned(1, true);
    EXPECT_EQ(h.Evict(), 2);
    EXPECT_EQ(h.Evict(), -1);  // Only pinned left: no victim, and no endless loop.
    h.SetPinned(0, false);
    EXPECT_EQ(h.Evict(), 0);
  }
}

TEST(EvictionPolicyTest, S3FifoKeepsReusedOverOneHitWonders) {
  // Capacity 10 units: small queue 1 unit. Entries 0..4 are accessed again; 100.. are a scan.
  Harness h("s3fifo", 10);
  for (int i = 0; i < 5; ++i) h.Insert(i);
  for (int i = 0; i < 5; ++i) h.Access(i);
  std::vector<int> evicted;
  for (int i = 100; i < 140; ++i) {
    h.Insert(i);
    evicted.push_back(h.Evict());
  }
  for (int e : evicted) EXPECT_GE(e, 5) << "a reused entry was evicted by the scan";
}

TEST(EvictionPolicyTest, S3FifoGhostAdmitsReturningKeyToMain) {
  Harness h("s3fifo", 10);
  h.Insert(0);
  EXPECT_EQ(h.Evict(), 0);  // Evicted from small: remembered in the ghost queue.
  h.Insert(0);              // Returns: goes to main.
  for (int i = 1; i < 5; ++i) h.Insert(i);
  // Small queue entries (1..4, never reused) go before the main-queue entry 0.
  for (int i = 1; i < 5; ++i) EXPECT_EQ(h.Evict(), i);
  EXPECT_EQ(h.Evict(), 0);
}

TEST(EvictionPolicyTest, RemoveUnlinks) {
  for (const char* name : {"lru", "prefix_lru", "s3fifo"}) {
    SCOPED_TRACE(name);
    Harness h(name, 10);
    for (int i = 0; i < 3; ++i) h.Insert(i);
    h.Remove(1);
    std::vector<int> order;
    for (int v; (v = h.Evict()) != -1;) order.push_back(v);
    EXPECT_EQ(order.size(), 2u);
    for (int v : order) EXPECT_NE(v, 1);
  }
}

}  // namespace
}  // namespace kvtier::storage::internal
