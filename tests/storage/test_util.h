// Helpers for storage tests: a temporary directory removed on destruction,
// entry builders, and a LevelDB Env that counts fsyncs of LevelDB log files.
// Single-threaded test code.
#pragma once

#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <string>

#include "leveldb/env.h"
#include "raft/log_storage.h"
#include "raftkv/v1/state_machine.pb.h"

namespace raftkv::storage::testing {

class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl =
        std::string(base != nullptr && *base ? base : "/tmp") + "/raftkv-storage-XXXXXX";
    char* p = mkdtemp(tmpl.data());
    path_ = p != nullptr ? p : "";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline raft::Entry MakeEntry(uint64_t index, uint64_t term, std::string data = "") {
  raft::Entry e;
  e.set_index(index);
  e.set_term(term);
  e.set_data(std::move(data));
  return e;
}

inline raft::HardState MakeHardState(uint64_t term, uint64_t vote, uint64_t commit) {
  raft::HardState hs;
  hs.set_term(term);
  hs.set_vote(vote);
  hs.set_commit(commit);
  return hs;
}

// Counts Sync() calls on LevelDB write-ahead log files (*.log).
class SyncCountingEnv : public leveldb::EnvWrapper {
 public:
  SyncCountingEnv() : leveldb::EnvWrapper(leveldb::Env::Default()) {}
  int log_syncs() const { return log_syncs_.load(); }

  leveldb::Status NewWritableFile(const std::string& f, leveldb::WritableFile** r) override {
    leveldb::Status s = target()->NewWritableFile(f, r);
    if (s.ok()) *r = Wrap(f, *r);
    return s;
  }
  leveldb::Status NewAppendableFile(const std::string& f, leveldb::WritableFile** r) override {
    leveldb::Status s = target()->NewAppendableFile(f, r);
    if (s.ok()) *r = Wrap(f, *r);
    return s;
  }

 private:
  class File : public leveldb::WritableFile {
   public:
    File(leveldb::WritableFile* base, std::atomic<int>* counter) : base_(base), counter_(counter) {}
    ~File() override { delete base_; }
    leveldb::Status Append(const leveldb::Slice& d) override { return base_->Append(d); }
    leveldb::Status Close() override { return base_->Close(); }
    leveldb::Status Flush() override { return base_->Flush(); }
    leveldb::Status Sync() override {
      if (counter_ != nullptr) ++*counter_;
      return base_->Sync();
    }

   private:
    leveldb::WritableFile* base_;
    std::atomic<int>* counter_;
  };
  leveldb::WritableFile* Wrap(const std::string& f, leveldb::WritableFile* base) {
    const bool is_log = f.size() > 4 && f.compare(f.size() - 4, 4, ".log") == 0;
    return new File(base, is_log ? &log_syncs_ : nullptr);
  }
  std::atomic<int> log_syncs_{0};
};

}  // namespace raftkv::storage::testing
