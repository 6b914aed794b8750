#include "raft/memory_storage.h"

#include <gtest/gtest.h>

namespace raftkv::raft {
namespace {

Entry MakeEntry(uint64_t index, uint64_t term) {
  Entry e;
  e.set_index(index);
  e.set_term(term);
  return e;
}

TEST(MemoryStorage, AppendTruncatesConflictingSuffix) {
  MemoryStorage s;
  ASSERT_TRUE(s.Append({MakeEntry(1, 1), MakeEntry(2, 1), MakeEntry(3, 1)}).ok());
  ASSERT_TRUE(s.Append({MakeEntry(2, 2)}).ok());
  EXPECT_EQ(s.LastIndex(), 2u);
  EXPECT_EQ(*s.Term(2), 2u);
}

TEST(MemoryStorage, RejectsGapsAndOutOfRangeReads) {
  MemoryStorage s;
  EXPECT_FALSE(s.Append({MakeEntry(2, 1)}).ok());
  ASSERT_TRUE(s.Append({MakeEntry(1, 1)}).ok());
  EXPECT_TRUE(IsLogUnavailable(s.Term(2).status()));
  EXPECT_TRUE(IsLogUnavailable(s.Entries(1, 3, 100).status()));
}

TEST(MemoryStorage, CompactKeepsTermOfSnapshotIndex) {
  MemoryStorage s;
  ASSERT_TRUE(s.Append({MakeEntry(1, 1), MakeEntry(2, 2), MakeEntry(3, 3)}).ok());
  ASSERT_TRUE(s.Compact(2, ConfState()).ok());
  EXPECT_EQ(s.FirstIndex(), 3u);
  EXPECT_EQ(*s.Term(2), 2u);
  EXPECT_TRUE(IsLogCompacted(s.Term(1).status()));
  EXPECT_TRUE(IsLogCompacted(s.Entries(2, 3, 100).status()));
  auto entries = s.Entries(3, 4, 100);
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ((*entries)[0].term(), 3u);
}

TEST(MemoryStorage, EntriesReturnsAtLeastOneEntryUnderByteLimit) {
  MemoryStorage s;
  Entry big = MakeEntry(1, 1);
  big.set_data(std::string(1000, 'x'));
  ASSERT_TRUE(s.Append({big, MakeEntry(2, 1)}).ok());
  auto entries = s.Entries(1, 3, 10);
  ASSERT_TRUE(entries.ok());
  EXPECT_EQ(entries->size(), 1u);
}

}  // namespace
}  // namespace raftkv::raft
