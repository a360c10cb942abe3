#include "gated_file_system.h"

#include <cstring>
#include <string>
#include <utility>

namespace kvtier::storage::internal {

using rocksdb::FileOptions;
using rocksdb::FSRandomAccessFile;
using rocksdb::FSReadRequest;
using rocksdb::FSSequentialFile;
using rocksdb::FSWritableFile;
using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;
using rocksdb::Slice;

rocksdb::IOStatus ToIOStatus(const absl::Status& s) {
  if (s.ok()) return IOStatus::OK();
  const std::string msg(s.message().data(), s.message().size());
  if (s.code() == absl::StatusCode::kResourceExhausted) return IOStatus::NoSpace(msg);
  return IOStatus::IOError(msg);
}

namespace {

// Makes `result` point into `scratch` so AfterRead may modify the bytes (mmap reads return
// pointers into the page cache, which must not be written).
void ToScratch(Slice* result, char* scratch) {
  if (result->size() > 0 && result->data() != scratch && scratch != nullptr) {
    std::memmove(scratch, result->data(), result->size());
    *result = Slice(scratch, result->size());
  }
}

class GatedWritableFile final : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  GatedWritableFile(std::unique_ptr<FSWritableFile> t, std::string path, DiskIo* io)
      : FSWritableFileOwnerWrapper(std::move(t)), path_(std::move(path)), io_(io) {}

  IOStatus Append(const Slice& data, const IOOptions& o, IODebugContext* dbg) override {
    if (auto s = io_->BeforeWrite(path_, data.size()); !s.ok()) return ToIOStatus(s);
    return target()->Append(data, o, dbg);
  }
  IOStatus Append(const Slice& data, const IOOptions& o,
                  const rocksdb::DataVerificationInfo& info, IODebugContext* dbg) override {
    if (auto s = io_->BeforeWrite(path_, data.size()); !s.ok()) return ToIOStatus(s);
    return target()->Append(data, o, info, dbg);
  }
  IOStatus PositionedAppend(const Slice& data, uint64_t offset, const IOOptions& o,
                            IODebugContext* dbg) override {
    if (auto s = io_->BeforeWrite(path_, data.size()); !s.ok()) return ToIOStatus(s);
    return target()->PositionedAppend(data, offset, o, dbg);
  }
  IOStatus PositionedAppend(const Slice& data, uint64_t offset, const IOOptions& o,
                            const rocksdb::DataVerificationInfo& info,
                            IODebugContext* dbg) override {
    if (auto s = io_->BeforeWrite(path_, data.size()); !s.ok()) return ToIOStatus(s);
    return target()->PositionedAppend(data, offset, o, info, dbg);
  }
  IOStatus Sync(const IOOptions& o, IODebugContext* dbg) override {
    if (auto s = io_->BeforeSync(path_); !s.ok()) return ToIOStatus(s);
    return target()->Sync(o, dbg);
  }
  IOStatus Fsync(const IOOptions& o, IODebugContext* dbg) override {
    if (auto s = io_->BeforeSync(path_); !s.ok()) return ToIOStatus(s);
    return target()->Fsync(o, dbg);
  }
  IOStatus RangeSync(uint64_t offset, uint64_t nbytes, const IOOptions& o,
                     IODebugContext* dbg) override {
    if (auto s = io_->BeforeSync(path_); !s.ok()) return ToIOStatus(s);
    return target()->RangeSync(offset, nbytes, o, dbg);
  }

 private:
  const std::string path_;
  DiskIo* io_;
};

class GatedRandomAccessFile final : public rocksdb::FSRandomAccessFileOwnerWrapper {
 public:
  GatedRandomAccessFile(std::unique_ptr<FSRandomAccessFile> t, std::string path, DiskIo* io)
      : FSRandomAccessFileOwnerWrapper(std::move(t)), path_(std::move(path)), io_(io) {}

  IOStatus Read(uint64_t offset, size_t n, const IOOptions& o, Slice* result, char* scratch,
                IODebugContext* dbg) const override {
    if (auto s = io_->BeforeRead(path_); !s.ok()) return ToIOStatus(s);
    IOStatus s = target()->Read(offset, n, o, result, scratch, dbg);
    if (s.ok() && result->size() > 0 && scratch != nullptr) {
      ToScratch(result, scratch);
      io_->AfterRead(path_, offset, scratch, result->size());
    }
    return s;
  }
  // Served one request at a time through Read() so every byte passes the gate.
  IOStatus MultiRead(FSReadRequest* reqs, size_t num_reqs, const IOOptions& o,
                     IODebugContext* dbg) override {
    for (size_t i = 0; i < num_reqs; ++i) {
      reqs[i].status = Read(reqs[i].offset, reqs[i].len, o, &reqs[i].result, reqs[i].scratch, dbg);
    }
    return IOStatus::OK();
  }
  IOStatus ReadAsync(FSReadRequest& req, const IOOptions& o,
                     std::function<void(const FSReadRequest&, void*)> cb, void* cb_arg,
                     void** io_handle, rocksdb::IOHandleDeleter* del_fn,
                     IODebugContext* dbg) override {
    (void)io_handle;
    (void)del_fn;
    req.status = Read(req.offset, req.len, o, &req.result, req.scratch, dbg);
    cb(req, cb_arg);
    return IOStatus::OK();
  }

