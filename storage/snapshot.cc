// SnapshotReader and SnapshotImport: the state machine's snapshot stream.
//
// Chunk format (all integers big-endian):
//   "RKVSNAP1" | chunk number (8) | flags (1; bit 0 = last chunk)
//   | total records in the stream (8; only meaningful in the last chunk)
//   | records: key length (4) | key | value length (4) | value ...
// Records are the state-machine database's own keys and values (user data,
// applied state, sessions), in key order, minus the format tag. Numbering and
// the final count let the importer reject lost, repeated or reordered chunks.
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "leveldb/write_batch.h"
#include "storage/db_util.h"
#include "storage/state_machine.h"
#include "storage/state_machine_keys.h"

namespace raftkv::storage {

namespace {

constexpr char kMagic[] = "RKVSNAP1";
constexpr size_t kMagicSize = 8;
constexpr size_t kHeaderSize = kMagicSize + 8 + 1 + 8;

void PutRecord(std::string* dst, const leveldb::Slice& k, const leveldb::Slice& v) {
  internal::PutBigEndian32(dst, static_cast<uint32_t>(k.size()));
  dst->append(k.data(), k.size());
  internal::PutBigEndian32(dst, static_cast<uint32_t>(v.size()));
  dst->append(v.data(), v.size());
}

}  // namespace

SnapshotReader::SnapshotReader(StateMachine* owner, leveldb::DB* db, const leveldb::Snapshot* snap,
                               size_t chunk_bytes)
    : owner_(owner), db_(db), snapshot_(snap), chunk_bytes_(chunk_bytes) {}

SnapshotReader::~SnapshotReader() {
  it_.reset();
  db_->ReleaseSnapshot(snapshot_);
  owner_->ReleaseReader();
}

absl::StatusOr<std::optional<std::string>> SnapshotReader::Next() {
  if (done_) return std::nullopt;
  if (it_ == nullptr) {
    leveldb::ReadOptions ro = internal::VerifiedRead();
    ro.snapshot = snapshot_;
    ro.fill_cache = false;
    it_.reset(db_->NewIterator(ro));
    it_->SeekToFirst();
  }
  std::string body;
  uint64_t n = 0;
  while (it_->Valid() && it_->status().ok() && body.size() < chunk_bytes_) {
    if (it_->key() != leveldb::Slice(internal::kFormatKey)) {
      PutRecord(&body, it_->key(), it_->value());
      ++n;
    }
    it_->Next();
  }
  if (!it_->status().ok()) {
    return internal::FromLevelDb({"state machine", owner_->dir()}, "export snapshot",
                                 it_->status());
  }
  records_ += n;
  const bool last = !it_->Valid();
  std::string chunk(kMagic, kMagicSize);
  internal::PutBigEndian64(&chunk, chunks_++);
  chunk.push_back(last ? 1 : 0);
  internal::PutBigEndian64(&chunk, last ? records_ : 0);
  chunk += body;
  if (last) done_ = true;
  return chunk;
}

SnapshotImport::SnapshotImport(StateMachine* owner, std::string dir, std::string name,
                               std::unique_ptr<leveldb::DB> db)
    : owner_(owner), parent_dir_(std::move(dir)), name_(std::move(name)), db_(std::move(db)) {}

SnapshotImport::~SnapshotImport() {
  if (!committed_) {
    db_.reset();
    std::error_code ec;
    std::filesystem::remove_all(std::filesystem::path(parent_dir_) / name_, ec);
  }
  owner_->EndImport();
}

absl::Status SnapshotImport::Write(std::string_view chunk) {
  auto fail = [&](absl::string_view why) {
    failed_ = true;
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot chunk ", next_chunk_, " rejected: ", why));
  };
  if (failed_) return fail("an earlier chunk was rejected; start the import again");
  if (done_) return fail("it comes after the last chunk");
  if (chunk.size() < kHeaderSize || chunk.substr(0, kMagicSize) != kMagic) {
    return fail("not a raftkv state-machine snapshot chunk");
  }
  const uint64_t number = internal::GetBigEndian64(chunk.data() + kMagicSize);
  const bool last = (chunk[kMagicSize + 8] & 1) != 0;
  const uint64_t total = internal::GetBigEndian64(chunk.data() + kMagicSize + 9);
  if (number != next_chunk_) {
    return fail(absl::StrCat("it carries number ", number, " (chunks lost or reordered)"));
  }
  leveldb::WriteBatch batch;
  uint64_t n = 0;
  size_t pos = kHeaderSize;
  auto read_field = [&](std::string_view* out) {
    if (chunk.size() - pos < 4) return false;
    const uint32_t len = internal::GetBigEndian32(chunk.data() + pos);
    pos += 4;
    if (chunk.size() - pos < len) return false;
    *out = chunk.substr(pos, len);
    pos += len;
    return true;
  };
  while (pos < chunk.size()) {
    std::string_view k, v;
    if (!read_field(&k) || !read_field(&v)) return fail("a record is truncated");
    if (k == internal::kStateKey) {
      uint64_t a, t;
      int64_t r;
      if (!internal::DecodeState(v, &a, &t, &r)) return fail("malformed applied-state record");
      has_meta_ = true;
    } else if (k.empty() || (k[0] != internal::kDataPrefix && k[0] != internal::kSessionPrefix &&
                             k[0] != internal::kExpiryPrefix)) {
      return fail("it holds a key outside the state machine's layout");
    }
    batch.Put(leveldb::Slice(k.data(), k.size()), leveldb::Slice(v.data(), v.size()));
    ++n;
  }
  if (last && total != records_ + n) {
    return fail(
        absl::StrCat("the stream should hold ", total, " records but ", records_ + n, " arrived"));
  }
  const std::string path = (std::filesystem::path(parent_dir_) / name_).string();
  absl::Status s = internal::FromLevelDb({"state machine import", path}, "write snapshot chunk",
                                         db_->Write(leveldb::WriteOptions(), &batch));
  if (!s.ok()) {
    failed_ = true;
    return s;
  }
  records_ += n;
  ++next_chunk_;
  done_ = last;
  return absl::OkStatus();
}

}  // namespace raftkv::storage
