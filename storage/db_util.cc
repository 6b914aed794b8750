#include "storage/db_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