 private:
  const std::string path_;
  DiskIo* io_;
};

class GatedSequentialFile final : public rocksdb::FSSequentialFileOwnerWrapper {
 public:
  GatedSequentialFile(std::unique_ptr<FSSequentialFile> t, std::string path, DiskIo* io)
      : FSSequentialFileOwnerWrapper(std::move(t)), path_(std::move(path)), io_(io) {}

  IOStatus Read(size_t n, const IOOptions& o, Slice* result, char* scratch,
                IODebugContext* dbg) override {
    if (auto s = io_->BeforeRead(path_); !s.ok()) return ToIOStatus(s);
    IOStatus s = target()->Read(n, o, result, scratch, dbg);
    if (s.ok() && result->size() > 0 && scratch != nullptr) {
      ToScratch(result, scratch);
      io_->AfterRead(path_, position_, scratch, result->size());
    }
    position_ += result->size();
    return s;
  }
  IOStatus PositionedRead(uint64_t offset, size_t n, const IOOptions& o, Slice* result,
                          char* scratch, IODebugContext* dbg) override {
    if (auto s = io_->BeforeRead(path_); !s.ok()) return ToIOStatus(s);
    IOStatus s = target()->PositionedRead(offset, n, o, result, scratch, dbg);
    if (s.ok() && result->size() > 0 && scratch != nullptr) {
      ToScratch(result, scratch);
      io_->AfterRead(path_, offset, scratch, result->size());
    }
    return s;
  }

 private:
  const std::string path_;
  DiskIo* io_;
  uint64_t position_ = 0;
};

class GatedFileSystem final : public rocksdb::FileSystemWrapper {
 public:
  GatedFileSystem(std::shared_ptr<rocksdb::FileSystem> base, std::shared_ptr<DiskIo> io)
      : FileSystemWrapper(std::move(base)), io_(std::move(io)) {}

  const char* Name() const override { return "KvtierGatedFileSystem"; }

  IOStatus NewSequentialFile(const std::string& f, const FileOptions& fo,
                             std::unique_ptr<FSSequentialFile>* r, IODebugContext* dbg) override {
    std::unique_ptr<FSSequentialFile> file;
    IOStatus s = target()->NewSequentialFile(f, fo, &file, dbg);
    if (s.ok()) r->reset(new GatedSequentialFile(std::move(file), f, io_.get()));
    return s;
  }
  IOStatus NewRandomAccessFile(const std::string& f, const FileOptions& fo,
                               std::unique_ptr<FSRandomAccessFile>* r,
                               IODebugContext* dbg) override {
    std::unique_ptr<FSRandomAccessFile> file;
    IOStatus s = target()->NewRandomAccessFile(f, fo, &file, dbg);
    if (s.ok()) r->reset(new GatedRandomAccessFile(std::move(file), f, io_.get()));
    return s;
  }
  IOStatus NewWritableFile(const std::string& f, const FileOptions& fo,
                           std::unique_ptr<FSWritableFile>* r, IODebugContext* dbg) override {
    if (auto s = io_->BeforeCreate(f); !s.ok()) return ToIOStatus(s);
    std::unique_ptr<FSWritableFile> file;
    IOStatus s = target()->NewWritableFile(f, fo, &file, dbg);
    if (s.ok()) r->reset(new GatedWritableFile(std::move(file), f, io_.get()));
    return s;
  }
  IOStatus ReopenWritableFile(const std::string& f, const FileOptions& fo,
                              std::unique_ptr<FSWritableFile>* r, IODebugContext* dbg) override {
    if (auto s = io_->BeforeCreate(f); !s.ok()) return ToIOStatus(s);
    std::unique_ptr<FSWritableFile> file;
    IOStatus s = target()->ReopenWritableFile(f, fo, &file, dbg);
    if (s.ok()) r->reset(new GatedWritableFile(std::move(file), f, io_.get()));
    return s;
  }
  IOStatus ReuseWritableFile(const std::string& f, const std::string& old_f,
                             const FileOptions& fo, std::unique_ptr<FSWritableFile>* r,
                             IODebugContext* dbg) override {
    if (auto s = io_->BeforeCreate(f); !s.ok()) return ToIOStatus(s);
    std::unique_ptr<FSWritableFile> file;
    IOStatus s = target()->ReuseWritableFile(f, old_f, fo, &file, dbg);
    if (s.ok()) r->reset(new GatedWritableFile(std::move(file), f, io_.get()));
    return s;
  }

 private:
  std::shared_ptr<DiskIo> io_;
};

}  // namespace

std::shared_ptr<rocksdb::FileSystem> NewGatedFileSystem(std::shared_ptr<rocksdb::FileSystem> base,
                                                        std::shared_ptr<DiskIo> io) {
  return std::make_shared<GatedFileSystem>(std::move(base), std::move(io));
}

}  // namespace kvtier::storage::internal
