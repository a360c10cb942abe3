#include "metrics.h"

#include <string>
#include <vector>

#include "shared_memory.h"

namespace kvtier::service {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

const char* kPathNames[kNumTransferPaths] = {"ingest_tensor", "ingest_payload", "fetch_payload",
                                             "fetch_tensor"};
const char* kChecksumSourceNames[kNumChecksumSources] = {"put_stream", "put_payload", "fetch"};

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
          5e-2, 0.1,  0.25,   0.5,  1.0,  2.5,    5.0,  10.0};
}

std::string TierLabel(int i) {
  return std::string(storage::TierName(static_cast<storage::TierKind>(i)));
}

}  // namespace

ServiceMetrics::ServiceMetrics(prometheus::Registry& registry)
    : rpc_duration_(BuildHistogram()
                        .Name("kvtier_rpc_duration_seconds")
                        .Help("Time from the start of a kvtier.v1 call to its status, by method "
                              "and gRPC status code.")
                        .Register(registry)),
      codec_decoded_bytes_(BuildCounter()
                               .Name("kvtier_codec_tensor_bytes_total")
                               .Help("Tensor (decoded) bytes processed by the codecs, by codec "
                                     "and op (encode|decode).")
                               .Register(registry)),
      codec_payload_bytes_(BuildCounter()
                               .Name("kvtier_codec_payload_bytes_total")
                               .Help("Payload (compressed) bytes produced or consumed by the "
                                     "codecs, by codec and op.")
                               .Register(registry)),
      codec_seconds_(BuildCounter()
                         .Name("kvtier_codec_seconds_total")
                         .Help("Time spent in the codecs, by codec and op; throughput is "
                               "rate(kvtier_codec_tensor_bytes_total) / "
                               "rate(kvtier_codec_seconds_total).")
                         .Register(registry)),
      codec_calls_(BuildCounter()
                       .Name("kvtier_codec_calls_total")
                       .Help("Chunks encoded or decoded, by codec, op and device (cpu: the "
                             "reference code; gpu: the CUDA kernels, staged through device "
                             "memory; service.codec_device).")
                       .Register(registry)),
      compression_ratio_(BuildHistogram()
                             .Name("kvtier_compression_ratio")
                             .Help("Tensor bytes / payload bytes of each chunk encoded on "
                                   "ingest, by codec.")
                             .Register(registry)),
      rejected_(BuildCounter()
                    .Name("kvtier_rejected_calls_total")
                    .Help("Calls refused before doing work, by reason (inflight_limit, "
                          "not_serving).")
                    .Register(registry)) {
  // Series that exist from the start, so rate() and alerts see zeros rather than nothing.
  for (const char* reason : {"inflight_limit", "not_serving"}) rejected_.Add({{"reason", reason}});
  for (const char* method : {"CreateNamespace", "GetNamespace", "ListNamespaces", "Lookup", "Put",
                             "Get", "Delete", "Pin", "Unpin", "Compact", "Stats"}) {
    rpc_duration_.Add({{"method", method}, {"code", "OK"}}, LatencyBuckets());
  }
  inflight_ = &BuildGauge()
                   .Name("kvtier_rpcs_in_flight")
                   .Help("kvtier.v1 calls executing now.")
                   .Register(registry)
                   .Add({});
  serving_ = &BuildGauge()
                  .Name("kvtier_serving")
                  .Help("1 when the daemon serves (disk tier open, not draining), else 0.")
                  .Register(registry)
                  .Add({});
  auto& hits = BuildCounter()
                   .Name("kvtier_tier_hits_total")
                   .Help("Chunk accesses (Lookup prefix keys and Gets) served by this tier "
                         "(the fastest tier holding the chunk).")
                   .Register(registry);
  auto& misses = BuildCounter()
                     .Name("kvtier_tier_misses_total")
                     .Help("Chunk accesses this tier could not serve: served by a slower tier "
                           "or found nowhere (the first missing key of a Lookup, a Get of an "
                           "absent chunk).")
                     .Register(registry);
  for (int i = 0; i < storage::kNumTiers; ++i) {
    hits_[i] = &hits.Add({{"tier", TierLabel(i)}});
    misses_[i] = &misses.Add({{"tier", TierLabel(i)}});
  }
  tokens_requested_ = &BuildCounter()
                           .Name("kvtier_lookup_tokens_requested_total")
                           .Help("Tokens covered by the keys of Lookup calls (keys x "
                                 "tokens_per_chunk).")
                           .Register(registry)
                           .Add({});
  tokens_hit_ = &BuildCounter()
                     .Name("kvtier_lookup_tokens_hit_total")
                     .Help("Tokens covered by the cached prefixes Lookup calls found.")
                     .Register(registry)
                     .Add({});
  lookups_ = &BuildCounter()
                  .Name("kvtier_lookups_total")
                  .Help("Lookup calls answered.")
                  .Register(registry)
                  .Add({});
  auto& transfer = BuildCounter()
                       .Name("kvtier_transfer_bytes_total")
                       .Help("Data bytes moved through the API, by path: ingest_tensor / "
                             "ingest_payload (received by Put), fetch_payload / fetch_tensor "
                             "(sent by Get).")
                       .Register(registry);
  for (int i = 0; i < kNumTransferPaths; ++i) transfer_[i] = &transfer.Add({{"path", kPathNames[i]}});
  auth_failures_ = &BuildCounter()
                        .Name("kvtier_auth_failures_total")
                        .Help("Calls refused with UNAUTHENTICATED (missing or wrong token).")
                        .Register(registry)
                        .Add({});
  const prometheus::Histogram::BucketBoundaries ratio_buckets = {1, 1.5, 2, 2.5, 3, 3.5, 4,
                                                                 5, 6, 8, 12, 16};
  for (int c = 0; c < kNumCodecs; ++c) {
    std::string name = kernels::CodecName(static_cast<kernels::CodecId>(c));
    for (int op = 0; op < 2; ++op) {
      prometheus::Labels labels{{"codec", name}, {"op", op == 0 ? "encode" : "decode"}};
      codec_[c][op].decoded_bytes = &codec_decoded_bytes_.Add(labels);
      codec_[c][op].payload_bytes = &codec_payload_bytes_.Add(labels);
      codec_[c][op].seconds = &codec_seconds_.Add(labels);
      for (int dev = 0; dev < 2; ++dev) {
        prometheus::Labels with_device = labels;
        with_device["device"] = dev == 0 ? "cpu" : "gpu";
        codec_[c][op].calls[dev] = &codec_calls_.Add(with_device);
      }
    }
    ratio_[c] = &compression_ratio_.Add({{"codec", name}}, ratio_buckets);
  }
}

