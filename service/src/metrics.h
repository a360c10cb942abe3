// The daemon's Prometheus metrics. Names, types and help strings are documented in
// docs/OPERATIONS.md ("Metrics"); keep the two in step.
//
// Two sources feed one registry:
//  - ServiceMetrics: counters and histograms the RPC handlers update as they work (hits and misses
//    per tier, lookup tokens, bytes per path, codec work, compression ratio, RPC latency, checksum
//    failures found by the service, auth failures);
//  - StorageCollector: at every scrape, a snapshot of TierManager::Stats() (tier gauges,
//    evictions, tier-move bytes, storage checksum failures, leases), so storage stays the owner of
//    what it counts.
//
// Thread-safety: all members are safe to use from any thread.
#ifndef KVTIER_SERVICE_SRC_METRICS_H_
#define KVTIER_SERVICE_SRC_METRICS_H_

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "connection_limiter.h"
#include "kvtier/kernels/codec.h"
#include "kvtier/storage/tier_manager.h"

namespace kvtier::service {

// Data paths whose bytes are counted (label `path` of kvtier_transfer_bytes_total).
enum class TransferPath { kIngestTensor = 0, kIngestPayload, kFetchPayload, kFetchTensor };
inline constexpr int kNumTransferPaths = 4;

// Where the service found a checksum mismatch (label `source` of kvtier_checksum_failures_total;
// source="storage" comes from the storage snapshot).
enum class ChecksumSource { kPutStream = 0, kPutPayload, kFetch };
inline constexpr int kNumChecksumSources = 3;

enum class CodecOp { kEncode = 0, kDecode };

class ServiceMetrics {
 public:
  explicit ServiceMetrics(prometheus::Registry& registry);

  void ObserveRpc(const std::string& method, const std::string& code, double seconds);
  void AddInflight(double delta) { inflight_->Increment(delta); }
  // `n` hits served by `tier`: counts them on it and as misses on every enabled faster tier.
  void CountHits(storage::TierKind tier, uint64_t n);
  // A key found in no tier: a miss on every enabled tier.
  void CountMiss();
  void CountLookup(uint64_t tokens_requested, uint64_t tokens_hit);
  void AddTransfer(TransferPath path, uint64_t bytes) {
    transfer_[static_cast<int>(path)]->Increment(static_cast<double>(bytes));
  }
  // One codec run over `decoded_bytes` of tensor and `payload_bytes` of payload.
  // One encode or decode of a chunk: bytes on each side, time, and whether the GPU ran it.
  void ObserveCodec(kernels::CodecId codec, CodecOp op, uint64_t decoded_bytes,
                    uint64_t payload_bytes, double seconds, bool on_gpu = false);
  void CountChecksumFailure(ChecksumSource s) {
    checksum_failures_[static_cast<int>(s)].fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t checksum_failures(ChecksumSource s) const {
    return checksum_failures_[static_cast<int>(s)].load(std::memory_order_relaxed);
  }
  void CountAuthFailure() { auth_failures_->Increment(); }
  void CountRejected(const std::string& reason);
  void SetServing(bool serving) { serving_->Set(serving ? 1 : 0); }
  void SetEnabledTiers(const std::array<bool, storage::kNumTiers>& enabled);

  // Totals for the Stats call.
  uint64_t tier_misses(int tier) const { return miss_totals_[tier].load(std::memory_order_relaxed); }
  uint64_t tokens_requested() const { return tokens_requested_total_.load(std::memory_order_relaxed); }
  uint64_t tokens_hit() const { return tokens_hit_total_.load(std::memory_order_relaxed); }

 private:
  struct CodecCounters {
    prometheus::Counter* decoded_bytes;
    prometheus::Counter* payload_bytes;
    prometheus::Counter* calls[2];  // [0] on the CPU, [1] on the GPU
    prometheus::Counter* seconds;
  };
  prometheus::Family<prometheus::Histogram>& rpc_duration_;
  prometheus::Gauge* inflight_;
  prometheus::Gauge* serving_;
  std::array<prometheus::Counter*, storage::kNumTiers> hits_;
  std::array<prometheus::Counter*, storage::kNumTiers> misses_;
  std::array<bool, storage::kNumTiers> enabled_{};
  std::array<std::atomic<uint64_t>, storage::kNumTiers> miss_totals_{};
  std::atomic<uint64_t> tokens_requested_total_{0};
  std::atomic<uint64_t> tokens_hit_total_{0};
  prometheus::Counter* tokens_requested_;
  prometheus::Counter* tokens_hit_;
  prometheus::Counter* lookups_;
  std::array<prometheus::Counter*, kNumTransferPaths> transfer_;
  prometheus::Family<prometheus::Counter>& codec_decoded_bytes_;
  prometheus::Family<prometheus::Counter>& codec_payload_bytes_;
  prometheus::Family<prometheus::Counter>& codec_seconds_;
  prometheus::Family<prometheus::Counter>& codec_calls_;
  prometheus::Family<prometheus::Histogram>& compression_ratio_;
  prometheus::Family<prometheus::Counter>& rejected_;
  prometheus::Counter* auth_failures_;
  std::array<std::atomic<uint64_t>, kNumChecksumSources> checksum_failures_{};
  static constexpr int kNumCodecs = 6;  // kernels::CodecId values 0..5
  std::array<std::array<CodecCounters, 2>, kNumCodecs> codec_{};
  std::array<prometheus::Histogram*, kNumCodecs> ratio_{};
};

// Scrape-time snapshot of storage statistics plus the service's checksum-failure counters (one
// family, kvtier_checksum_failures_total, with a `source` label).
class StorageCollector : public prometheus::Collectable {
 public:
  explicit StorageCollector(const ServiceMetrics* service) : service_(service) {}
  // Called once the tier manager is open, and with nullptr before it closes.
  void SetTierManager(const storage::TierManager* tm) {
    std::lock_guard<std::mutex> lock(mu_);
    tm_ = tm;
  }
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const ServiceMetrics* service_;
  mutable std::mutex mu_;  // held during Collect so the tier manager cannot close under it
  const storage::TierManager* tm_ = nullptr;
};

// kvtier_connections_open / kvtier_connections_refused_total, read from the ConnectionLimiter at
// each scrape (the open count is recounted then, so closed connections drop out). Nothing is
// exported while no limiter is set (no plaintext listener).
class SharedMemoryRegistry;

// Client connections and same-node shared memory regions, read when scraped.
class ConnectionCollector : public prometheus::Collectable {
 public:
  // Called once the listeners are up, and with nullptr before the limiter stops.
  void SetLimiter(ConnectionLimiter* limiter) {
    std::lock_guard<std::mutex> lock(mu_);
    limiter_ = limiter;
  }
  // Called once the shared-memory socket is up, and with nullptr before the registry goes.
  void SetSharedMemory(SharedMemoryRegistry* shm) {
    std::lock_guard<std::mutex> lock(mu_);
    shm_ = shm;
  }
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  mutable std::mutex mu_;  // held during Collect so the limiter cannot go away under it
  ConnectionLimiter* limiter_ = nullptr;
  SharedMemoryRegistry* shm_ = nullptr;
};

}  // namespace kvtier::service

#endif  // KVTIER_SERVICE_SRC_METRICS_H_
