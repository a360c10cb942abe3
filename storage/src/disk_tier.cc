#include "disk_tier.h"

#include <cstring>
#include <vector>

#include "gated_file_system.h"
#include "kvtier/common/crc32c.h"
#include "kvtier/common/logging.h"
#include "kvtier/common/status.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "rocksdb/options.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"

namespace kvtier::storage::internal {
namespace {

constexpr char kMetaCf[] = "meta";
constexpr uint8_t kMetaVersion = 1;
// version u8, codec u8, tokens u32, decoded u64, size u64, crc u32, record crc u32 (LE).
constexpr size_t kMetaSize = 1 + 1 + 4 + 8 + 8 + 4 + 4;

template <typename T>
void PutLE(std::string* out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
template <typename T>
T GetLE(const char* p) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

std::string EncodeMeta(const ChunkMeta& meta, uint64_t size, uint32_t crc) {
  std::string out;
  out.reserve(kMetaSize);
  out.push_back(static_cast<char>(kMetaVersion));
  out.push_back(static_cast<char>(meta.codec_id));
  PutLE<uint32_t>(&out, meta.num_tokens);
  PutLE<uint64_t>(&out, meta.decoded_bytes);
  PutLE<uint64_t>(&out, size);
  PutLE<uint32_t>(&out, crc);
  PutLE<uint32_t>(&out, Crc32c(out.data(), out.size()));
  return out;
}

bool DecodeMeta(const rocksdb::Slice& v, ChunkMeta* meta, uint64_t* size, uint32_t* crc) {
  if (v.size() != kMetaSize || static_cast<uint8_t>(v[0]) != kMetaVersion) return false;
  const char* p = v.data();
  if (GetLE<uint32_t>(p + kMetaSize - 4) != Crc32c(p, kMetaSize - 4)) return false;
  meta->codec_id = static_cast<uint8_t>(p[1]);
  meta->num_tokens = GetLE<uint32_t>(p + 2);
  meta->decoded_bytes = GetLE<uint64_t>(p + 6);
  *size = GetLE<uint64_t>(p + 14);
  *crc = GetLE<uint32_t>(p + 22);
  return true;
}

bool DecodeDiskKey(const rocksdb::Slice& k, StorageKey* key) {
  if (k.size() != 4 + ChunkKey::kSize) return false;
  const auto* p = reinterpret_cast<const uint8_t*>(k.data());
  key->ns = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
  std::array<uint8_t, ChunkKey::kSize> bytes;
  std::memcpy(bytes.data(), p + 4, ChunkKey::kSize);
  key->key = ChunkKey(bytes);
  return true;
}

absl::Status FromRocks(const rocksdb::Status& s, const char* what) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = std::string("disk tier ") + what + ": " + s.ToString();
  if (s.IsNoSpace()) return absl::ResourceExhaustedError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsIOError()) return absl::UnavailableError(msg);
  return absl::InternalError(msg);
}

}  // namespace

std::string EncodeDiskKey(const StorageKey& key) {
  std::string out(4 + ChunkKey::kSize, '\0');
  out[0] = static_cast<char>(key.ns >> 24);
  out[1] = static_cast<char>(key.ns >> 16);
  out[2] = static_cast<char>(key.ns >> 8);
  out[3] = static_cast<char>(key.ns);
  std::memcpy(&out[4], key.key.bytes().data(), ChunkKey::kSize);
  return out;
}

struct DiskTier::Config {
  rocksdb::DBOptions db_options;
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
};

DiskTier::DiskTier(const DiskTierOptions& options)
    : options_(options), capacity_(options.capacity_bytes) {}

absl::StatusOr<std::unique_ptr<DiskTier>> DiskTier::Open(const DiskTierOptions& options) {
  std::unique_ptr<DiskTier> tier(new DiskTier(options));
  auto io = options.io ? options.io : DefaultDiskIo();
  tier->env_ = rocksdb::NewCompositeEnv(NewGatedFileSystem(rocksdb::FileSystem::Default(), io));

  rocksdb::Options db_options;
  db_options.env = tier->env_.get();
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.paranoid_checks = true;
  db_options.max_background_jobs = options.max_background_jobs;
  db_options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  db_options.keep_log_file_num = 2;
  db_options.avoid_flush_during_shutdown = false;
  // No automatic background resume after a write error: the disk tier resumes explicitly on its
  // next write (ResumeIfStopped), so a full disk that got space back recovers deterministically.
  db_options.max_bgerror_resume_count = 0;

  rocksdb::BlockBasedTableOptions table;
  table.checksum = rocksdb::kCRC32c;
  table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);

  rocksdb::ColumnFamilyOptions payload_cf;
  payload_cf.compression = rocksdb::kNoCompression;  // Payloads are already compressed.
  payload_cf.bottommost_compression = rocksdb::kNoCompression;
  payload_cf.write_buffer_size = options.write_buffer_bytes;
  payload_cf.enable_blob_files = options.enable_blob_files;
  payload_cf.min_blob_size = options.min_blob_size;
  payload_cf.blob_compression_type = rocksdb::kNoCompression;
  payload_cf.enable_blob_garbage_collection = true;
  payload_cf.blob_garbage_collection_age_cutoff = 0.5;
  payload_cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));

  rocksdb::ColumnFamilyOptions meta_cf;
  meta_cf.compression = rocksdb::kNoCompression;
  meta_cf.write_buffer_size = 4 << 20;
  meta_cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));

  tier->config_ = std::make_unique<Config>();
  tier->config_->db_options = rocksdb::DBOptions(db_options);
  tier->config_->cfs = {{rocksdb::kDefaultColumnFamilyName, payload_cf}, {kMetaCf, meta_cf}};
  std::unique_lock<std::shared_mutex> lock(tier->db_mu_);
  KVTIER_RETURN_IF_ERROR(tier->OpenDb());
  return tier;
}

