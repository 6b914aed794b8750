#include "storage/db_util.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "boost/crc.hpp"
#include "leveldb/env.h"
#include "leveldb/iterator.h"
#include "leveldb/table.h"

namespace raftkv::storage::internal {

void PutBigEndian64(std::string* dst, uint64_t v) {
  char buf[8];
  for (int i = 7; i >= 0; --i) {
    buf[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  dst->append(buf, 8);
}

uint64_t GetBigEndian64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

void PutBigEndian32(std::string* dst, uint32_t v) {
  char buf[4];
  for (int i = 3; i >= 0; --i) {
    buf[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  dst->append(buf, 4);
}

uint32_t GetBigEndian32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string PrefixSuccessor(std::string_view prefix) {
  std::string s(prefix);
  while (!s.empty()) {
    unsigned char last = static_cast<unsigned char>(s.back());
    if (last != 0xff) {
      s.back() = static_cast<char>(last + 1);
      return s;
    }
    s.pop_back();
  }
  return s;
}

namespace {

std::string Advice(const DbName& db) {
  return absl::StrCat(
      " This node must not start from a ", db.kind, " it cannot read. Restore ", db.dir,
      " from a backup, or move it aside and re-add this node to the cluster as a new "
      "member so that it copies its state from the leader.");
}

// LevelDB runs the compactions of every database in the process on one
// background thread of Env::Default() (the wrapping Envs here forward their
// Schedule() to it). That thread starts on the first Schedule() and is named
// after the thread that called it: under load, a second "raftkv-raft" or
// "raftkv-apply" in raftd. Starting it before the first database opens, under
// its own name, lets per-thread tools (top -H, perf) tell compactions apart.
void NameCompactionThread() {
  static const bool scheduled = [] {
    leveldb::Env::Default()->Schedule(
        [](void*) { pthread_setname_np(pthread_self(), "leveldb-compact"); }, nullptr);
    return true;
  }();
  (void)scheduled;
}

// LevelDB's "block checksum mismatch" does not say which file; on that
// error path, read every table file once to name the damaged ones.
std::string DamagedTables(const std::string& dir) {
  leveldb::Env* env = leveldb::Env::Default();
  std::vector<std::string> children;
  if (!env->GetChildren(dir, &children).ok()) return "";
  std::sort(children.begin(), children.end());
  std::vector<std::string> bad;
  for (const std::string& name : children) {
    if (!name.ends_with(".ldb") && !name.ends_with(".sst")) continue;
    const std::string path = dir + "/" + name;
    uint64_t size = 0;
    leveldb::RandomAccessFile* file = nullptr;
    if (!env->GetFileSize(path, &size).ok() || !env->NewRandomAccessFile(path, &file).ok()) {
      bad.push_back(name);
      continue;
    }
    leveldb::Options options;
    options.paranoid_checks = true;
    leveldb::Table* table = nullptr;
    bool ok = leveldb::Table::Open(options, file, size, &table).ok();
    if (ok) {
      leveldb::ReadOptions ro;
      ro.verify_checksums = true;
      ro.fill_cache = false;
      std::unique_ptr<leveldb::Iterator> it(table->NewIterator(ro));
      for (it->SeekToFirst(); it->Valid() && it->status().ok(); it->Next()) {
      }
      ok = it->status().ok();
    }
    delete table;
    delete file;
    if (!ok) bad.push_back(name);
  }
  if (bad.empty()) return "";
  return absl::StrCat(" (damaged file", bad.size() > 1 ? "s" : "", ": ", absl::StrJoin(bad, ", "),
                      ")");
}

}  // namespace

absl::Status FromLevelDb(const DbName& db, absl::string_view what, const leveldb::Status& s) {
  if (s.ok()) return absl::OkStatus();
  std::string msg =
      absl::StrCat(db.kind, " at ", db.dir, ": ", what, " failed: ", s.ToString(), ".");
  if (s.IsCorruption()) {
    msg.pop_back();  // the final "."
    return absl::DataLossError(absl::StrCat(msg, DamagedTables(db.dir), ".", Advice(db)));
  }
  if (s.IsIOError()) {
    if (s.ToString().find("LOCK") != std::string::npos) {
      return absl::UnavailableError(absl::StrCat(
          msg, " Another process (a second raftd?) is probably using this data directory."));
    }
    return absl::UnavailableError(
        absl::StrCat(msg, " Check that the disk is healthy, not full, and writable by this user."));
  }
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  return absl::InternalError(msg);
}

absl::Status Corrupt(const DbName& db, absl::string_view detail) {
  return absl::DataLossError(
      absl::StrCat(db.kind, " at ", db.dir, " is corrupt: ", detail, ".", Advice(db)));
}

absl::Status OpenDb(const DbName& db, const leveldb::Options& options,
                    std::unique_ptr<leveldb::DB>* out) {
  NameCompactionThread();
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(db.dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create the ", db.kind, " directory ", db.dir, ": ", ec.message()));
  }
  // LevelDB with create_if_missing treats a directory without CURRENT as a
  // new database and would start empty next to the old files.
  if (!fs::exists(fs::path(db.dir) / "CURRENT", ec)) {
    for (const auto& f : fs::directory_iterator(db.dir, ec)) {
      const std::string name = f.path().filename().string();
      if (name.rfind("MANIFEST-", 0) == 0 || name.ends_with(".ldb") || name.ends_with(".log") ||
          name.ends_with(".sst")) {
        return Corrupt(db, absl::StrCat("the directory holds LevelDB file ", name,
                                        " but no CURRENT file, so the database cannot be opened"));
      }
    }
  }
  leveldb::DB* raw = nullptr;
  leveldb::Status s = leveldb::DB::Open(options, db.dir, &raw);
  if (!s.ok()) return FromLevelDb(db, "open", s);
  out->reset(raw);
  return absl::OkStatus();
}

leveldb::ReadOptions VerifiedRead() {
  leveldb::ReadOptions ro;
  ro.verify_checksums = true;
  return ro;
}

namespace {

class CopyingRandomAccessFile : public leveldb::RandomAccessFile {
 public:
  explicit CopyingRandomAccessFile(std::unique_ptr<leveldb::RandomAccessFile> base)
      : base_(std::move(base)) {}
  leveldb::Status Read(uint64_t offset, size_t n, leveldb::Slice* result,
                       char* scratch) const override {
    leveldb::Status s = base_->Read(offset, n, result, scratch);
    if (s.ok() && result->data() != scratch) {
      const size_t size = std::min(n, result->size());
      std::memcpy(scratch, result->data(), size);
      *result = leveldb::Slice(scratch, size);
    }
    return s;
  }

 private:
  const std::unique_ptr<leveldb::RandomAccessFile> base_;
};

class CachingReadEnv : public leveldb::EnvWrapper {
 public:
  explicit CachingReadEnv(leveldb::Env* base) : leveldb::EnvWrapper(base) {}
  leveldb::Status NewRandomAccessFile(const std::string& f,
                                      leveldb::RandomAccessFile** r) override {
    leveldb::RandomAccessFile* base = nullptr;
    leveldb::Status s = target()->NewRandomAccessFile(f, &base);
    if (s.ok()) {
      *r = new CopyingRandomAccessFile(std::unique_ptr<leveldb::RandomAccessFile>(base));
    }
    return s;
  }
};

}  // namespace

std::unique_ptr<leveldb::Env> NewCachingReadEnv(leveldb::Env* base) {
  return std::make_unique<CachingReadEnv>(base);
}

namespace {

class PreallocatingLogEnv : public leveldb::EnvWrapper {
 public:
  PreallocatingLogEnv(leveldb::Env* base, uint64_t bytes)
      : leveldb::EnvWrapper(base), bytes_(bytes) {}

  leveldb::Status NewWritableFile(const std::string& f, leveldb::WritableFile** r) override {
    leveldb::Status s = target()->NewWritableFile(f, r);
    if (s.ok() && f.ends_with(".log")) {
      // A second descriptor only to allocate: the base file keeps writing
      // through its own, from offset 0.
      int fd = ::open(f.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd >= 0) {
        (void)::posix_fallocate(fd, 0, static_cast<off_t>(bytes_));
        ::close(fd);
      }
    }
    return s;
  }

 private:
  const uint64_t bytes_;
};

}  // namespace

std::unique_ptr<leveldb::Env> NewPreallocatingLogEnv(leveldb::Env* base, uint64_t bytes) {
  return std::make_unique<PreallocatingLogEnv>(base, bytes);
}

namespace {

// LevelDB's write-ahead log format (leveldb/doc/log_format.md).
constexpr size_t kLogBlockSize = 32768;
constexpr size_t kLogHeaderSize = 7;  // masked crc32c (4), length (2), type (1)
enum LogRecordType : uint8_t { kZeroType = 0, kFull = 1, kFirst = 2, kMiddle = 3, kLast = 4 };

uint32_t LittleEndian32(const unsigned char* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

// LevelDB stores crc32c(type, payload) masked, so that a CRC over data that
// itself holds CRCs is not trivially valid.
uint32_t MaskedRecordCrc(const unsigned char* type_and_payload, size_t n) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc32c;
  crc32c.process_bytes(type_and_payload, n);
  const uint32_t c = crc32c.checksum();
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

// The size to cut `log` (a whole write-ahead log file) back to when it ends
// in a torn write, see RepairTornLogTail(); nullopt when it needs no cut or
// is damaged in some other way.
std::optional<uint64_t> TornTailCut(const std::string& log) {
  const auto* data = reinterpret_cast<const unsigned char*>(log.data());
  const size_t n = log.size();
  size_t zeros_from = n;  // the file is all zeros from here on
  while (zeros_from > 0 && data[zeros_from - 1] == 0) --zeros_from;

  size_t whole_end = 0;  // end of the last whole (logical) record
  bool in_fragment = false;
  size_t p = 0;
  while (true) {
    if (p >= n) return std::nullopt;  // ends cleanly, or mid-record at EOF (LevelDB's own case)
    const size_t block_left = kLogBlockSize - p % kLogBlockSize;
    if (block_left < kLogHeaderSize) {  // block trailer
      p += block_left;
      continue;
    }
    if (n - p < kLogHeaderSize) return std::nullopt;  // a header cut by EOF: LevelDB's case
    const unsigned char* h = data + p;
    const size_t length = size_t{h[4]} | size_t{h[5]} << 8;
    const uint8_t type = h[6];
    if (type == kZeroType && length == 0 && LittleEndian32(h) == 0) {
      // Unwritten (preallocated) space: the writer, which only appends,
      // stopped here. If anything non-zero follows, it is not a torn write
      // (that would start right here), so it is left for LevelDB to judge.
      if (in_fragment && zeros_from <= p) return whole_end;
      return std::nullopt;
    }
    const size_t end = p + kLogHeaderSize + length;
    if (end > p + block_left) {
      // A length no writer produces: a header torn part-way through.
      return zeros_from < p + kLogHeaderSize ? std::optional<uint64_t>(whole_end) : std::nullopt;
    }
    if (end > n) return std::nullopt;  // cut by EOF: LevelDB's own case
    if (MaskedRecordCrc(h + 6, 1 + length) != LittleEndian32(h)) {
      // Torn only if the record's own tail is missing and nothing follows.
      return zeros_from < end ? std::optional<uint64_t>(whole_end) : std::nullopt;
    }
    switch (type) {
      case kFull:
        if (in_fragment) return std::nullopt;
        whole_end = end;
        break;
      case kFirst:
        if (in_fragment) return std::nullopt;
        in_fragment = true;
        break;
      case kMiddle:
        if (!in_fragment) return std::nullopt;
        break;
      case kLast:
        if (!in_fragment) return std::nullopt;
        in_fragment = false;
        whole_end = end;
        break;
      default:
        return std::nullopt;  // a valid CRC over an unknown type: not a tear
    }
    p = end;
  }
}

absl::Status TruncateDurably(const std::string& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("open ", path, ": ", std::strerror(errno)));
  }
  int rc = ::ftruncate(fd, static_cast<off_t>(size));
  if (rc == 0) rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    return absl::UnavailableError(absl::StrCat("truncate ", path, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<TornTailRepair>> RepairTornLogTail(leveldb::Env* env,
                                                              const std::string& dir) {
  std::vector<TornTailRepair> repairs;
  // Only a LevelDB database's logs: never touch files of a directory that
  // is not one (OpenDb refuses it with its own message).
  if (!env->FileExists(dir + "/CURRENT")) return repairs;
  std::vector<std::string> children;
  if (leveldb::Status s = env->GetChildren(dir, &children); !s.ok()) {
    return absl::UnavailableError(s.ToString());
  }
  for (const std::string& name : children) {
    if (!name.ends_with(".log")) continue;
    const std::string path = dir + "/" + name;
    std::string log;
    if (leveldb::Status s = leveldb::ReadFileToString(env, path, &log); !s.ok()) {
      return absl::UnavailableError(s.ToString());
    }
    std::optional<uint64_t> cut = TornTailCut(log);
    if (!cut.has_value()) continue;
    if (absl::Status s = TruncateDurably(path, *cut); !s.ok()) return s;
    repairs.push_back({path, *cut, log.size()});
  }
  return repairs;
}

absl::Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("open directory ", dir, ": ", std::strerror(errno)));
  }
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) {
    return absl::UnavailableError(absl::StrCat("fsync directory ", dir, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

}  // namespace raftkv::storage::internal
