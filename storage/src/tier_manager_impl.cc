#include "tier_manager_impl.h"

#include <algorithm>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "disk_tier.h"
#include "kvtier/common/crc32c.h"
#include "kvtier/common/logging.h"
#include "kvtier/common/status.h"
#include "memory_tier.h"

namespace kvtier::storage {

absl::StatusOr<std::unique_ptr<TierManager>> TierManager::Create(
    const TierManagerOptions& options) {
  KVTIER_RETURN_IF_ERROR(options.Validate());
  std::array<std::shared_ptr<internal::Tier>, kNumTiers> tiers;
  if (options.gpu.capacity_bytes > 0) {
    KVTIER_ASSIGN_OR_RETURN(tiers[TierIndex(TierKind::kGpu)],
                            internal::MemoryTier::NewGpu(options.gpu.capacity_bytes,
                                                         options.gpu.device,
                                                         options.gpu.slab_bytes));
  }
  if (options.host.capacity_bytes > 0) {
    KVTIER_ASSIGN_OR_RETURN(tiers[TierIndex(TierKind::kHost)],
                            internal::MemoryTier::NewHost(options.host.capacity_bytes,
                                                          options.host.alignment,
                                                          options.host.pin_memory));
  }
  if (!options.disk.path.empty()) {
    KVTIER_ASSIGN_OR_RETURN(tiers[TierIndex(TierKind::kDisk)],
                            internal::DiskTier::Open(options.disk));
  }
  auto impl = std::make_unique<internal::TierManagerImpl>(options, std::move(tiers));
  KVTIER_RETURN_IF_ERROR(impl->Start());
  return std::unique_ptr<TierManager>(std::move(impl));
}

namespace internal {
namespace {

constexpr size_t kMaxQueuedPromotions = 1024;
constexpr int kMaxEvictionsPerWrite = 4096;

uint8_t Bit(int t) { return static_cast<uint8_t>(1u << t); }

}  // namespace

TierManagerImpl::TierManagerImpl(const TierManagerOptions& options,
                                 std::array<std::shared_ptr<Tier>, kNumTiers> tiers)
    : options_(options),
      clock_(options.clock ? options.clock : DefaultClock()),
      tiers_(std::move(tiers)) {
  for (int t = 0; t < kNumTiers; ++t) {
    if (!enabled(t)) continue;
    auto policy = NewEvictionPolicy(options_.policy, tiers_[t]->capacity_bytes(),
                                    options_.s3fifo_small_fraction);
    KVTIER_CHECK_OK(policy.status());  // Validate() accepted the name.
    policies_[t] = std::move(policy).value();
  }
}

TierManagerImpl::~TierManagerImpl() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  idle_cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

absl::Status TierManagerImpl::Start() {
  if (enabled(kDisk)) {
    std::lock_guard<std::mutex> lock(mu_);
    KVTIER_RETURN_IF_ERROR(tiers_[kDisk]->Recover(
        [&](const StorageKey& key, std::shared_ptr<TierCopy> copy) {
          bool created = false;
          IndexEntry* e = index_.FindOrCreate(key, &created);
          e->meta = copy->meta();
          e->size = copy->size();
          e->crc32c = copy->crc32c();
          e->crc_known = true;
          e->version = ++versions_;
          e->hooks[kDisk].charge = tiers_[kDisk]->ChargeFor(copy->size());
          e->hooks[kDisk].key_hash = absl::Hash<StorageKey>()(key);
          e->copies[kDisk] = std::move(copy);
          ++tier_chunks_[kDisk];
          policies_[kDisk]->OnInsert(&e->hooks[kDisk], nullptr);
        }));
    if (index_.size() > 0) {
      KVTIER_LOG(INFO, "storage: rebuilt index with {} chunks ({} bytes) from disk",
                 index_.size(), tiers_[kDisk]->used_bytes());
    }
  }
  for (int i = 0; i < options_.background_threads; ++i) {
    threads_.emplace_back([this] { BackgroundLoop(); });
  }
  return absl::OkStatus();
}

int TierManagerImpl::next_lower(int t) const {
  for (int u = t + 1; u < kNumTiers; ++u) {
    if (enabled(u)) return u;
  }
  return -1;
}

int TierManagerImpl::top_memory_tier() const {
  for (int t = 0; t < kDisk; ++t) {
    if (enabled(t)) return t;
  }
  return -1;
}

int64_t TierManagerImpl::LeaseNanos(int64_t lease_ms) const {
  if (lease_ms <= 0) lease_ms = options_.default_lease_ms;
  lease_ms = std::min(lease_ms, options_.max_lease_ms);
  return lease_ms * 1'000'000;
}

// ---- Writing and making room. -------------------------------------------------------------------

absl::StatusOr<std::shared_ptr<TierCopy>> TierManagerImpl::WriteWithRoom(
    int t, const StorageKey& key, const ChunkMeta& meta, uint32_t crc,
    absl::Span<const uint8_t> payload, bool holding_disk) {
  Tier* tier = tiers_[t].get();
  const uint64_t charge = tier->ChargeFor(payload.size());
  if (charge > tier->capacity_bytes()) {
    return absl::ResourceExhaustedError(std::string(TierName(TierKind(t))) +
                                        " tier is smaller than the payload");
  }
  for (int attempt = 0; attempt < kMaxEvictionsPerWrite; ++attempt) {
    if (t == kDisk && tier->used_bytes() + charge > tier->capacity_bytes()) {
      // The disk tier's byte budget: evict by policy; a full file system is reported by Write.
      if (!EvictOne(t, holding_disk)) {
        return absl::ResourceExhaustedError("disk tier full and nothing evictable");
      }
      continue;
    }
    auto copy = tier->Write(key, meta, crc, payload);
    if (copy.ok()) {
      c_.bytes_written[t].fetch_add(payload.size(), std::memory_order_relaxed);
      return copy;
    }
    if (t == kDisk || copy.status().code() != absl::StatusCode::kResourceExhausted) {
      return copy.status();
    }
    if (!EvictOne(t, holding_disk)) return copy.status();
  }
  return absl::ResourceExhaustedError(std::string(TierName(TierKind(t))) +
                                      " tier: could not make room");
}

std::shared_ptr<TierCopy> TierManagerImpl::DropCopyLocked(IndexEntry* e, int t, bool evicted) {
  policies_[t]->OnRemove(&e->hooks[t], evicted);
  std::shared_ptr<TierCopy> copy = std::move(e->copies[t]);
  --tier_chunks_[t];
  e->moving &= static_cast<uint8_t>(~Bit(t));
  if (evicted) c_.evictions[t].fetch_add(1, std::memory_order_relaxed);
  if (!e->has_copy()) {
    if (e->pins > 0) --pinned_chunks_;
    const StorageKey key = e->key;
    index_.Erase(key);  // `e` is gone from here on.
  }
  return copy;
}

void TierManagerImpl::RemoveEntryLocked(
    IndexEntry* e, std::vector<std::pair<StorageKey, std::shared_ptr<TierCopy>>>* disk_erase) {
  for (int t = 0; t < kNumTiers; ++t) {
    if (!e->copies[t]) continue;
    policies_[t]->OnRemove(&e->hooks[t], false);
    if (t == kDisk) disk_erase->emplace_back(e->key, e->copies[t]);
    e->copies[t].reset();
    --tier_chunks_[t];
  }
  if (e->pins > 0) --pinned_chunks_;
  const StorageKey key = e->key;
  index_.Erase(key);
}

void TierManagerImpl::EraseOnDisk(
    const std::vector<std::pair<StorageKey, std::shared_ptr<TierCopy>>>& copies) {
  for (const auto& [key, copy] : copies) {
    absl::Status s = tiers_[kDisk]->Erase(key, *copy);
    if (!s.ok()) {
      c_.io_errors.fetch_add(1, std::memory_order_relaxed);
      KVTIER_LOG(WARNING, "storage: erasing a disk copy failed: {}", s.ToString());
    }
  }
}

bool TierManagerImpl::EvictOne(int t, bool holding_disk) {
  std::unique_lock<std::mutex> lock(mu_);
  PolicyHook* victim = policies_[t]->Victim([t](PolicyHook* h) {
    const IndexEntry* e = OwnerOf(h);
    return e->pins == 0 && (e->moving & Bit(t)) == 0;
  });
  if (victim == nullptr) return false;
  IndexEntry* e = OwnerOf(victim);
  const int lower = next_lower(t);
  bool lower_has_copy = false;
  for (int u = t + 1; u < kNumTiers; ++u) lower_has_copy |= static_cast<bool>(e->copies[u]);

  if (t == kDisk || lower < 0 || !options_.demote_on_evict || lower_has_copy) {
    // Plain eviction: no write needed.
    const StorageKey key = e->key;
    std::shared_ptr<TierCopy> copy = DropCopyLocked(e, t, /*evicted=*/true);
    lock.unlock();
    if (t == kDisk) EraseOnDisk({{key, copy}});  // Caller holds disk_mu_ (disk writes only).
    return true;
  }

  // Demotion: copy the bytes down with no index lock held, then publish if nothing changed.
  e->moving |= Bit(t);
  const StorageKey key = e->key;
  const uint64_t version = e->version;
  const std::shared_ptr<TierCopy> source = e->copies[t];
  const ChunkMeta meta = e->meta;
  const bool crc_known = e->crc_known;
  uint32_t crc = e->crc32c;
  const uint64_t size = e->size;
  lock.unlock();

  std::unique_lock<std::mutex> disk_lock;
  if (lower == kDisk && !holding_disk) disk_lock = std::unique_lock<std::mutex>(disk_mu_);
  const bool hold = holding_disk || lower == kDisk;
  if (lower == kDisk) {
    // Between marking the copy and taking disk_mu_, a Put may have written a newer version of this
    // key straight to disk (the same RocksDB key). Writing our bytes now would overwrite it, and
    // erasing them afterwards would leave the index pointing at nothing. Check again: from here
    // on we hold disk_mu_, so no other disk write of this key can happen until we are done.
    std::lock_guard<std::mutex> relock(mu_);
    const IndexEntry* cur = index_.Find(key);
    if (cur == nullptr || cur->version != version || cur->copies[t] != source) {
      return true;  // Replaced or deleted meanwhile (that cleared the moving mark): nothing to do.
    }
  }
  absl::StatusOr<std::shared_ptr<TierCopy>> moved = absl::UnknownError("not read");
  {
    absl::StatusOr<TierRead> bytes = tiers_[t]->Read(key, source);
    if (bytes.ok()) {
      c_.bytes_read[t].fetch_add(bytes->size, std::memory_order_relaxed);
      // A chunk's CRC32C is computed when it first goes to disk: off the Put path, in the thread
      // that demotes (the background thread unless background_threads == 0).
      if (!crc_known && lower == kDisk) crc = Crc32c(bytes->data, bytes->size);
      moved = WriteWithRoom(lower, key, meta, crc, absl::MakeConstSpan(bytes->data, bytes->size),
                            hold);
    } else {
      moved = bytes.status();
    }
  }
  std::vector<std::pair<StorageKey, std::shared_ptr<TierCopy>>> disk_erase;
  std::shared_ptr<TierCopy> dropped;
  {
    std::lock_guard<std::mutex> relock(mu_);
    IndexEntry* cur = index_.Find(key);
    if (cur != nullptr && cur->version == version && cur->copies[t] == source) {
      cur->moving &= static_cast<uint8_t>(~Bit(t));
      if (moved.ok()) {
        if (lower == kDisk && !cur->crc_known) {
          cur->crc32c = crc;
          cur->crc_known = true;
        }
        if (!cur->copies[lower]) {
          cur->hooks[lower].charge = tiers_[lower]->ChargeFor(size);
          cur->hooks[lower].key_hash = absl::Hash<StorageKey>()(key);
          cur->copies[lower] = *moved;
          ++tier_chunks_[lower];
          policies_[lower]->OnInsert(&cur->hooks[lower], nullptr);
          c_.demotions_out[t].fetch_add(1, std::memory_order_relaxed);
          c_.bytes_demoted.fetch_add(size, std::memory_order_relaxed);
        }
      } else if (moved.status().code() == absl::StatusCode::kResourceExhausted) {
        if (lower == kDisk) c_.disk_full_events.fetch_add(1, std::memory_order_relaxed);
      } else {
        c_.io_errors.fetch_add(1, std::memory_order_relaxed);
      }
      // A chunk pinned while it moved keeps its copy; otherwise tier t gives it up (moved down,
      // or lost when the lower tier could not take it: a cache may drop, never corrupt).
      if (cur->pins == 0) dropped = DropCopyLocked(cur, t, /*evicted=*/true);
    } else if (moved.ok() && lower == kDisk) {
      // Replaced by a memory-only version while it moved (a Delete or a disk write needs disk_mu_,
      // which we hold, and the check above saw no newer disk copy): the copy just written is stale.
      disk_erase.emplace_back(key, *moved);
    }
  }
  if (!disk_erase.empty()) EraseOnDisk(disk_erase);
  return true;
}

bool TierManagerImpl::InstallNew(
    const StorageKey& key, int t, std::shared_ptr<TierCopy> copy, const ChunkMeta& meta,
    uint64_t size, std::optional<uint32_t> crc, const std::optional<ChunkKey>& parent,
    bool holding_disk,
    std::vector<std::pair<StorageKey, std::shared_ptr<TierCopy>>>* disk_erase) {
  std::vector<std::shared_ptr<TierCopy>> released;  // Freed after mu_ is dropped.
  std::lock_guard<std::mutex> lock(mu_);
  IndexEntry* e = index_.Find(key);
  if (e != nullptr && e->copies[kDisk] && !holding_disk) return false;
  bool created = false;
  e = index_.FindOrCreate(key, &created);
  if (!created) {
    for (int u = 0; u < kNumTiers; ++u) {
      if (!e->copies[u]) continue;
      policies_[u]->OnRemove(&e->hooks[u], false);
      if (u == kDisk) {
        if (t == kDisk) {
          tiers_[kDisk]->Forget(*e->copies[u]);  // Overwritten in place by the new write.
        } else {
          disk_erase->emplace_back(key, e->copies[u]);
        }
      }
      released.push_back(std::move(e->copies[u]));
      --tier_chunks_[u];
    }
    e->moving = 0;
  }
  e->meta = meta;
  e->size = size;
  e->crc32c = crc.value_or(0);
  e->crc_known = crc.has_value();
  e->version = ++versions_;
  e->hooks[t].charge = tiers_[t]->ChargeFor(size);
  e->hooks[t].key_hash = absl::Hash<StorageKey>()(key);
  e->copies[t] = std::move(copy);
  ++tier_chunks_[t];
  PolicyHook* parent_hook = nullptr;
  if (parent) {
    IndexEntry* p = index_.Find(StorageKey{key.ns, *parent});
    if (p != nullptr && p->copies[t]) parent_hook = &p->hooks[t];
  }
  policies_[t]->OnInsert(&e->hooks[t], parent_hook);
  c_.tier_puts[t].fetch_add(1, std::memory_order_relaxed);
  return true;
}

// ---- Public operations. -----------------------------------------------------------------------

absl::Status TierManagerImpl::Put(NamespaceId ns, const ChunkKey& key,
                                  absl::Span<const uint8_t> payload, const ChunkMeta& meta,
                                  const PutOptions& put_options) {
  c_.puts.fetch_add(1, std::memory_order_relaxed);
  if (payload.empty() || payload.size() > options_.max_chunk_bytes) {
    c_.put_failures.fetch_add(1, std::memory_order_relaxed);
    return absl::InvalidArgumentError("payload size " + std::to_string(payload.size()) +
                                      " outside [1, max_chunk_bytes=" +
                                      std::to_string(options_.max_chunk_bytes) + "]");
  }
  const StorageKey skey{ns, key};
  absl::Status last = absl::ResourceExhaustedError("no tier can hold the chunk");
  std::vector<std::pair<StorageKey, std::shared_ptr<TierCopy>>> disk_erase;

  for (int t = 0; t < kDisk; ++t) {
    if (!enabled(t)) continue;
    if (tiers_[t]->used_bytes() + tiers_[t]->ChargeFor(payload.size()) >
        tiers_[t]->capacity_bytes()) {
      // A replaced chunk gives up its own space first, so a re-put never evicts a bystander.
      std::shared_ptr<TierCopy> old;
      std::lock_guard<std::mutex> lock(mu_);
      IndexEntry* e = index_.Find(skey);
      if (e != nullptr && e->copies[t] && e->pins == 0 && (e->moving & Bit(t)) == 0) {
        old = DropCopyLocked(e, t, /*evicted=*/false);
      }
    }
    // Memory tiers store without a checksum pass: unless the caller gave it, the CRC32C is
    // computed when the chunk first goes to disk, keeping a host put at memcpy speed.
    auto copy = WriteWithRoom(t, skey, meta, /*crc=*/0, payload, /*holding_disk=*/false);
    if (!copy.ok()) {
      c_.put_rejections[t].fetch_add(1, std::memory_order_relaxed);
      last = copy.status();
      continue;
    }
    if (!InstallNew(skey, t, *copy, meta, payload.size(), put_options.crc32c, put_options.parent,
                    false, &disk_erase)) {
      std::lock_guard<std::mutex> disk_lock(disk_mu_);
      InstallNew(skey, t, *copy, meta, payload.size(), put_options.crc32c, put_options.parent,
                 true, &disk_erase);
      EraseOnDisk(disk_erase);
    }
    c_.put_bytes.fetch_add(payload.size(), std::memory_order_relaxed);
    if (!threads_.empty() &&
        tiers_[t]->used_bytes() >
            options_.demote_high_watermark * static_cast<double>(tiers_[t]->capacity_bytes())) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++wake_seq_;
      }
      work_cv_.notify_one();
    }
    return absl::OkStatus();
  }

