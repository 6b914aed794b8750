// Power loss, simulated: a LevelDB Env that remembers how much of every file
// was fsynced, and after the databases are closed cuts each file back to
// that length, as a machine crash would (the page cache is lost; a SIGKILL,
// as in crash_test.cc, keeps it). After each "crash" the log must hold
// exactly what Save acknowledged, and the state machine at least what the
// last Sync() covered, consistently with its data.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <random>

#include "storage/log_store.h"
#include "storage/state_machine.h"
#include "tests/storage/crash_workload.h"
#include "tests/storage/test_util.h"

namespace raftkv::storage {
namespace {

class DropUnsyncedEnv : public leveldb::EnvWrapper {
 public:
  DropUnsyncedEnv() : leveldb::EnvWrapper(leveldb::Env::Default()) {}

  leveldb::Status NewWritableFile(const std::string& f, leveldb::WritableFile** r) override {
    leveldb::Status s = target()->NewWritableFile(f, r);
    if (s.ok()) *r = Track(f, *r, 0);
    return s;
  }
  leveldb::Status NewAppendableFile(const std::string& f, leveldb::WritableFile** r) override {
    uint64_t size = 0;
    if (!target()->GetFileSize(f, &size).ok()) size = 0;
    leveldb::Status s = target()->NewAppendableFile(f, r);
    if (s.ok()) *r = Track(f, *r, size);
    return s;
  }
  leveldb::Status RemoveFile(const std::string& f) override {
    Forget(f);
    return target()->RemoveFile(f);
  }
  leveldb::Status RenameFile(const std::string& from, const std::string& to) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = files_.find(from);
      files_.erase(to);
      if (it != files_.end()) {
        files_[to] = it->second;
        files_.erase(it);
      }
    }
    return target()->RenameFile(from, to);
  }

  // The crash: REQUIRES every database using this Env closed.
  void DropUnsyncedData() {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [name, state] : files_) {
      std::error_code ec;
      if (std::filesystem::exists(name, ec)) {
        const uintmax_t size = std::filesystem::file_size(name, ec);
        std::filesystem::resize_file(name, state.synced, ec);
        // A file allocated up front (the log store's write-ahead log) keeps
        // its length, and what was lost reads as zeros.
        if (!ec && size > state.written) std::filesystem::resize_file(name, size, ec);
      }
      state.written = state.synced;
    }
  }

 private:
  struct FileState {
    uint64_t written = 0;
    uint64_t synced = 0;
  };
  class File : public leveldb::WritableFile {
   public:
    File(DropUnsyncedEnv* env, std::string name, leveldb::WritableFile* base)
        : env_(env), name_(std::move(name)), base_(base) {}
    ~File() override { delete base_; }
    leveldb::Status Append(const leveldb::Slice& d) override {
      leveldb::Status s = base_->Append(d);
      if (s.ok()) env_->Update(name_, d.size(), false);
      return s;
    }
    leveldb::Status Close() override { return base_->Close(); }
    leveldb::Status Flush() override { return base_->Flush(); }
    leveldb::Status Sync() override {
      leveldb::Status s = base_->Sync();
      if (s.ok()) env_->Update(name_, 0, true);
      return s;
    }

   private:
    DropUnsyncedEnv* env_;
    std::string name_;
    leveldb::WritableFile* base_;
  };

  leveldb::WritableFile* Track(const std::string& f, leveldb::WritableFile* base, uint64_t size) {
    std::lock_guard<std::mutex> l(mu_);
    files_[f] = FileState{size, size};
    return new File(this, f, base);
  }
  void Update(const std::string& f, uint64_t appended, bool synced) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = files_.find(f);
    if (it == files_.end()) return;
    it->second.written += appended;
    if (synced) it->second.synced = it->second.written;
  }
  void Forget(const std::string& f) {
    std::lock_guard<std::mutex> l(mu_);
    files_.erase(f);
  }

  std::mutex mu_;
  std::map<std::string, FileState> files_;
};

