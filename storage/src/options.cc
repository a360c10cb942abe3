#include "kvtier/storage/options.h"

#include <fmt/format.h>

namespace kvtier::storage {
namespace {
bool IsPowerOfTwo(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }
absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }
}  // namespace

absl::Status GpuTierOptions::Validate() const {
  if (capacity_bytes == 0) return absl::OkStatus();
  if (device < 0) return Invalid(fmt::format("gpu.device must be >= 0, got {}", device));
  if (!IsPowerOfTwo(slab_bytes) || slab_bytes < 256) {
    return Invalid(fmt::format("gpu.slab_bytes must be a power of two >= 256, got {}", slab_bytes));
  }
  if (capacity_bytes < slab_bytes) {
    return Invalid(fmt::format("gpu.capacity_bytes ({}) is smaller than one slab ({})",
                               capacity_bytes, slab_bytes));
  }
  return absl::OkStatus();
}

absl::Status HostTierOptions::Validate() const {
  if (capacity_bytes == 0) return absl::OkStatus();
  if (!IsPowerOfTwo(alignment) || alignment < 8 || alignment > (1u << 20)) {
    return Invalid(
        fmt::format("host.alignment must be a power of two in [8, 1 MiB], got {}", alignment));
  }
  if (capacity_bytes < alignment) {
    return Invalid(fmt::format("host.capacity_bytes ({}) is smaller than the alignment ({})",
                               capacity_bytes, alignment));
  }
  return absl::OkStatus();
}

absl::Status DiskTierOptions::Validate() const {
  if (path.empty()) return absl::OkStatus();
  if (capacity_bytes == 0) return Invalid("disk.capacity_bytes must be > 0 when disk.path is set");
  if (write_buffer_bytes < (1u << 20)) return Invalid("disk.write_buffer_bytes must be >= 1 MiB");
  if (max_background_jobs < 1) return Invalid("disk.max_background_jobs must be >= 1");
  return absl::OkStatus();
}

absl::Status TierManagerOptions::Validate() const {
  if (auto s = gpu.Validate(); !s.ok()) return s;
  if (auto s = host.Validate(); !s.ok()) return s;
  if (auto s = disk.Validate(); !s.ok()) return s;
  if (gpu.capacity_bytes == 0 && host.capacity_bytes == 0 && disk.path.empty()) {
    return Invalid("no tier enabled: set gpu.capacity_bytes, host.capacity_bytes or disk.path");
  }
  if (policy != "lru" && policy != "prefix_lru" && policy != "s3fifo") {
    return Invalid(fmt::format("unknown policy '{}' (lru, prefix_lru, s3fifo)", policy));
  }
  if (!(s3fifo_small_fraction > 0 && s3fifo_small_fraction <= 0.9)) {
    return Invalid(fmt::format("s3fifo_small_fraction must be in (0, 0.9], got {}",
                               s3fifo_small_fraction));
  }
  if (max_chunk_bytes == 0) return Invalid("max_chunk_bytes must be > 0");
  if (default_lease_ms <= 0 || max_lease_ms < default_lease_ms) {
    return Invalid(fmt::format("need 0 < default_lease_ms ({}) <= max_lease_ms ({})",
                               default_lease_ms, max_lease_ms));
  }
  if (!(demote_low_watermark > 0 && demote_low_watermark <= demote_high_watermark &&
        demote_high_watermark <= 1.0)) {
    return Invalid(fmt::format("need 0 < demote_low_watermark ({}) <= demote_high_watermark ({}) <= 1",
                               demote_low_watermark, demote_high_watermark));
  }
  if (background_threads < 0 || background_threads > 16) {
    return Invalid(fmt::format("background_threads must be in [0, 16], got {}", background_threads));
  }
  return absl::OkStatus();
}

}  // namespace kvtier::storage