  if (enabled(kDisk)) {
    const uint32_t crc = put_options.crc32c ? *put_options.crc32c
                                            : Crc32c(payload.data(), payload.size());
    std::lock_guard<std::mutex> disk_lock(disk_mu_);
    auto copy = WriteWithRoom(kDisk, skey, meta, crc, payload, /*holding_disk=*/true);
    if (copy.ok()) {
      InstallNew(skey, kDisk, *copy, meta, payload.size(), crc, put_options.parent, true,
                 &disk_erase);
      EraseOnDisk(disk_erase);
      c_.put_bytes.fetch_add(payload.size(), std::memory_order_relaxed);
      return absl::OkStatus();
    }
    c_.put_rejections[kDisk].fetch_add(1, std::memory_order_relaxed);
    if (copy.status().code() == absl::StatusCode::kResourceExhausted) {
      c_.disk_full_events.fetch_add(1, std::memory_order_relaxed);
    } else {
      c_.io_errors.fetch_add(1, std::memory_order_relaxed);
    }
    last = copy.status();
  }
  c_.put_failures.fetch_add(1, std::memory_order_relaxed);
  return last;
}

LookupResult TierManagerImpl::Lookup(NamespaceId ns, absl::Span<const ChunkKey> keys,
                                     const LookupOptions& options) {
  LookupResult result;
  c_.lookups.fetch_add(1, std::memory_order_relaxed);
  c_.lookup_keys.fetch_add(keys.size(), std::memory_order_relaxed);
  if (keys.empty()) return result;
  result.tiers.reserve(keys.size());
  const int64_t now = clock_->NowNanos();
  absl::InlinedVector<IndexEntry*, 32> hits;
  std::array<absl::InlinedVector<PolicyHook*, 32>, kNumTiers> touched;
  std::array<uint64_t, kNumTiers> tier_hits{};

  std::lock_guard<std::mutex> lock(mu_);
  if (!lease_expiry_.empty() && lease_expiry_.begin()->first <= now) ExpireLeasesLocked(now);
  for (const ChunkKey& k : keys) {
    IndexEntry* e = index_.Find(StorageKey{ns, k});
    if (e == nullptr) break;
    const int t = e->fastest();
    result.tiers.push_back(static_cast<TierKind>(t));
    touched[t].push_back(&e->hooks[t]);
    e->last_access_nanos = now;
    if (e->accesses != UINT32_MAX) ++e->accesses;
    ++tier_hits[t];
    hits.push_back(e);
  }
  for (int t = 0; t < kNumTiers; ++t) {
    if (!touched[t].empty()) policies_[t]->OnAccessBatch(touched[t]);
    if (tier_hits[t] != 0) c_.hits[t].fetch_add(tier_hits[t], std::memory_order_relaxed);
  }
  result.hits = static_cast<uint32_t>(hits.size());
  c_.lookup_hits.fetch_add(hits.size(), std::memory_order_relaxed);
  if (options.lease && !hits.empty()) {
    const LeaseId id = next_lease_++;
    Lease& lease = leases_[id];
    lease.expiry_nanos = now + LeaseNanos(options.lease_ms);
    lease.pinned.reserve(hits.size());
    for (IndexEntry* e : hits) {
      if (e->pins++ == 0) ++pinned_chunks_;
      lease.pinned.emplace_back(e->key, e->incarnation);
    }
    lease_expiry_.emplace(lease.expiry_nanos, id);
    result.lease = id;
    result.lease_expiry_nanos = lease.expiry_nanos;
    c_.leases_granted.fetch_add(1, std::memory_order_relaxed);
  }
  return result;
}