void ServiceMetrics::ObserveRpc(const std::string& method, const std::string& code,
                                double seconds) {
  rpc_duration_.Add({{"method", method}, {"code", code}}, LatencyBuckets()).Observe(seconds);
}

void ServiceMetrics::SetEnabledTiers(const std::array<bool, storage::kNumTiers>& enabled) {
  enabled_ = enabled;
}

void ServiceMetrics::CountHits(storage::TierKind tier, uint64_t n) {
  int t = storage::TierIndex(tier);
  hits_[t]->Increment(static_cast<double>(n));
  for (int i = 0; i < t; ++i) {
    if (enabled_[i]) {
      misses_[i]->Increment(static_cast<double>(n));
      miss_totals_[i].fetch_add(n, std::memory_order_relaxed);
    }
  }
}

void ServiceMetrics::CountMiss() {
  for (int i = 0; i < storage::kNumTiers; ++i) {
    if (enabled_[i]) {
      misses_[i]->Increment();
      miss_totals_[i].fetch_add(1, std::memory_order_relaxed);
    }
  }
}

void ServiceMetrics::CountLookup(uint64_t tokens_requested, uint64_t tokens_hit) {
  lookups_->Increment();
  tokens_requested_total_.fetch_add(tokens_requested, std::memory_order_relaxed);
  tokens_hit_total_.fetch_add(tokens_hit, std::memory_order_relaxed);
  tokens_requested_->Increment(static_cast<double>(tokens_requested));
  tokens_hit_->Increment(static_cast<double>(tokens_hit));
}

