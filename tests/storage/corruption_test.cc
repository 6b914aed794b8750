// A damaged or foreign database makes Open fail with an error that names the
// directory (and the file, where LevelDB knows it) and says what to do; the
// node never starts from a log or a state it could not read.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "leveldb/db.h"
#include "storage/log_store.h"
#include "storage/state_machine.h"
#include "tests/storage/test_util.h"

namespace raftkv::storage {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::MakeEntry;
using testing::TempDir;

// Fills a fresh log store in `dir` with `n` entries and closes it. With
// `flush`, reopens it once so LevelDB moves the entries into a table file.
void WriteLog(const std::string& dir, int n, bool flush) {
  {
    auto s = LogStore::Open(dir, {});
    ASSERT_TRUE(s.ok()) << s.status();
    std::vector<raft::Entry> es;
    for (int i = 1; i <= n; ++i) es.push_back(MakeEntry(i, 1, std::string(100, 'a' + i % 26)));
    ASSERT_TRUE((*s)->Save(es, testing::MakeHardState(1, 1, 0)).ok());
  }
  if (flush) {
    ASSERT_TRUE(LogStore::Open(dir, {}).ok());
  }
}

std::vector<fs::path> FilesEndingWith(const std::string& dir, const std::string& suffix) {
  std::vector<fs::path> out;
  for (const auto& f : fs::directory_iterator(dir)) {
    const std::string n = f.path().filename().string();
    if (n.size() >= suffix.size() &&
        n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        fs::file_size(f.path()) > 0) {
      out.push_back(f.path());
    }
  }
  return out;
}

// Overwrites `len` bytes at `offset` (from the start, or from the middle when
// offset < 0) with garbage.
void Scribble(const fs::path& file, long offset, int len) {
  const auto size = static_cast<long>(fs::file_size(file));
  if (offset < 0) offset = size / 2;
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(offset);
  for (int i = 0; i < len; ++i) f.put(static_cast<char>(0x5a ^ i));
}

void ExpectRefusal(const absl::Status& s, const std::string& dir) {
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr(dir), HasSubstr("must not start"), HasSubstr("Restore")));
}

TEST(Corruption, DamagedWriteAheadLogRefusesToOpen) {
  TempDir d;
  WriteLog(d.path(), 200, /*flush=*/false);
  auto logs = FilesEndingWith(d.path(), ".log");
  ASSERT_EQ(logs.size(), 1u);
  Scribble(logs[0], -1, 16);
  auto s = LogStore::Open(d.path(), {});
  ExpectRefusal(s.status(), d.path());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("Corruption"));
}

TEST(Corruption, DamagedTableFileIsNamedInTheError) {
  TempDir d;
  WriteLog(d.path(), 200, /*flush=*/true);
  auto tables = FilesEndingWith(d.path(), ".ldb");
  ASSERT_EQ(tables.size(), 1u);
  Scribble(tables[0], 200, 16);
  auto s = LogStore::Open(d.path(), {});
  ExpectRefusal(s.status(), d.path());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr(tables[0].filename().string()));
}

TEST(Corruption, MissingCurrentFileIsNotTreatedAsANewDatabase) {
  TempDir d;
  WriteLog(d.path(), 10, /*flush=*/true);
  fs::remove(fs::path(d.path()) / "CURRENT");
  auto s = LogStore::Open(d.path(), {});
  ExpectRefusal(s.status(), d.path());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("no CURRENT file"));
}

TEST(Corruption, TruncatedManifestRefusesToOpen) {
  TempDir d;
  WriteLog(d.path(), 10, /*flush=*/true);
  auto manifests = FilesEndingWith(d.path(), "");
  for (const auto& f : manifests) {
    if (f.filename().string().rfind("MANIFEST-", 0) == 0) {
      fs::resize_file(f, fs::file_size(f) / 2);
    }
  }
  auto s = LogStore::Open(d.path(), {});
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr(d.path()));
}

TEST(Corruption, GapOrGarbageInTheLogIsDetected) {
  TempDir d;
  WriteLog(d.path(), 10, /*flush=*/false);
  {
    leveldb::DB* raw;
    ASSERT_TRUE(leveldb::DB::Open(leveldb::Options(), d.path(), &raw).ok());
    std::unique_ptr<leveldb::DB> db(raw);
    std::string key = "e";
    for (int i = 0; i < 7; ++i) key.push_back('\0');
    key.push_back('\5');
    ASSERT_TRUE(db->Delete(leveldb::WriteOptions(), key).ok());
  }
  auto s = LogStore::Open(d.path(), {});
  ExpectRefusal(s.status(), d.path());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("gap: entry 5 is missing"));

  TempDir d2;
  WriteLog(d2.path(), 10, /*flush=*/false);
  {
    leveldb::DB* raw;
    ASSERT_TRUE(leveldb::DB::Open(leveldb::Options(), d2.path(), &raw).ok());
    std::unique_ptr<leveldb::DB> db(raw);
    std::string key = "e";
    for (int i = 0; i < 7; ++i) key.push_back('\0');
    key.push_back('\3');
    ASSERT_TRUE(db->Put(leveldb::WriteOptions(), key, "\xff").ok());
  }
  s = LogStore::Open(d2.path(), {});
  ExpectRefusal(s.status(), d2.path());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("entry 3 does not parse"));
}

TEST(Corruption, DamagedStateMachineTableRefusesToOpen) {
  TempDir d;
  {
    auto sm = StateMachine::Open(d.path(), {});
    ASSERT_TRUE(sm.ok());
    std::vector<raft::Entry> es;
    for (int i = 1; i <= 200; ++i) {
      v1::Command c;
      c.mutable_put()->set_key("key" + std::to_string(i));
      c.mutable_put()->set_value(std::string(100, 'v'));
      es.push_back(MakeEntry(i, 1, c.SerializeAsString()));
    }
    ASSERT_TRUE((*sm)->Apply(es).ok());
  }
  ASSERT_TRUE(StateMachine::Open(d.path(), {}).ok());  // moves the data into a table
  const std::string db = d.Sub("db-000001");
  auto tables = FilesEndingWith(db, ".ldb");
  ASSERT_EQ(tables.size(), 1u);
  Scribble(tables[0], 300, 16);
  auto s = StateMachine::Open(d.path(), {});
  ExpectRefusal(s.status(), db);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr(tables[0].filename().string()));
}

TEST(Corruption, ForeignOrBusyDirectoriesAreRefusedWithAReason) {
  TempDir d;
  {
    auto sm = StateMachine::Open(d.path(), {});
    ASSERT_TRUE(sm.ok());
  }
  // A state-machine database is not a log.
  auto log = LogStore::Open(d.Sub("db-000001"), {});
  EXPECT_EQ(log.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(log.status().message()), HasSubstr("not a raftkv log store"));
  // A log directory is not a state-machine directory.
  TempDir l;
  WriteLog(l.path(), 3, false);
  auto sm = StateMachine::Open(l.path(), {});
  EXPECT_FALSE(sm.ok());
  EXPECT_THAT(std::string(sm.status().message()), HasSubstr("not a state machine directory"));
  // The same log opened twice (a second raftd on the same data dir).
  auto first = LogStore::Open(l.path(), {});
  ASSERT_TRUE(first.ok());
  auto second = LogStore::Open(l.path(), {});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("Another process"));
}

}  // namespace
}  // namespace raftkv::storage
