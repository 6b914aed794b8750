// LogStore: persistence across reopen, the LogStorage contract (checked
// against raft::MemoryStorage, its in-memory twin), group commit (one fsync
// per Save), identity and bootstrap, and rejection of bad input.
#include "storage/log_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>

#include "leveldb/db.h"
#include "raft/memory_storage.h"
#include "tests/storage/test_util.h"

namespace raftkv::storage {
namespace {

using raft::ConfState;
using raft::Entry;
using ::testing::HasSubstr;
using testing::MakeEntry;
using testing::MakeHardState;
using testing::TempDir;

std::unique_ptr<LogStore> OpenOrDie(const std::string& dir, LogStoreOptions options = {}) {
  auto s = LogStore::Open(dir, options);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

ConfState Voters(std::initializer_list<uint64_t> ids) {
  ConfState c;
  for (uint64_t id : ids) c.add_voters(id);
  return c;
}

TEST(LogStore, NewLogIsEmpty) {
  TempDir d;
  auto s = OpenOrDie(d.path());
  EXPECT_TRUE(s->IsEmpty());
  EXPECT_EQ(s->FirstIndex(), 1u);
  EXPECT_EQ(s->LastIndex(), 0u);
  EXPECT_EQ(*s->Term(0), 0u);
  EXPECT_TRUE(raft::IsLogUnavailable(s->Term(1).status()));
  EXPECT_TRUE(s->Entries(1, 1, 100)->empty());
}

TEST(LogStore, EntriesAndHardStateSurviveReopen) {
  TempDir d;
  {
    auto s = OpenOrDie(d.path());
    ASSERT_TRUE(s->Save({MakeEntry(1, 1, "a"), MakeEntry(2, 1, "b"), MakeEntry(3, 2, "c")},
                        MakeHardState(2, 1, 2))
                    .ok());
    EXPECT_FALSE(s->IsEmpty());
  }
  auto s = OpenOrDie(d.path());
  EXPECT_EQ(s->LastIndex(), 3u);
  EXPECT_EQ(*s->Term(3), 2u);
  EXPECT_EQ(s->hard_state().term(), 2u);
  EXPECT_EQ(s->hard_state().vote(), 1u);
  EXPECT_EQ(s->hard_state().commit(), 2u);
  auto es = s->Entries(1, 4, 1 << 20);
  ASSERT_TRUE(es.ok());
  ASSERT_EQ(es->size(), 3u);
  EXPECT_EQ((*es)[1].data(), "b");
}

// The write-ahead log is allocated up front (cheaper fdatasyncs); its zero
// tail must read as the end of the log, on every reopen.
TEST(LogStore, PreallocatedWriteAheadLogReadsBackAcrossReopens) {
  TempDir d;
  LogStoreOptions o;
  o.write_buffer_size = 1 << 20;
  {
    auto s = OpenOrDie(d.path(), o);
    ASSERT_TRUE(s->Save({MakeEntry(1, 1, "a"), MakeEntry(2, 1, "b")}, MakeHardState(1, 1, 1)).ok());
    uint64_t largest_log = 0;
    for (const auto& f : std::filesystem::directory_iterator(d.path())) {
      if (f.path().extension() == ".log") largest_log = std::max<uint64_t>(largest_log, f.file_size());
    }
    EXPECT_GE(largest_log, o.write_buffer_size) << "the write-ahead log was not allocated up front";
  }
  for (uint64_t i = 3; i <= 5; ++i) {
    auto s = OpenOrDie(d.path(), o);
    ASSERT_EQ(s->LastIndex(), i - 1);
    EXPECT_TRUE(s->open_notes().empty());
    ASSERT_TRUE(s->Save({MakeEntry(i, 2, "e" + std::to_string(i))}, MakeHardState(2, 1, i)).ok());
  }
  auto s = OpenOrDie(d.path(), o);
  EXPECT_EQ(s->LastIndex(), 5u);
  EXPECT_EQ(s->hard_state().term(), 2u);
  auto es = s->Entries(1, 6, 1 << 20);
  ASSERT_TRUE(es.ok());
  ASSERT_EQ(es->size(), 5u);
  EXPECT_EQ((*es)[0].data(), "a");
  EXPECT_EQ((*es)[4].data(), "e5");
}

// The newest LevelDB write-ahead log of `dir`, and where its written part
// ends (the rest is preallocated zeros).
struct WalFile {
  std::string path;
  std::string bytes;
  size_t written_end = 0;
};
WalFile NewestWal(const std::string& dir) {
  WalFile w;
  for (const auto& f : std::filesystem::directory_iterator(dir)) {
    if (f.path().extension() == ".log" && f.path().string() > w.path) w.path = f.path().string();
  }
  std::ifstream in(w.path, std::ios::binary);
  w.bytes.assign(std::istreambuf_iterator<char>(in), {});
  w.written_end = w.bytes.size();
  while (w.written_end > 0 && w.bytes[w.written_end - 1] == 0) --w.written_end;
  return w;
}
void Overwrite(const WalFile& w, size_t offset, const std::string& bytes) {
  std::fstream f(w.path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Writes entries 1..3 and then `last` (entry 4) with one Save each, then
// tears the write of entry 4 the way a crash can: from `tear` (an offset
// into that write, counted back from its end) on, it reads as zeros.
void WriteThenTearLast(const std::string& dir, const Entry& last, size_t tear_from_end) {
  {
    auto s = OpenOrDie(dir);
    for (uint64_t i = 1; i <= 3; ++i) {
      ASSERT_TRUE(s->Save({MakeEntry(i, 1, "v" + std::to_string(i))}, MakeHardState(1, 1, i - 1))
                      .ok());
    }
    ASSERT_TRUE(s->Save({last}, std::nullopt).ok());
  }
  WalFile w = NewestWal(dir);
  ASSERT_GT(w.written_end, tear_from_end);
  Overwrite(w, w.written_end - tear_from_end, std::string(tear_from_end, '\0'));
}

TEST(LogStore, WriteTornInsideARecordIsCutOffOnOpen) {
  TempDir d;
  ASSERT_NO_FATAL_FAILURE(WriteThenTearLast(d.path(), MakeEntry(4, 1, std::string(200, 'x')), 50));
  auto s = OpenOrDie(d.path());
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->LastIndex(), 3u);
  ASSERT_EQ(s->open_notes().size(), 1u);
  EXPECT_THAT(s->open_notes()[0], HasSubstr("torn"));
  auto es = s->Entries(1, 4, 1 << 20);
  ASSERT_TRUE(es.ok());
  ASSERT_EQ(es->size(), 3u);
  EXPECT_EQ((*es)[2].data(), "v3");
  // The repaired log takes new writes and keeps them.
  ASSERT_TRUE(s->Save({MakeEntry(4, 1, "again")}, std::nullopt).ok());
  s.reset();
  s = OpenOrDie(d.path());
  EXPECT_EQ(s->LastIndex(), 4u);
  EXPECT_TRUE(s->open_notes().empty());
}

TEST(LogStore, WriteTornBetweenFragmentsIsCutOffOnOpen) {
  TempDir d;
  // 100 KB spans four 32 KiB blocks: FIRST, MIDDLE, MIDDLE, LAST fragments.
  // Tearing its last 40 KB loses the LAST fragment and part of a MIDDLE one.
  ASSERT_NO_FATAL_FAILURE(
      WriteThenTearLast(d.path(), MakeEntry(4, 1, std::string(100000, 'y')), 40000));
  auto s = OpenOrDie(d.path());
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->LastIndex(), 3u);
  EXPECT_EQ(s->open_notes().size(), 1u);
}

// Where each record of a write-ahead log shorter than one 32 KiB block
// starts (a record: 7-byte header, then as many bytes as its length says).
std::vector<size_t> RecordStarts(const WalFile& w) {
  std::vector<size_t> starts;
  for (size_t p = 0; p + 7 <= w.written_end;) {
    starts.push_back(p);
    p += 7 + (static_cast<unsigned char>(w.bytes[p + 4]) |
              static_cast<unsigned char>(w.bytes[p + 5]) << 8);
  }
  return starts;
}

TEST(LogStore, WriteTornInsideAHeaderIsCutOffOnOpen) {
  TempDir d;
  ASSERT_NO_FATAL_FAILURE(WriteThenTearLast(d.path(), MakeEntry(4, 1, std::string(300, 'z')), 0));
  // Zero entry 4's record from its length field on: only its CRC survives.
  WalFile w = NewestWal(d.path());
  const std::vector<size_t> starts = RecordStarts(w);
  ASSERT_GE(starts.size(), 4u);
  Overwrite(w, starts.back() + 4, std::string(w.written_end - starts.back() - 4, '\0'));
  auto s = OpenOrDie(d.path());
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->LastIndex(), 3u);
  EXPECT_EQ(s->open_notes().size(), 1u);
}

// Damage that is not a torn write is not "repaired" away: a flipped bit in
// the last record (its tail intact) or in an earlier one (whole records
// follow it) fails Open, and the file is left as it was.
TEST(LogStore, FlippedBitInTheWriteAheadLogIsNotMistakenForATornWrite) {
  for (bool last_record : {true, false}) {
    TempDir d;
    ASSERT_NO_FATAL_FAILURE(WriteThenTearLast(d.path(), MakeEntry(4, 1, std::string(200, 'x')), 0));
    WalFile w = NewestWal(d.path());
    const std::vector<size_t> starts = RecordStarts(w);
    ASSERT_GE(starts.size(), 4u);
    const size_t record = last_record ? starts.back() : starts[starts.size() - 3];
    const size_t at = record + 7 + 10;  // inside the payload
    Overwrite(w, at, std::string(1, static_cast<char>(w.bytes[at] ^ 0x10)));
    auto s = LogStore::Open(d.path(), LogStoreOptions{});
    EXPECT_FALSE(s.ok()) << (last_record ? "last" : "earlier") << " record's flipped bit accepted";
    WalFile after = NewestWal(d.path());
    EXPECT_EQ(after.path, w.path);
    EXPECT_EQ(after.bytes.size(), w.bytes.size());
    EXPECT_EQ(after.written_end, w.written_end);
  }
}

// A commit index alone is not written (Raft learns it again); a new term or
// vote is, with the commit index of that moment.
TEST(LogStore, OnlyATermOrVoteChangeWritesTheHardState) {
  TempDir d;
  {
    auto s = OpenOrDie(d.path());
    ASSERT_TRUE(s->Save({MakeEntry(1, 1), MakeEntry(2, 1)}, MakeHardState(1, 1, 1)).ok());
    ASSERT_TRUE(s->Save({MakeEntry(3, 1)}, MakeHardState(1, 1, 3)).ok());
    ASSERT_TRUE(s->Save({}, MakeHardState(1, 1, 3)).ok());
    EXPECT_EQ(s->hard_state().commit(), 3u);  // in memory, the newest
  }
  {
    auto s = OpenOrDie(d.path());
    EXPECT_EQ(s->hard_state().SerializeAsString(), MakeHardState(1, 1, 1).SerializeAsString());
    // A commit index below the one given before the restart is fine now.
    ASSERT_TRUE(s->Save({}, MakeHardState(2, 3, 2)).ok());
  }
  auto s = OpenOrDie(d.path());
  EXPECT_EQ(s->hard_state().SerializeAsString(), MakeHardState(2, 3, 2).SerializeAsString());
  EXPECT_EQ(s->LastIndex(), 3u);
}

// The metadata keys sort before the entries, so the tables LevelDB flushes
// do not overlap, and go down the levels as they are instead of being
// merged (its info log says "Compacting" for a merge).
TEST(LogStore, AppendingNeverMakesLevelDbMergeTables) {
  TempDir d;
  LogStoreOptions o;
  o.write_buffer_size = 64 << 10;
  o.max_file_size = 64 << 10;
  o.sync = false;
  {
    auto s = OpenOrDie(d.path(), o);
    ASSERT_TRUE(s->CheckIdentity("c", 1).ok());
    uint64_t term = 1;
    for (uint64_t i = 1; i <= 3000; ++i) {
      if (i % 1000 == 0) ++term;  // an election now and then
      ASSERT_TRUE(
          s->Save({MakeEntry(i, term, std::string(500, 'p'))}, MakeHardState(term, 1, i)).ok());
    }
  }
  std::ifstream info(d.path() + "/LOG");
  std::string line;
  int flushed = 0;
  std::vector<std::string> merges;
  while (std::getline(info, line)) {
    if (line.find("Level-0 table #") != std::string::npos && line.ends_with("OK")) ++flushed;
    if (line.find("Compacting ") != std::string::npos) merges.push_back(line);
  }
  EXPECT_GT(flushed, 10) << "LevelDB flushed too few tables for the test to mean anything";
  // Each election writes the hard state into one memtable, whose table then
  // spans the metadata keys and its entries: one merge at most per election.
  EXPECT_LE(merges.size(), 2u) << ::testing::PrintToString(merges);
}

// A log written by format 1 (metadata under "h:" keys, after the entries)
// is upgraded in place on open, and reads back the same.
TEST(LogStore, Format1LogIsUpgradedOnOpen) {
  TempDir d;
  raft::SnapshotMetadata meta;
  *meta.mutable_conf_state() = Voters({1, 2, 3});
  {
    leveldb::Options lo;
    lo.create_if_missing = true;
    leveldb::DB* raw = nullptr;
    ASSERT_TRUE(leveldb::DB::Open(lo, d.path(), &raw).ok());
    std::unique_ptr<leveldb::DB> db(raw);
    leveldb::WriteBatch b;
    b.Put("h:format", "raftkv-log-1");
    std::string identity(7, '\0');
    identity += '\x03';  // node 3, as 8 big-endian bytes, then the cluster id
    identity += "cluster-7";
    b.Put("h:identity", identity);
    b.Put("h:hard", MakeHardState(2, 1, 2).SerializeAsString());
    b.Put("h:snapshot", meta.SerializeAsString());
    for (uint64_t i = 1; i <= 3; ++i) {
      std::string key(1, 'e');
      for (int shift = 56; shift >= 0; shift -= 8) key += static_cast<char>((i >> shift) & 0xff);
      b.Put(key, MakeEntry(i, i == 3 ? 2 : 1, "v" + std::to_string(i)).SerializeAsString());
    }
    ASSERT_TRUE(db->Write(leveldb::WriteOptions(), &b).ok());
  }
  {
    auto s = OpenOrDie(d.path());
    ASSERT_NE(s, nullptr);
    ASSERT_EQ(s->open_notes().size(), 1u);
    EXPECT_THAT(s->open_notes()[0], HasSubstr("upgraded"));
    EXPECT_EQ(s->LastIndex(), 3u);
    EXPECT_EQ(*s->Term(3), 2u);
    EXPECT_EQ(s->hard_state().SerializeAsString(), MakeHardState(2, 1, 2).SerializeAsString());
    EXPECT_EQ(s->Snapshot().SerializeAsString(), meta.SerializeAsString());
    EXPECT_TRUE(s->CheckIdentity("cluster-7", 3).ok());
    EXPECT_EQ(s->CheckIdentity("cluster-7", 4).code(), absl::StatusCode::kFailedPrecondition);
    ASSERT_TRUE(s->Save({MakeEntry(4, 2, "v4")}, std::nullopt).ok());
  }
  auto s = OpenOrDie(d.path());
  EXPECT_TRUE(s->open_notes().empty());
  EXPECT_EQ(s->LastIndex(), 4u);
  auto es = s->Entries(1, 5, 1 << 20);
  ASSERT_TRUE(es.ok());
  ASSERT_EQ(es->size(), 4u);
  EXPECT_EQ((*es)[0].data(), "v1");
  EXPECT_EQ((*es)[3].data(), "v4");
}

TEST(LogStore, SaveTruncatesConflictingSuffixOnDisk) {
  TempDir d;
  {
    auto s = OpenOrDie(d.path());
    ASSERT_TRUE(
        s->Save({MakeEntry(1, 1), MakeEntry(2, 1), MakeEntry(3, 1), MakeEntry(4, 1)}, std::nullopt)
            .ok());
    ASSERT_TRUE(s->Save({MakeEntry(2, 2, "new")}, std::nullopt).ok());
    EXPECT_EQ(s->LastIndex(), 2u);
  }
  auto s = OpenOrDie(d.path());  // Open fails on leftover keys past the end
  EXPECT_EQ(s->LastIndex(), 2u);
  EXPECT_EQ(*s->Term(2), 2u);
  EXPECT_EQ((*s->Entries(2, 3, 100))[0].data(), "new");
  EXPECT_TRUE(raft::IsLogUnavailable(s->Term(3).status()));
}

TEST(LogStore, GroupCommitIsOneFsyncPerSave) {
  TempDir d;
  testing::SyncCountingEnv env;
  LogStoreOptions o;
  o.env = &env;
  auto s = OpenOrDie(d.path(), o);
  const int base = env.log_syncs();
  std::vector<Entry> batch;
  for (uint64_t i = 1; i <= 1000; ++i) batch.push_back(MakeEntry(i, 1, std::string(100, 'x')));
  ASSERT_TRUE(s->Save(batch, MakeHardState(1, 1, 0)).ok());
  EXPECT_EQ(env.log_syncs() - base, 1);
  ASSERT_TRUE(s->Save({MakeEntry(1001, 1)}, std::nullopt).ok());
  EXPECT_EQ(env.log_syncs() - base, 2);
  ASSERT_TRUE(s->Save({}, std::nullopt).ok());  // nothing to persist: no fsync
  EXPECT_EQ(env.log_syncs() - base, 2);
}

TEST(LogStore, UnsyncedOptionSkipsFsync) {
  TempDir d;
  testing::SyncCountingEnv env;
  LogStoreOptions o;
  o.env = &env;
  o.sync = false;
  auto s = OpenOrDie(d.path(), o);
  ASSERT_TRUE(s->Save({MakeEntry(1, 1)}, MakeHardState(1, 0, 0)).ok());
  EXPECT_EQ(env.log_syncs(), 0);
}

TEST(LogStore, CompactDropsPrefixAndKeepsSnapshotTerm) {
  TempDir d;
  {
    auto s = OpenOrDie(d.path());
    ASSERT_TRUE(
        s->Save({MakeEntry(1, 1), MakeEntry(2, 2), MakeEntry(3, 3), MakeEntry(4, 3)}, std::nullopt)
            .ok());
    ASSERT_TRUE(s->Compact(2, Voters({1, 2, 3})).ok());
    EXPECT_EQ(s->FirstIndex(), 3u);
    EXPECT_EQ(*s->Term(2), 2u);
    EXPECT_TRUE(raft::IsLogCompacted(s->Term(1).status()));
    EXPECT_TRUE(raft::IsLogCompacted(s->Entries(2, 3, 100).status()));
    EXPECT_TRUE(s->Compact(1, ConfState()).ok());  // already compacted: no-op
    EXPECT_EQ(s->FirstIndex(), 3u);
    EXPECT_THAT(s->Compact(9, ConfState()).message(), HasSubstr("beyond last index 4"));
  }
  auto s = OpenOrDie(d.path());
  EXPECT_EQ(s->FirstIndex(), 3u);
  EXPECT_EQ(s->LastIndex(), 4u);
  EXPECT_EQ(*s->Term(2), 2u);
  EXPECT_EQ(s->Snapshot().index(), 2u);
  EXPECT_EQ(s->GetInitialState()->conf_state.voters_size(), 3);
  // Appending right after the compaction point still works; below it does not.
  EXPECT_TRUE(s->Save({MakeEntry(3, 4)}, std::nullopt).ok());
  EXPECT_THAT(s->Save({MakeEntry(2, 4)}, std::nullopt).message(), HasSubstr("compacted"));
}

TEST(LogStore, ApplySnapshotReplacesTheLog) {
  TempDir d;
  {
    auto s = OpenOrDie(d.path());
    ASSERT_TRUE(s->Save({MakeEntry(1, 1), MakeEntry(2, 1)}, MakeHardState(1, 0, 1)).ok());
    raft::SnapshotMetadata meta;
    meta.set_index(10);
    meta.set_term(3);
    *meta.mutable_conf_state() = Voters({1, 2});
    ASSERT_TRUE(s->ApplySnapshot(meta).ok());
    meta.set_index(5);
    EXPECT_EQ(s->ApplySnapshot(meta).code(), absl::StatusCode::kFailedPrecondition);
  }
  auto s = OpenOrDie(d.path());
  EXPECT_EQ(s->FirstIndex(), 11u);
  EXPECT_EQ(s->LastIndex(), 10u);
  EXPECT_EQ(*s->Term(10), 3u);
  EXPECT_TRUE(raft::IsLogCompacted(s->Term(2).status()));
  ASSERT_TRUE(s->Save({MakeEntry(11, 3)}, MakeHardState(3, 0, 11)).ok());
  EXPECT_EQ(s->LastIndex(), 11u);
}

TEST(LogStore, BootstrapRecordsMembershipOnce) {
  TempDir d;
  {
    auto s = OpenOrDie(d.path());
    EXPECT_THAT(s->Bootstrap(ConfState()).message(), HasSubstr("no voter"));
    EXPECT_THAT(s->Bootstrap(Voters({1, 0})).message(), HasSubstr("node id 0"));
    EXPECT_THAT(s->Bootstrap(Voters({1, 1})).message(), HasSubstr("twice"));
    EXPECT_TRUE(s->IsEmpty());
    ASSERT_TRUE(s->Bootstrap(Voters({1, 2, 3})).ok());
    EXPECT_FALSE(s->IsEmpty());
  }
  auto s = OpenOrDie(d.path());
  EXPECT_FALSE(s->IsEmpty());
  EXPECT_EQ(s->GetInitialState()->conf_state.voters_size(), 3);
  EXPECT_EQ(s->Bootstrap(Voters({1})).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(LogStore, IdentityIsRecordedAndChecked) {
  TempDir d;
  {
    auto s = OpenOrDie(d.path());
    EXPECT_EQ(s->CheckIdentity("", 1).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(s->CheckIdentity("abc", 0).code(), absl::StatusCode::kInvalidArgument);
    ASSERT_TRUE(s->CheckIdentity("abc", 2).ok());
    EXPECT_TRUE(s->CheckIdentity("abc", 2).ok());
  }
  auto s = OpenOrDie(d.path());
  EXPECT_TRUE(s->CheckIdentity("abc", 2).ok());
  absl::Status st = s->CheckIdentity("abc", 3);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("data dir " + d.path() +
                                      " belongs to node 2 of cluster "
                                      "'abc', not node 3 of cluster 'abc'"));
  EXPECT_THAT(s->CheckIdentity("xyz", 2).message(), HasSubstr("cluster 'xyz'"));
}

TEST(LogStore, RejectsBadAppendsAndChangesNothing) {
  TempDir d;
  auto s = OpenOrDie(d.path());
  ASSERT_TRUE(s->Save({MakeEntry(1, 1), MakeEntry(2, 2)}, MakeHardState(2, 1, 1)).ok());
  auto expect_rejected = [&](const std::vector<Entry>& es, std::optional<raft::HardState> hs,
                             const std::string& why) {
    absl::Status st = s->Save(es, hs);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << why;
    EXPECT_THAT(st.message(), HasSubstr(why));
    EXPECT_EQ(s->LastIndex(), 2u);
    EXPECT_EQ(*s->Term(2), 2u);
    EXPECT_EQ(s->hard_state().term(), 2u);
    EXPECT_EQ(s->hard_state().commit(), 1u);
  };
  expect_rejected({MakeEntry(4, 2)}, std::nullopt, "gap");
  expect_rejected({MakeEntry(3, 2), MakeEntry(5, 2)}, std::nullopt, "not contiguous");
  expect_rejected({MakeEntry(3, 1)}, std::nullopt, "never decrease");
  expect_rejected({MakeEntry(3, 0)}, std::nullopt, "terms must be >= 1");
  expect_rejected({MakeEntry(1, 3)}, std::nullopt, "rewrite committed entry 1");
  expect_rejected({}, MakeHardState(1, 1, 1), "term would go back");
  expect_rejected({}, MakeHardState(2, 3, 1), "change the vote");
  expect_rejected({}, MakeHardState(2, 1, 0), "commit would go back");
  expect_rejected({}, MakeHardState(2, 1, 5), "beyond the last log index");
  // A rejected Save wrote nothing, so a reopen sees the same log.
  s.reset();
  s = OpenOrDie(d.path());
  EXPECT_EQ(s->LastIndex(), 2u);
  EXPECT_EQ(s->hard_state().commit(), 1u);
}

TEST(LogStore, EntriesHonoursByteLimitAndBounds) {
  TempDir d;
  LogStoreOptions o;
  o.entry_cache_bytes = 0;  // read from LevelDB
  auto s = OpenOrDie(d.path(), o);
  ASSERT_TRUE(s->Save({MakeEntry(1, 1, std::string(1000, 'x')), MakeEntry(2, 1), MakeEntry(3, 1)},
                      std::nullopt)
                  .ok());
  EXPECT_EQ(s->Entries(1, 4, 10)->size(), 1u);  // at least one entry
  EXPECT_EQ(s->Entries(2, 4, 1)->size(), 1u);
  EXPECT_EQ(s->Entries(2, 4, 10)->size(), 2u);
  EXPECT_EQ(s->Entries(1, 4, 1 << 20)->size(), 3u);
  EXPECT_TRUE(raft::IsLogUnavailable(s->Entries(1, 5, 100).status()));
  EXPECT_EQ(s->Entries(3, 2, 100).status().code(), absl::StatusCode::kInvalidArgument);
}

// The LogStorage contract, checked op by op against MemoryStorage under a
// random workload of appends (with truncation), hard states, compactions,
// snapshots and reopens. Parameter: entry cache size.
class LogStoreMatchesMemoryStorage : public ::testing::TestWithParam<size_t> {};

TEST_P(LogStoreMatchesMemoryStorage, RandomWorkload) {
  TempDir d;
  LogStoreOptions o;
  o.entry_cache_bytes = GetParam();
  o.sync = false;  // durability is not the subject here; reopen still goes through disk
  auto store = OpenOrDie(d.path(), o);
  raft::MemoryStorage mem;
  std::mt19937_64 rng(42 + GetParam());
  uint64_t term = 1, commit = 0;
  // What a reopen must find: the hard state as of its last term or vote
  // change (a commit index alone is not written).
  raft::HardState durable_hs;
  auto save_hard_state = [&](const raft::HardState& hs) {
    if (hs.term() != durable_hs.term() || hs.vote() != durable_hs.vote()) durable_hs = hs;
    mem.SetHardState(hs);
  };
  auto check = [&](int step) {
    SCOPED_TRACE(::testing::Message() << "step " << step);
    ASSERT_EQ(store->FirstIndex(), mem.FirstIndex());
    ASSERT_EQ(store->LastIndex(), mem.LastIndex());
    for (uint64_t i = mem.FirstIndex() - 1; i <= mem.LastIndex() + 1; ++i) {
      auto a = store->Term(i);
      auto b = mem.Term(i);
      ASSERT_EQ(a.status().code(), b.status().code()) << i;
      if (a.ok()) {
        ASSERT_EQ(*a, *b) << i;
      }
    }
    if (mem.FirstIndex() > 1) {
      ASSERT_TRUE(raft::IsLogCompacted(store->Term(mem.FirstIndex() - 2).status()));
    }
    const uint64_t lo = mem.FirstIndex() + rng() % (mem.LastIndex() - mem.FirstIndex() + 2);
    const uint64_t hi = lo + rng() % (mem.LastIndex() + 2 - lo);
    const uint64_t max_bytes = rng() % 400;
    auto a = store->Entries(lo, hi, max_bytes);
    auto b = mem.Entries(lo, hi, max_bytes);
    ASSERT_EQ(a.status().code(), b.status().code());
    if (a.ok()) {
      ASSERT_EQ(a->size(), b->size());
      for (size_t i = 0; i < a->size(); ++i) {
        ASSERT_EQ((*a)[i].SerializeAsString(), (*b)[i].SerializeAsString());
      }
    }
    ASSERT_EQ(store->Snapshot().SerializeAsString(), mem.Snapshot().SerializeAsString());
  };
  for (int step = 0; step < 1000; ++step) {
    const int op = static_cast<int>(rng() % 100);
    if (op < 70) {
      // Append, possibly replacing an uncommitted suffix (a new leader's entries).
      const uint64_t lo = std::max(mem.FirstIndex(), commit + 1);
      const uint64_t first = lo + rng() % (mem.LastIndex() + 2 - lo);
      if (first <= mem.LastIndex()) ++term;
      std::vector<Entry> es;
      const int n = 1 + static_cast<int>(rng() % 8);
      for (int i = 0; i < n; ++i) {
        es.push_back(MakeEntry(first + i, term, std::string(rng() % 64, 'a' + step % 26)));
      }
      const uint64_t last = first + n - 1;
      commit = std::max(commit, last - rng() % (last - commit + 1) / 2);
      auto hs = MakeHardState(term, 1, commit);
      ASSERT_TRUE(store->Save(es, hs).ok()) << store->Save(es, hs);
      ASSERT_TRUE(mem.Append(es).ok());
      save_hard_state(hs);
    } else if (op < 85) {
      if (commit >= mem.FirstIndex()) {
        const uint64_t to = mem.FirstIndex() + rng() % (commit - mem.FirstIndex() + 1);
        ASSERT_TRUE(store->Compact(to, Voters({1, 2, 3})).ok());
        ASSERT_TRUE(mem.Compact(to, Voters({1, 2, 3})).ok());
      }
    } else if (op < 96) {
      raft::SnapshotMetadata meta;
      meta.set_index(mem.LastIndex() + 1 + rng() % 5);
      meta.set_term(++term);
      *meta.mutable_conf_state() = Voters({1, 2});
      ASSERT_TRUE(store->ApplySnapshot(meta).ok());
      mem.ApplySnapshot(meta);
      commit = meta.index();
      ASSERT_TRUE(store->Save({}, MakeHardState(term, 0, commit)).ok());
      save_hard_state(MakeHardState(term, 0, commit));
    } else {
      store.reset();
      store = OpenOrDie(d.path(), o);
      ASSERT_NE(store, nullptr);
      ASSERT_EQ(store->hard_state().SerializeAsString(), durable_hs.SerializeAsString());
    }
    check(step);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(CacheSizes, LogStoreMatchesMemoryStorage,
                         ::testing::Values(size_t{0}, size_t{300}, size_t{8} << 20));

}  // namespace
}  // namespace raftkv::storage