void ServiceMetrics::ObserveCodec(kernels::CodecId codec, CodecOp op, uint64_t decoded_bytes,
                                  uint64_t payload_bytes, double seconds, bool on_gpu) {
  int c = static_cast<int>(codec);
  if (c < 0 || c >= kNumCodecs) return;
  CodecCounters& k = codec_[c][static_cast<int>(op)];
  k.decoded_bytes->Increment(static_cast<double>(decoded_bytes));
  k.payload_bytes->Increment(static_cast<double>(payload_bytes));
  k.seconds->Increment(seconds);
  k.calls[on_gpu ? 1 : 0]->Increment();
  if (op == CodecOp::kEncode && payload_bytes > 0) {
    ratio_[c]->Observe(static_cast<double>(decoded_bytes) / static_cast<double>(payload_bytes));
  }
}

void ServiceMetrics::CountRejected(const std::string& reason) {
  rejected_.Add({{"reason", reason}}).Increment();
}

namespace {

prometheus::MetricFamily Family(const std::string& name, const std::string& help,
                                prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  return f;
}

void AddValue(prometheus::MetricFamily* f, std::vector<prometheus::ClientMetric::Label> labels,
              double value) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  if (f->type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f->metric.push_back(std::move(m));
}

}  // namespace

std::vector<prometheus::MetricFamily> StorageCollector::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  storage::StorageStats s;
  bool open;
  {
    std::lock_guard<std::mutex> lock(mu_);
    open = tm_ != nullptr;
    if (open) s = tm_->Stats();
  }

  auto checksum = Family("kvtier_checksum_failures_total",
                         "Checksum mismatches detected, by source: put_stream (streamed Put "
                         "bytes vs the declared CRC-32C), put_payload (an uploaded payload's own "
                         "checksums), fetch (a stored payload failing verification before "
                         "decode), storage (a tier copy failing its CRC-32C; dropped, served "
                         "as a miss).",
                         MetricType::Counter);
  for (int i = 0; i < kNumChecksumSources; ++i) {
    AddValue(&checksum, {{"source", kChecksumSourceNames[i]}},
             static_cast<double>(service_->checksum_failures(static_cast<ChecksumSource>(i))));
  }
  AddValue(&checksum, {{"source", "storage"}}, static_cast<double>(s.checksum_failures));
  out.push_back(std::move(checksum));
  if (!open) return out;

  auto capacity = Family("kvtier_tier_capacity_bytes", "Configured capacity of each enabled tier.",
                         MetricType::Gauge);
  auto used = Family("kvtier_tier_used_bytes",
                     "Payload bytes held by each tier (including bytes still read by Gets "
                     "after eviction).",
                     MetricType::Gauge);
  auto chunks = Family("kvtier_tier_chunks", "Chunks with a copy in each tier.", MetricType::Gauge);
  auto evictions = Family("kvtier_tier_evictions_total",
                          "Copies dropped from a tier to make room.", MetricType::Counter);
  auto written = Family("kvtier_tier_written_bytes_total",
                        "Payload bytes written into a tier (puts and movement).",
                        MetricType::Counter);
  auto read = Family("kvtier_tier_read_bytes_total", "Payload bytes read out of a tier.",
                     MetricType::Counter);
  auto rejections = Family("kvtier_tier_put_rejections_total",
                           "Writes into a tier that failed (full, I/O error).",
                           MetricType::Counter);
  for (int i = 0; i < storage::kNumTiers; ++i) {
    const storage::TierStats& t = s.tiers[i];
    if (!t.enabled) continue;
    std::vector<prometheus::ClientMetric::Label> l{{"tier", TierLabel(i)}};
    AddValue(&capacity, l, static_cast<double>(t.capacity_bytes));
    AddValue(&used, l, static_cast<double>(t.used_bytes));
    AddValue(&chunks, l, static_cast<double>(t.chunks));
    AddValue(&evictions, l, static_cast<double>(t.evictions));
    AddValue(&written, l, static_cast<double>(t.bytes_written));
    AddValue(&read, l, static_cast<double>(t.bytes_read));
    AddValue(&rejections, l, static_cast<double>(t.put_rejections));
  }
  auto moved = Family("kvtier_tier_moved_bytes_total",
                      "Payload bytes copied between tiers: demote (down a tier under pressure), "
                      "promote (up a tier on a hit).",
                      MetricType::Counter);
  AddValue(&moved, {{"direction", "demote"}}, static_cast<double>(s.bytes_demoted));
  AddValue(&moved, {{"direction", "promote"}}, static_cast<double>(s.bytes_promoted));
  auto io_errors = Family("kvtier_storage_io_errors_total",
                          "Disk reads or writes that failed (other than checksum mismatches).",
                          MetricType::Counter);
  AddValue(&io_errors, {}, static_cast<double>(s.io_errors));
  auto disk_full = Family("kvtier_storage_disk_full_total",
                          "Disk writes refused because the disk tier or file system was full.",
                          MetricType::Counter);
  AddValue(&disk_full, {}, static_cast<double>(s.disk_full_events));
  auto indexed = Family("kvtier_indexed_chunks", "Distinct chunks stored in any tier.",
                        MetricType::Gauge);
  AddValue(&indexed, {}, static_cast<double>(s.indexed_chunks));
  auto pinned = Family("kvtier_pinned_chunks", "Chunks pinned explicitly or by a lease.",
                       MetricType::Gauge);
  AddValue(&pinned, {}, static_cast<double>(s.pinned_chunks));
  auto leases = Family("kvtier_active_leases", "Lookup leases not yet released or expired.",
                       MetricType::Gauge);
  AddValue(&leases, {}, static_cast<double>(s.active_leases));
  auto expired = Family("kvtier_leases_expired_total",
                        "Leases that ran out without being released by their client.",
                        MetricType::Counter);
  AddValue(&expired, {}, static_cast<double>(s.leases_expired));
  for (auto* f : {&capacity, &used, &chunks, &evictions, &written, &read, &rejections, &moved,
                  &io_errors, &disk_full, &indexed, &pinned, &leases, &expired}) {
    out.push_back(std::move(*f));
  }
  return out;
}

