// GatedFileSystem: a RocksDB FileSystem wrapper that routes every file operation of the disk tier
// through kvtier's DiskIo (see kvtier/storage/disk_io.h), so tests can inject full disks, I/O
// errors and flipped bytes into a real RocksDB without changing the disk tier's code path.
//
// Thread-safety: as thread-safe as the wrapped file system and the DiskIo (both are).
#ifndef KVTIER_STORAGE_SRC_GATED_FILE_SYSTEM_H_
#define KVTIER_STORAGE_SRC_GATED_FILE_SYSTEM_H_

#include <memory>

#include "kvtier/storage/disk_io.h"
#include "rocksdb/file_system.h"

namespace kvtier::storage::internal {

std::shared_ptr<rocksdb::FileSystem> NewGatedFileSystem(std::shared_ptr<rocksdb::FileSystem> base,
                                                        std::shared_ptr<DiskIo> io);

// absl status of a DiskIo gate -> RocksDB IOStatus (ResourceExhausted -> NoSpace).
rocksdb::IOStatus ToIOStatus(const absl::Status& s);

}  // namespace kvtier::storage::internal

#endif  // KVTIER_STORAGE_SRC_GATED_FILE_SYSTEM_H_
