// State-machine snapshots: a point-in-time export streamed in chunks, and an
// import that replaces the live database atomically (or not at all).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "storage/state_machine.h"
#include "tests/storage/test_util.h"

namespace raftkv::storage {
namespace {

using raft::Entry;
using ::testing::HasSubstr;
using testing::TempDir;

Entry PutEntry(uint64_t index, const std::string& key, const std::string& value,
               uint64_t client = 0) {
  v1::Command c;
  c.set_client_id(client);
  c.set_sequence(client != 0 ? index : 0);
  c.mutable_put()->set_key(key);
  c.mutable_put()->set_value(value);
  return testing::MakeEntry(index, 2, c.SerializeAsString());
}

std::unique_ptr<StateMachine> Open(const std::string& dir, size_t chunk_bytes = 4096) {
  StateMachineOptions o;
  o.snapshot_chunk_bytes = chunk_bytes;
  auto s = StateMachine::Open(dir, o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

// Applies `n` puts of keys key-0..key-(n-1) from index applied+1 on.
void Fill(StateMachine* sm, int n, const std::string& tag) {
  std::vector<Entry> es;
  for (int i = 0; i < n; ++i) {
    es.push_back(PutEntry(sm->applied_index() + 1 + i, "key-" + std::to_string(i),
                          tag + std::string(200, 'v'), /*client=*/1 + i % 3));
  }
  ASSERT_TRUE(sm->Apply(es).ok());
}

std::vector<std::string> Drain(SnapshotReader* r) {
  std::vector<std::string> chunks;
  while (true) {
    auto c = r->Next();
    EXPECT_TRUE(c.ok()) << c.status();
    if (!c.ok() || !c->has_value()) break;
    chunks.push_back(std::move(**c));
  }
  return chunks;
}

std::string Dump(StateMachine* sm) {
  std::string out;
  auto all = sm->RangePrefix("", 0);
  EXPECT_TRUE(all.ok()) << all.status();
  if (!all.ok()) return "<error>";
  for (const auto& kv : all->kvs) out += kv.SerializeAsString() + "|";
  return out;
}

TEST(Snapshot, ExportIsPointInTimeAndImportRebuildsIt) {
  TempDir a, b;
  auto src = Open(a.path());
  Fill(src.get(), 500, "old");
  const std::string expected = Dump(src.get());
  const uint64_t applied = src->applied_index();
  auto reader = src->ExportSnapshot();
  ASSERT_TRUE(reader.ok());
  Fill(src.get(), 50, "new");  // not part of the export
  EXPECT_EQ((*reader)->applied_index(), applied);
  EXPECT_EQ((*reader)->applied_term(), 2u);
  const std::vector<std::string> chunks = Drain(reader->get());
  EXPECT_GT(chunks.size(), 10u);  // 500 x ~200 bytes in 4 KiB chunks
  reader->reset();

  auto dst = Open(b.path());
  Fill(dst.get(), 10, "stale");
  auto imp = dst->BeginImport();
  ASSERT_TRUE(imp.ok());
  for (const auto& c : chunks) ASSERT_TRUE((*imp)->Write(c).ok());
  ASSERT_TRUE(dst->FinishImport(std::move(*imp)).ok());
  EXPECT_EQ(dst->applied_index(), applied);
  EXPECT_EQ(dst->revision(), 500);
  EXPECT_EQ(Dump(dst.get()), expected);
  // Sessions came along: a retry of an applied command is still a duplicate.
  auto r = dst->Apply({PutEntry(applied + 1, "x", "y", 1), PutEntry(applied + 2, "key-0", "z"),
                       PutEntry(applied + 3, "key-250", "z")});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(dst->revision(), 503);
  // Writes see the imported data, not what the replaced database held:
  // key-250 was never in it, so only a key filter rebuilt from the import
  // lets its previous value be found.
  EXPECT_EQ((*r)[1].prev_kv().value(), "old" + std::string(200, 'v'));
  EXPECT_EQ((*r)[1].prev_kv().mod_revision(), 1);
  EXPECT_EQ((*r)[2].prev_kv().value(), "old" + std::string(200, 'v'));
  EXPECT_EQ((*r)[2].prev_kv().mod_revision(), 251);
  // The import survives a restart; the old database directory is gone.
  dst.reset();
  dst = Open(b.path());
  EXPECT_EQ(dst->applied_index(), applied + 3);
  EXPECT_EQ(dst->revision(), 503);
  int dbs = 0;
  for (const auto& f : std::filesystem::directory_iterator(b.path())) {
    dbs += f.path().filename().string().rfind("db-", 0) == 0;
  }
  EXPECT_EQ(dbs, 1);
}

TEST(Snapshot, BadOrIncompleteImportLeavesLiveDatabaseUntouched) {
  TempDir a, b;
  auto src = Open(a.path());
  Fill(src.get(), 100, "x");
  std::vector<std::string> chunks;
  {
    auto reader = src->ExportSnapshot();
    ASSERT_TRUE(reader.ok());
    chunks = Drain(reader->get());
  }
  ASSERT_GE(chunks.size(), 3u);
  auto dst = Open(b.path());
  Fill(dst.get(), 5, "mine");
  const std::string before = Dump(dst.get());

  {  // a missing last chunk
    auto imp = dst->BeginImport();
    ASSERT_TRUE(imp.ok());
    EXPECT_EQ(dst->BeginImport().status().code(), absl::StatusCode::kFailedPrecondition);
    for (size_t i = 0; i + 1 < chunks.size(); ++i) ASSERT_TRUE((*imp)->Write(chunks[i]).ok());
    absl::Status s = dst->FinishImport(std::move(*imp));
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(s.message(), HasSubstr("incomplete"));
  }
  {  // a skipped chunk
    auto imp = dst->BeginImport();
    ASSERT_TRUE(imp.ok());
    ASSERT_TRUE((*imp)->Write(chunks[0]).ok());
    EXPECT_THAT((*imp)->Write(chunks[2]).message(), HasSubstr("lost or reordered"));
  }
  {  // garbage, and a chunk cut short
    auto imp = dst->BeginImport();
    ASSERT_TRUE(imp.ok());
    EXPECT_THAT((*imp)->Write("hello").message(), HasSubstr("not a raftkv"));
    imp->reset();  // abandoning an import removes its partial database
    imp = dst->BeginImport();
    ASSERT_TRUE(imp.ok());
    EXPECT_THAT((*imp)->Write(chunks[0].substr(0, chunks[0].size() - 3)).message(),
                HasSubstr("truncated"));
  }
  {  // an export still open blocks the swap
    auto imp = dst->BeginImport();
    ASSERT_TRUE(imp.ok());
    for (const auto& c : chunks) ASSERT_TRUE((*imp)->Write(c).ok());
    auto reader = dst->ExportSnapshot();
    ASSERT_TRUE(reader.ok());
    EXPECT_THAT(dst->FinishImport(std::move(*imp)).message(), HasSubstr("export"));
  }
  EXPECT_EQ(Dump(dst.get()), before);
  EXPECT_EQ(dst->applied_index(), 5u);
  dst.reset();
  dst = Open(b.path());
  EXPECT_EQ(Dump(dst.get()), before);
}

TEST(Snapshot, LeftoversOfAnInterruptedImportAreRemovedAtOpen) {
  TempDir a;
  {
    auto sm = Open(a.path());
    Fill(sm.get(), 3, "x");
    auto imp = sm->BeginImport();
    ASSERT_TRUE(imp.ok());
    // Simulate a crash mid-import: the partial database stays on disk.
    std::filesystem::copy(a.Sub("db-000002"), a.Sub("db-000002.copy"),
                          std::filesystem::copy_options::recursive);
  }
  std::filesystem::rename(a.Sub("db-000002.copy"), a.Sub("db-000002"));
  auto sm = Open(a.path());
  EXPECT_EQ(sm->applied_index(), 3u);
  EXPECT_FALSE(std::filesystem::exists(a.Sub("db-000002")));
}

TEST(Snapshot, EmptyStateMachineExportsAndImports) {
  TempDir a, b;
  auto src = Open(a.path());
  auto reader = src->ExportSnapshot();
  ASSERT_TRUE(reader.ok());
  auto chunks = Drain(reader->get());
  EXPECT_EQ(chunks.size(), 1u);
  reader->reset();
  auto dst = Open(b.path());
  Fill(dst.get(), 3, "x");
  auto imp = dst->BeginImport();
  ASSERT_TRUE(imp.ok());
  ASSERT_TRUE((*imp)->Write(chunks[0]).ok());
  ASSERT_TRUE(dst->FinishImport(std::move(*imp)).ok());
  EXPECT_EQ(dst->applied_index(), 0u);
  EXPECT_TRUE(dst->RangePrefix("", 0)->kvs.empty());
}

}  // namespace
}  // namespace raftkv::storage