absl::StatusOr<ChunkHandle> TierManagerImpl::Get(NamespaceId ns, const ChunkKey& key) {
  c_.gets.fetch_add(1, std::memory_order_relaxed);
  const StorageKey skey{ns, key};
  // A few rounds: each failed round drops a bad copy (or saw the chunk change under it).
  for (int round = 0; round < 2 * kNumTiers; ++round) {
    int t = -1;
    std::shared_ptr<TierCopy> copy;
    uint64_t version = 0;
    uint32_t crc = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      IndexEntry* e = index_.Find(skey);
      if (e == nullptr) break;
      crc = e->crc_known ? e->crc32c : 0;
      t = e->fastest();
      copy = e->copies[t];
      version = e->version;
      policies_[t]->OnAccess(&e->hooks[t]);
      e->last_access_nanos = clock_->NowNanos();
      if (e->accesses != UINT32_MAX) ++e->accesses;
    }
    absl::StatusOr<TierRead> read = tiers_[t]->Read(skey, copy);
    if (read.ok()) {
      c_.get_hits.fetch_add(1, std::memory_order_relaxed);
      c_.hits[t].fetch_add(1, std::memory_order_relaxed);
      c_.bytes_read[t].fetch_add(read->size, std::memory_order_relaxed);
      ChunkHandle handle(read->keepalive, read->data, read->size, copy->meta(), crc,
                         static_cast<TierKind>(t));
      const int target = top_memory_tier();
      if (options_.promote_on_hit && target >= 0 && target < t) {
        PromotionJob job{skey, version, target, *std::move(read)};
        if (threads_.empty()) {
          Promote(std::move(job));
        } else {
          {
            std::lock_guard<std::mutex> lock(mu_);
            if (promotions_.size() < kMaxQueuedPromotions) promotions_.push_back(std::move(job));
          }
          work_cv_.notify_one();
        }
      }
      return handle;
    }
    // The copy could not be read or failed its checksum. Drop it if it is still current; if the
    // chunk was replaced or deleted meanwhile, that explains the failure: look again.
    const bool corrupt = read.status().code() == absl::StatusCode::kDataLoss;
    std::unique_lock<std::mutex> disk_lock;
    if (t == kDisk) disk_lock = std::unique_lock<std::mutex>(disk_mu_);
    std::vector<std::pair<StorageKey, std::shared_ptr<TierCopy>>> disk_erase;
    {
      std::lock_guard<std::mutex> lock(mu_);
      IndexEntry* e = index_.Find(skey);
      if (e != nullptr && e->version == version && e->copies[t] == copy) {
        if (corrupt) {
          c_.checksum_failures.fetch_add(1, std::memory_order_relaxed);
        } else {
          c_.io_errors.fetch_add(1, std::memory_order_relaxed);
        }
        KVTIER_LOG(WARNING, "storage: dropping unreadable {} copy of a chunk: {}",
                   TierName(static_cast<TierKind>(t)), read.status().ToString());
        std::shared_ptr<TierCopy> dropped = DropCopyLocked(e, t, /*evicted=*/false);
        if (t == kDisk) disk_erase.emplace_back(skey, std::move(dropped));
      }
    }
    if (!disk_erase.empty()) EraseOnDisk(disk_erase);
  }
  c_.get_misses.fetch_add(1, std::memory_order_relaxed);
  return absl::NotFoundError("chunk not found");
}

