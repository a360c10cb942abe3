// DiskIo: the gate every file operation of the disk tier passes through.
//
// The disk tier runs RocksDB on a file system wrapper that asks DiskIo before each write, sync,
// read and file creation, and lets it see (and, in tests, alter) the bytes read. The default
// implementation lets everything through unchanged; FaultInjectingDiskIo lets tests simulate a
// full disk, I/O errors and bit flips without touching the production code path.
//
// Thread-safety: implementations are called concurrently from RocksDB's foreground and background
// threads and must be thread-safe.
#ifndef KVTIER_STORAGE_DISK_IO_H_
#define KVTIER_STORAGE_DISK_IO_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"

namespace kvtier::storage {

class DiskIo {
 public:
  virtual ~DiskIo() = default;

  // Before appending `bytes` to the file at `path`. A non-OK status fails the write; return
  // ResourceExhausted to signal "no space left on device".
  virtual absl::Status BeforeWrite(const std::string& path, size_t bytes) {
    (void)path;
    (void)bytes;
    return absl::OkStatus();
  }
  // Before creating or opening a file for writing.
  virtual absl::Status BeforeCreate(const std::string& path) {
    (void)path;
    return absl::OkStatus();
  }
  // Before a sync/fsync of `path`.
  virtual absl::Status BeforeSync(const std::string& path) {
    (void)path;
    return absl::OkStatus();
  }
  // Before reading from `path`. A non-OK status fails the read with an I/O error.
  virtual absl::Status BeforeRead(const std::string& path) {
    (void)path;
    return absl::OkStatus();
  }
  // After `size` bytes at file offset `offset` of `path` were read into `data`; may modify them.
  virtual void AfterRead(const std::string& path, uint64_t offset, char* data, size_t size) {
    (void)path;
    (void)offset;
    (void)data;
    (void)size;
  }
};

// The pass-through implementation (what production uses).
std::shared_ptr<DiskIo> DefaultDiskIo();

// Test-facing DiskIo whose faults are switched at run time. All switches are atomics, so a test
// may flip them while the tier is running.
class FaultInjectingDiskIo : public DiskIo {
 public:
  // When true, writes and file creations fail with ResourceExhausted ("no space left").
  void SetDiskFull(bool full) { disk_full_.store(full); }
  // When true, writes fail with an I/O error (Unavailable).
  void SetWriteErrors(bool on) { write_errors_.store(on); }
  // When true, reads fail with an I/O error (DataLoss).
  void SetReadErrors(bool on) { read_errors_.store(on); }
  // When true, every read of a file whose name ends in `suffix` (e.g. ".blob") has its first
  // byte inverted after the read.
  void SetFlipReadBytes(bool on, const std::string& suffix = "");

  // Counters of injected faults.
  uint64_t injected_faults() const { return injected_.load(); }

  absl::Status BeforeWrite(const std::string& path, size_t bytes) override;
  absl::Status BeforeCreate(const std::string& path) override;
  absl::Status BeforeRead(const std::string& path) override;
  void AfterRead(const std::string& path, uint64_t offset, char* data, size_t size) override;

 private:
  std::atomic<bool> disk_full_{false};
  std::atomic<bool> write_errors_{false};
  std::atomic<bool> read_errors_{false};
  std::atomic<bool> flip_reads_{false};
  std::atomic<uint64_t> injected_{0};
  std::mutex mu_;
  std::string flip_suffix_;  // Guarded by mu_.
};

}  // namespace kvtier::storage

#endif  // KVTIER_STORAGE_DISK_IO_H_