TEST(PowerLoss, AcknowledgedLogAndSyncedStateSurviveLosingThePageCache) {
  testing::TempDir dir;
  DropUnsyncedEnv env;
  LogStoreOptions lo;
  lo.env = &env;
  lo.write_buffer_size = 64 << 10;  // small: memtable flushes and compactions happen
  StateMachineOptions so;
  so.env = &env;
  so.write_buffer_size = 32 << 10;
  std::mt19937_64 rng(99);
  std::vector<uint64_t> acked_terms{0};
  raft::HardState acked_hs;
  // The hard state as of its last term or vote change: what the log store
  // writes (a commit index alone is not written).
  raft::HardState durable_hs;
  uint64_t synced_applied = 0;
  int rounds_with_unsynced_apply = 0;

  for (int round = 0; round < 12; ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    {
      auto log = LogStore::Open(dir.Sub("log"), lo);
      ASSERT_TRUE(log.ok()) << log.status();
      auto sm = StateMachine::Open(dir.Sub("sm"), so);
      ASSERT_TRUE(sm.ok()) << sm.status();

      // What survived must be exactly what was acknowledged.
      ASSERT_EQ((*log)->LastIndex(), acked_terms.size() - 1);
      ASSERT_EQ((*log)->hard_state().SerializeAsString(), durable_hs.SerializeAsString());
      for (uint64_t i = (*log)->FirstIndex(); i <= (*log)->LastIndex(); ++i) {
        ASSERT_EQ(*(*log)->Term(i), acked_terms[i]) << i;
      }
      auto entries = (*log)->Entries((*log)->FirstIndex(), (*log)->LastIndex() + 1, UINT64_MAX);
      ASSERT_TRUE(entries.ok()) << entries.status();
      for (const auto& e : *entries) {
        ASSERT_EQ(e.SerializeAsString(),
                  testing::WorkloadEntry(e.index(), e.term()).SerializeAsString());
      }
      const uint64_t applied = (*sm)->applied_index();
      ASSERT_GE(applied, synced_applied);
      ASSERT_GE(applied, (*log)->Snapshot().index());
      ASSERT_LE(applied, acked_hs.commit());
      const testing::ExpectedState want = testing::ExpectedStateAt(applied);
      ASSERT_EQ((*sm)->revision(), want.revision);
      auto all = (*sm)->RangePrefix("", 0);
      ASSERT_TRUE(all.ok());
      ASSERT_EQ(all->kvs.size(), want.kvs.size());
      for (const auto& kv : all->kvs) {
        ASSERT_EQ(kv.SerializeAsString(), want.kvs.at(kv.key()).SerializeAsString());
      }

      // Work: appends (some replacing an uncommitted suffix), applies, and a
      // sync + compaction now and then; then the power goes.
      const int batches = 20 + static_cast<int>(rng() % 40);
      bool unsynced_apply = false;
      for (int b = 0; b < batches; ++b) {
        const uint64_t last = (*log)->LastIndex();
        raft::HardState hs = (*log)->hard_state();
        // After a restart the leader tells the commit index again.
        hs.set_commit(std::max(hs.commit(), acked_hs.commit()));
        uint64_t term = std::max<uint64_t>(hs.term(), 1);
        uint64_t first = last + 1;
        if (last > hs.commit() && rng() % 6 == 0) {
          first = hs.commit() + 1 + rng() % (last - hs.commit());
          ++term;
        }
        const uint64_t n = 1 + rng() % 24;
        std::vector<raft::Entry> es;
        for (uint64_t i = first; i < first + n; ++i) es.push_back(testing::WorkloadEntry(i, term));
        hs.set_term(term);
        hs.set_vote(1);
        hs.set_commit(std::max(hs.commit(), first + n - 1 - rng() % std::min<uint64_t>(n, 3)));
        ASSERT_TRUE((*log)->Save(es, hs).ok());
        acked_terms.resize(first);
        for (uint64_t i = 0; i < n; ++i) acked_terms.push_back(term);
        if (hs.term() != acked_hs.term() || hs.vote() != acked_hs.vote()) durable_hs = hs;
        acked_hs = hs;
        while ((*sm)->applied_index() < hs.commit()) {
          auto todo = (*log)->Entries((*sm)->applied_index() + 1, hs.commit() + 1, 16 << 10);
          ASSERT_TRUE(todo.ok()) << todo.status();
          ASSERT_TRUE((*sm)->Apply(*todo).ok());
          unsynced_apply = true;
        }
        if (rng() % 10 == 0) {
          ASSERT_TRUE((*sm)->Sync().ok());
          synced_applied = (*sm)->applied_index();
          unsynced_apply = false;
          const uint64_t upto = synced_applied > 5 ? synced_applied - 5 : 0;
          ASSERT_TRUE((*log)->Compact(upto, raft::ConfState()).ok());
        }
      }
      rounds_with_unsynced_apply += unsynced_apply;
    }
    env.DropUnsyncedData();
  }
  EXPECT_GT(rounds_with_unsynced_apply, 0);
}

}  // namespace
}  // namespace raftkv::storage