void TierManagerImpl::Promote(PromotionJob job) {
  const int target = job.target;
  ChunkMeta meta;
  {
    std::lock_guard<std::mutex> lock(mu_);
    IndexEntry* e = index_.Find(job.key);
    if (e == nullptr || e->version != job.version || e->copies[target]) return;
    meta = e->meta;
  }
  auto copy = WriteWithRoom(target, job.key, meta, /*crc=*/0,
                            absl::MakeConstSpan(job.bytes.data, job.bytes.size), false);
  if (!copy.ok()) return;
  std::shared_ptr<TierCopy> unused;
  std::lock_guard<std::mutex> lock(mu_);
  IndexEntry* e = index_.Find(job.key);
  if (e == nullptr || e->version != job.version || e->copies[target]) {
    unused = std::move(*copy);  // Raced with a Put, Delete or another promotion.
    return;
  }
  e->hooks[target].charge = tiers_[target]->ChargeFor(e->size);
  e->hooks[target].key_hash = absl::Hash<StorageKey>()(job.key);
  e->copies[target] = std::move(*copy);
  ++tier_chunks_[target];
  policies_[target]->OnInsert(&e->hooks[target], nullptr);
  c_.promotions_in[target].fetch_add(1, std::memory_order_relaxed);
  c_.bytes_promoted.fetch_add(e->size, std::memory_order_relaxed);
}