std::vector<prometheus::MetricFamily> ConnectionCollector::Collect() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<prometheus::MetricFamily> out;
  if (shm_ != nullptr) {
    auto regions = Family("kvtier_shared_memory_regions",
                          "Same-node shared memory regions registered by clients.",
                          prometheus::MetricType::Gauge);
    AddValue(&regions, {}, static_cast<double>(shm_->regions()));
    auto mapped = Family("kvtier_shared_memory_mapped_bytes",
                         "Bytes of client shared memory regions kvtierd has mapped.",
                         prometheus::MetricType::Gauge);
    AddValue(&mapped, {}, static_cast<double>(shm_->mapped_bytes()));
    auto refused = Family("kvtier_shared_memory_registrations_refused_total",
                          "Shared memory registrations refused (bad region, token, limits).",
                          prometheus::MetricType::Counter);
    AddValue(&refused, {}, static_cast<double>(shm_->refused()));
    auto bytes = Family("kvtier_shared_memory_bytes_total",
                        "Value bytes Put read from shared memory (direction=\"put\") and Get "
                        "wrote into it (direction=\"get\") instead of the socket.",
                        prometheus::MetricType::Counter);
    AddValue(&bytes, {{"direction", "put"}}, static_cast<double>(shm_->read_bytes()));
    AddValue(&bytes, {{"direction", "get"}}, static_cast<double>(shm_->written_bytes()));
    for (auto* f : {&regions, &mapped, &refused, &bytes}) out.push_back(std::move(*f));
  }
  if (limiter_ == nullptr) return out;
  auto open = Family("kvtier_connections_open",
                     "Client connections open on the Unix socket and TCP (TLS included).",
                     prometheus::MetricType::Gauge);
  AddValue(&open, {}, static_cast<double>(limiter_->Recount()));
  auto refused = Family("kvtier_connections_refused_total",
                        "Connections closed at once because server.max_connections were open.",
                        prometheus::MetricType::Counter);
  AddValue(&refused, {}, static_cast<double>(limiter_->refused()));
  out.push_back(std::move(open));
  out.push_back(std::move(refused));
  return out;
}

}  // namespace kvtier::service
