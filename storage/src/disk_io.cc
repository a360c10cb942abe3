#include "kvtier/storage/disk_io.h"

namespace kvtier::storage {

std::shared_ptr<DiskIo> DefaultDiskIo() {
  static auto* io = new std::shared_ptr<DiskIo>(std::make_shared<DiskIo>());
  return *io;
}

void FaultInjectingDiskIo::SetFlipReadBytes(bool on, const std::string& suffix) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    flip_suffix_ = suffix;
  }
  flip_reads_.store(on);
}

absl::Status FaultInjectingDiskIo::BeforeWrite(const std::string& path, size_t bytes) {
  (void)bytes;
  if (disk_full_.load()) {
    injected_.fetch_add(1);
    return absl::ResourceExhaustedError("injected: no space left on device writing " + path);
  }
  if (write_errors_.load()) {
    injected_.fetch_add(1);
    return absl::UnavailableError("injected: I/O error writing " + path);
  }
  return absl::OkStatus();
}

absl::Status FaultInjectingDiskIo::BeforeCreate(const std::string& path) {
  if (disk_full_.load()) {
    injected_.fetch_add(1);
    return absl::ResourceExhaustedError("injected: no space left on device creating " + path);
  }
  return absl::OkStatus();
}

absl::Status FaultInjectingDiskIo::BeforeRead(const std::string& path) {
  if (read_errors_.load()) {
    injected_.fetch_add(1);
    return absl::DataLossError("injected: I/O error reading " + path);
  }
  return absl::OkStatus();
}

void FaultInjectingDiskIo::AfterRead(const std::string& path, uint64_t offset, char* data,
                                     size_t size) {
  (void)offset;
  if (!flip_reads_.load() || size == 0) return;
  std::string suffix;
  {
    std::lock_guard<std::mutex> lock(mu_);
    suffix = flip_suffix_;
  }
  if (path.size() < suffix.size() ||
      path.compare(path.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return;
  }
  data[0] = static_cast<char>(~data[0]);
  injected_.fetch_add(1);
}

}  // namespace kvtier::storage