bool TierManagerImpl::Contains(NamespaceId ns, const ChunkKey& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return index_.Find(StorageKey{ns, key}) != nullptr;
}

absl::Status TierManagerImpl::Delete(NamespaceId ns, const ChunkKey& key) {
  c_.deletes.fetch_add(1, std::memory_order_relaxed);
  std::unique_lock<std::mutex> disk_lock;
  if (enabled(kDisk)) disk_lock = std::unique_lock<std::mutex>(disk_mu_);
  std::vector<std::pair<StorageKey, std::shared_ptr<TierCopy>>> disk_erase;
  {
    std::lock_guard<std::mutex> lock(mu_);
    IndexEntry* e = index_.Find(StorageKey{ns, key});
    if (e == nullptr) return absl::NotFoundError("chunk not found");
    RemoveEntryLocked(e, &disk_erase);
  }
  EraseOnDisk(disk_erase);
  return absl::OkStatus();
}

uint64_t TierManagerImpl::DeleteNamespace(NamespaceId ns) {
  std::unique_lock<std::mutex> disk_lock;
  if (enabled(kDisk)) disk_lock = std::unique_lock<std::mutex>(disk_mu_);
  std::vector<std::pair<StorageKey, std::shared_ptr<TierCopy>>> disk_erase;
  uint64_t removed = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<IndexEntry*> victims;
    index_.ForEach([&](IndexEntry* e) {
      if (e->key.ns == ns) victims.push_back(e);
    });
    for (IndexEntry* e : victims) RemoveEntryLocked(e, &disk_erase);
    removed = victims.size();
  }
  EraseOnDisk(disk_erase);
  c_.deletes.fetch_add(removed, std::memory_order_relaxed);
  return removed;
}