absl::Status DiskTier::OpenDb() {
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::Status s =
      rocksdb::DB::Open(config_->db_options, options_.path, config_->cfs, &handles, &db_);
  if (!s.ok()) {
    db_ = nullptr;
    return FromRocks(s, "open");
  }
  payload_cf_ = handles[0];
  meta_cf_ = handles[1];
  return absl::OkStatus();
}

void DiskTier::CloseDb() {
  if (db_ == nullptr) return;
  db_->DestroyColumnFamilyHandle(payload_cf_);
  db_->DestroyColumnFamilyHandle(meta_cf_);
  payload_cf_ = meta_cf_ = nullptr;
  rocksdb::Status s = db_->Close();
  if (!s.ok()) KVTIER_LOG(WARNING, "disk tier close: {}", s.ToString());
  delete db_;
  db_ = nullptr;
}

DiskTier::~DiskTier() {
  std::unique_lock<std::shared_mutex> lock(db_mu_);
  if (db_ == nullptr) return;
  // Flush on clean shutdown so the next start reads files instead of replaying the WAL.
  if (!had_write_error_.load()) {
    rocksdb::FlushOptions fo;
    fo.wait = true;
    db_->Flush(fo, {payload_cf_, meta_cf_}).PermitUncheckedError();
  }
  CloseDb();
}

absl::Status DiskTier::ProbeWritable() {
  const std::string probe = options_.path + "/kvtier-write-probe";
  rocksdb::FileSystem* fs = env_->GetFileSystem().get();
  std::unique_ptr<rocksdb::FSWritableFile> file;
  rocksdb::IOStatus s = fs->NewWritableFile(probe, rocksdb::FileOptions(), &file, nullptr);
  if (s.ok()) {
    const std::string block(4096, '\0');
    s = file->Append(block, rocksdb::IOOptions(), nullptr);
    if (s.ok()) s = file->Close(rocksdb::IOOptions(), nullptr);
  }
  fs->DeleteFile(probe, rocksdb::IOOptions(), nullptr).PermitUncheckedError();
  return FromRocks(s, "write probe");
}