absl::Status TierManagerImpl::Pin(NamespaceId ns, const ChunkKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  IndexEntry* e = index_.Find(StorageKey{ns, key});
  if (e == nullptr) return absl::NotFoundError("chunk not found");
  if (e->pins++ == 0) ++pinned_chunks_;
  return absl::OkStatus();
}

absl::Status TierManagerImpl::Unpin(NamespaceId ns, const ChunkKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  IndexEntry* e = index_.Find(StorageKey{ns, key});
  if (e == nullptr) return absl::NotFoundError("chunk not found");
  if (e->pins == 0) return absl::FailedPreconditionError("chunk is not pinned");
  if (--e->pins == 0) --pinned_chunks_;
  return absl::OkStatus();
}

void TierManagerImpl::UnpinLocked(const StorageKey& key, uint64_t incarnation) {
  IndexEntry* e = index_.Find(key);
  // A chunk deleted and put again since the lease was granted is a different incarnation.
  if (e == nullptr || e->incarnation != incarnation || e->pins == 0) return;
  if (--e->pins == 0) --pinned_chunks_;
}

absl::Status TierManagerImpl::ReleaseLease(LeaseId lease) {
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLeasesLocked(clock_->NowNanos());
  auto it = leases_.find(lease);
  if (it == leases_.end()) return absl::NotFoundError("unknown or expired lease");
  for (const auto& [key, incarnation] : it->second.pinned) UnpinLocked(key, incarnation);
  leases_.erase(it);  // Its expiry record goes stale and is skipped.
  c_.leases_released.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status TierManagerImpl::RenewLease(LeaseId lease, int64_t lease_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowNanos();
  ExpireLeasesLocked(now);
  auto it = leases_.find(lease);
  if (it == leases_.end()) return absl::NotFoundError("unknown or expired lease");
  it->second.expiry_nanos = now + LeaseNanos(lease_ms);
  lease_expiry_.emplace(it->second.expiry_nanos, lease);
  return absl::OkStatus();
}

uint64_t TierManagerImpl::ExpireLeases() {
  std::lock_guard<std::mutex> lock(mu_);
  return ExpireLeasesLocked(clock_->NowNanos());
}

uint64_t TierManagerImpl::ExpireLeasesLocked(int64_t now) {
  uint64_t expired = 0;
  while (!lease_expiry_.empty() && lease_expiry_.begin()->first <= now) {
    const auto [expiry, id] = *lease_expiry_.begin();
    lease_expiry_.erase(lease_expiry_.begin());
    auto it = leases_.find(id);
    if (it == leases_.end() || it->second.expiry_nanos != expiry) continue;  // Released/renewed.
    for (const auto& [key, incarnation] : it->second.pinned) UnpinLocked(key, incarnation);
    leases_.erase(it);
    ++expired;
  }
  c_.leases_expired.fetch_add(expired, std::memory_order_relaxed);
  return expired;
}

// ---- Background work. -------------------------------------------------------------------------

void TierManagerImpl::RelieveMemoryPressure() {
  for (int t = 0; t < kDisk; ++t) {
    if (!enabled(t)) continue;
    const double cap = static_cast<double>(tiers_[t]->capacity_bytes());
    if (tiers_[t]->used_bytes() <= options_.demote_high_watermark * cap) continue;
    while (tiers_[t]->used_bytes() > options_.demote_low_watermark * cap) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) return;
      }
      if (!EvictOne(t, /*holding_disk=*/false)) break;
    }
  }
}