absl::Status DiskTier::ResumeIfStopped() {
  if (!had_write_error_.load()) return absl::OkStatus();
  std::lock_guard<std::mutex> resume_lock(resume_mu_);
  if (!had_write_error_.load()) return absl::OkStatus();
  KVTIER_RETURN_IF_ERROR(ProbeWritable());
  {
    std::shared_lock<std::shared_mutex> lock(db_mu_);
    if (db_ != nullptr && db_->Resume().ok()) {
      had_write_error_.store(false);
      return absl::OkStatus();
    }
  }
  // Fatal for RocksDB (e.g. a failed WAL append) or a pending no-space recovery: reopen. The WAL
  // replays every acknowledged write; readers wait for the few milliseconds this takes.
  std::unique_lock<std::shared_mutex> lock(db_mu_);
  CloseDb();
  absl::Status s = OpenDb();
  if (!s.ok()) {
    KVTIER_LOG(ERROR, "disk tier: reopening after a write error failed: {}", s.ToString());
    return s;
  }
  KVTIER_LOG(WARNING, "disk tier: reopened after a write error");
  had_write_error_.store(false);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<TierCopy>> DiskTier::Write(const StorageKey& key,
                                                          const ChunkMeta& meta, uint32_t crc32c,
                                                          absl::Span<const uint8_t> payload) {
  // Reserve capacity first so concurrent writers never overshoot it together.
  uint64_t used = used_.load();
  do {
    if (used + payload.size() > capacity_) {
      return absl::ResourceExhaustedError("disk tier full (capacity_bytes)");
    }
  } while (!used_.compare_exchange_weak(used, used + payload.size()));

  absl::Status status = ResumeIfStopped();
  if (status.ok()) {
    const std::string k = EncodeDiskKey(key);
    rocksdb::WriteBatch batch;
    batch.Put(payload_cf_, k,
              rocksdb::Slice(reinterpret_cast<const char*>(payload.data()), payload.size()));
    batch.Put(meta_cf_, k, EncodeMeta(meta, payload.size(), crc32c));
    rocksdb::WriteOptions wo;
    wo.sync = options_.sync_writes;
    wo.disableWAL = false;
    std::shared_lock<std::shared_mutex> lock(db_mu_);
    std::lock_guard<std::mutex> write_lock(write_mu_);
    rocksdb::Status s = db_ == nullptr ? rocksdb::Status::IOError("database closed")
                                       : db_->Write(wo, &batch);
    if (!s.ok()) had_write_error_.store(true);
    status = FromRocks(s, "write");
  }
  if (!status.ok()) {
    used_.fetch_sub(payload.size());
    return status;
  }
  return std::make_shared<TierCopy>(payload.size(), crc32c, meta);
}

absl::StatusOr<TierRead> DiskTier::Read(const StorageKey& key,
                                        const std::shared_ptr<TierCopy>& copy) {
  auto value = std::make_shared<rocksdb::PinnableSlice>();
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  {
    std::shared_lock<std::shared_mutex> lock(db_mu_);
    if (db_ == nullptr) return absl::UnavailableError("disk tier: database closed");
    rocksdb::Status s = db_->Get(ro, payload_cf_, EncodeDiskKey(key), value.get());
    if (!s.ok()) return FromRocks(s, "read");
    // A value pinned inside RocksDB (block cache, memtable) must not outlive a reopen: copy it.
    if (value->IsPinned()) {
      const std::string copy(value->data(), value->size());
      value->Reset();
      value->PinSelf(copy);
    }
  }
  if (value->size() != copy->size()) {
    return absl::DataLossError("disk tier: stored payload has " + std::to_string(value->size()) +
                               " bytes, expected " + std::to_string(copy->size()));
  }
  if (Crc32c(value->data(), value->size()) != copy->crc32c()) {
    return absl::DataLossError("disk tier: payload CRC32C mismatch");
  }
  const auto* data = reinterpret_cast<const uint8_t*>(value->data());
  const size_t size = value->size();
  return TierRead{std::move(value), data, size};
}

absl::Status DiskTier::Erase(const StorageKey& key, const TierCopy& copy) {
  KVTIER_RETURN_IF_ERROR(ResumeIfStopped());
  const std::string k = EncodeDiskKey(key);
  rocksdb::WriteBatch batch;
  batch.Delete(payload_cf_, k);
  batch.Delete(meta_cf_, k);
  {
    std::shared_lock<std::shared_mutex> lock(db_mu_);
    std::lock_guard<std::mutex> write_lock(write_mu_);
    rocksdb::Status s = db_ == nullptr ? rocksdb::Status::IOError("database closed")
                                       : db_->Write(rocksdb::WriteOptions(), &batch);
    if (!s.ok()) {
      had_write_error_.store(true);
      return FromRocks(s, "erase");
    }
  }
  used_.fetch_sub(copy.size());
  return absl::OkStatus();
}

absl::Status DiskTier::Recover(
    const std::function<void(const StorageKey&, std::shared_ptr<TierCopy>)>& fn) {
  std::shared_lock<std::shared_mutex> lock(db_mu_);
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  ro.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, meta_cf_));
  std::vector<std::string> damaged;
  uint64_t used = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    StorageKey key;
    ChunkMeta meta;
    uint64_t size = 0;
    uint32_t crc = 0;
    if (!DecodeDiskKey(it->key(), &key) || !DecodeMeta(it->value(), &meta, &size, &crc)) {
      damaged.push_back(it->key().ToString());
      continue;
    }
    used += size;
    fn(key, std::make_shared<TierCopy>(size, crc, meta));
  }
  if (!it->status().ok()) {
    // A damaged metadata file: the chunks after the damage are unreachable. Report it; the caller
    // decides whether to start with what was recovered.
    KVTIER_LOG(ERROR, "disk tier recovery stopped early: {}", it->status().ToString());
    recovered_corrupt_ += 1;
  }
  used_.fetch_add(used);
  for (const std::string& k : damaged) {
    rocksdb::WriteBatch batch;
    batch.Delete(payload_cf_, k);
    batch.Delete(meta_cf_, k);
    std::lock_guard<std::mutex> write_lock(write_mu_);
    db_->Write(rocksdb::WriteOptions(), &batch).PermitUncheckedError();
  }
  recovered_corrupt_ += damaged.size();
  return absl::OkStatus();
}

absl::Status DiskTier::Flush() {
  std::shared_lock<std::shared_mutex> lock(db_mu_);
  rocksdb::FlushOptions fo;
  fo.wait = true;
  return FromRocks(db_->Flush(fo, {payload_cf_, meta_cf_}), "flush");
}

}  // namespace kvtier::storage::internal