void TierManagerImpl::BackgroundLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    work_cv_.wait_for(lock, std::chrono::milliseconds(20), [&] {
      return stop_ || !promotions_.empty() || wake_seq_ > passes_done_;
    });
    if (stop_) break;
    const uint64_t seq = wake_seq_;
    while (!promotions_.empty() && !stop_) {
      PromotionJob job = std::move(promotions_.front());
      promotions_.pop_front();
      lock.unlock();
      Promote(std::move(job));
      lock.lock();
    }
    lock.unlock();
    ExpireLeases();
    RelieveMemoryPressure();
    lock.lock();
    passes_done_ = std::max(passes_done_, seq);
    idle_cv_.notify_all();
  }
}

void TierManagerImpl::WaitForBackgroundWork() {
  if (threads_.empty()) return;
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t target = ++wake_seq_;
  work_cv_.notify_all();
  idle_cv_.wait(lock, [&] { return stop_ || (passes_done_ >= target && promotions_.empty()); });
}

StorageStats TierManagerImpl::Stats() const {
  StorageStats s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s.indexed_chunks = index_.size();
    s.pinned_chunks = pinned_chunks_;
    s.active_leases = leases_.size();
    for (int t = 0; t < kNumTiers; ++t) s.tiers[t].chunks = tier_chunks_[t];
  }
  auto load = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  for (int t = 0; t < kNumTiers; ++t) {
    TierStats& ts = s.tiers[t];
    ts.enabled = enabled(t);
    if (ts.enabled) {
      ts.capacity_bytes = tiers_[t]->capacity_bytes();
      ts.used_bytes = tiers_[t]->used_bytes();
    }
    ts.hits = load(c_.hits[t]);
    ts.puts = load(c_.tier_puts[t]);
    ts.bytes_written = load(c_.bytes_written[t]);
    ts.bytes_read = load(c_.bytes_read[t]);
    ts.evictions = load(c_.evictions[t]);
    ts.demotions_out = load(c_.demotions_out[t]);
    ts.promotions_in = load(c_.promotions_in[t]);
    ts.put_rejections = load(c_.put_rejections[t]);
  }
  s.lookups = load(c_.lookups);
  s.lookup_keys = load(c_.lookup_keys);
  s.lookup_hits = load(c_.lookup_hits);
  s.gets = load(c_.gets);
  s.get_hits = load(c_.get_hits);
  s.get_misses = load(c_.get_misses);
  s.puts = load(c_.puts);
  s.put_bytes = load(c_.put_bytes);
  s.put_failures = load(c_.put_failures);
  s.deletes = load(c_.deletes);
  s.checksum_failures = load(c_.checksum_failures);
  s.io_errors = load(c_.io_errors);
  s.disk_full_events = load(c_.disk_full_events);
  s.bytes_demoted = load(c_.bytes_demoted);
  s.bytes_promoted = load(c_.bytes_promoted);
  s.leases_granted = load(c_.leases_granted);
  s.leases_expired = load(c_.leases_expired);
  s.leases_released = load(c_.leases_released);
  return s;
}

}  // namespace internal
}  // namespace kvtier::storage
