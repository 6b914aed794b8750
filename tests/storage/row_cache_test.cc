// RowCache: a row put is found until rewritten, erased or evicted; eviction
// drops the rows written longest ago (a rewrite counts as a new write) and
// keeps the charge within the budget; the write order does not grow without
// bound when the same keys are rewritten.
#include "storage/row_cache.h"

#include <gtest/gtest.h>

#include <string>

namespace raftkv::storage {
namespace {

std::string Key(int i) { return "key-" + std::to_string(i); }

RowCache::Row MakeRow(std::string value, int64_t rev) {
  return RowCache::Row{std::move(value), rev, rev, 1};
}

TEST(RowCache, FindsWhatWasPutUntilRewrittenOrErased) {
  RowCache c(1 << 20);
  EXPECT_EQ(c.Find("a"), nullptr);
  c.Put("a", MakeRow("1", 1));
  c.Put("b", RowCache::Row{"x", 2, 3, 4});
  const RowCache::Row* b = c.Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->value, "x");
  EXPECT_EQ(b->create_revision, 2);
  EXPECT_EQ(b->mod_revision, 3);
  EXPECT_EQ(b->version, 4);
  c.Put("a", MakeRow(std::string(300, 'v'), 5));
  ASSERT_NE(c.Find("a"), nullptr);
  EXPECT_EQ(c.Find("a")->value, std::string(300, 'v'));
  EXPECT_EQ(c.size(), 2u);
  c.Erase("a");
  c.Erase("never");
  EXPECT_EQ(c.Find("a"), nullptr);
  EXPECT_EQ(c.size(), 1u);
  c.Clear();
  EXPECT_EQ(c.Find("b"), nullptr);
  EXPECT_EQ(c.bytes(), 0u);
}

TEST(RowCache, EvictsTheRowsWrittenLongestAgoWithinBudget) {
  const RowCache::Row sample = MakeRow(std::string(200, 'v'), 1);
  const size_t per_row = RowCache::Charge(Key(0), sample);
  RowCache c(10 * per_row);
  for (int i = 0; i < 10; ++i) c.Put(Key(i), MakeRow(std::string(200, 'v'), i));
  EXPECT_EQ(c.size(), 10u);
  EXPECT_EQ(c.bytes(), 10 * per_row);
  // Rewriting key 0 makes key 1 the oldest write.
  c.Put(Key(0), MakeRow(std::string(200, 'w'), 10));
  c.Put(Key(10), MakeRow(std::string(200, 'v'), 11));
  EXPECT_EQ(c.size(), 10u);
  EXPECT_LE(c.bytes(), 10 * per_row);
  EXPECT_EQ(c.Find(Key(1)), nullptr);
  ASSERT_NE(c.Find(Key(0)), nullptr);
  EXPECT_EQ(c.Find(Key(0))->value, std::string(200, 'w'));
  for (int i = 2; i <= 10; ++i) EXPECT_NE(c.Find(Key(i)), nullptr) << i;
  // An erased key's old mention does not evict its later row.
  c.Erase(Key(2));
  c.Put(Key(2), MakeRow(std::string(200, 'v'), 12));
  c.Put(Key(11), MakeRow(std::string(200, 'v'), 13));
  EXPECT_NE(c.Find(Key(2)), nullptr);
  EXPECT_EQ(c.Find(Key(3)), nullptr);
}

TEST(RowCache, RowBiggerThanTheBudgetIsNotCached) {
  RowCache c(1024);
  c.Put("a", MakeRow("small", 1));
  ASSERT_NE(c.Find("a"), nullptr);
  c.Put("a", MakeRow(std::string(4096, 'v'), 2));
  EXPECT_EQ(c.Find("a"), nullptr);  // the stale small row must not answer for it
  EXPECT_EQ(c.bytes(), 0u);
}

TEST(RowCache, RewritesKeepEveryRowAndBoundedMemory) {
  RowCache c(64 << 20);
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < 1000; ++i) c.Put(Key(i), MakeRow(std::to_string(round), round));
  }
  EXPECT_EQ(c.size(), 1000u);
  EXPECT_EQ(c.bytes(), 1000 * RowCache::Charge(Key(0), MakeRow("49", 49)));
  for (int i = 0; i < 1000; ++i) {
    ASSERT_NE(c.Find(Key(i)), nullptr);
    EXPECT_EQ(c.Find(Key(i))->value, "49");
  }
  // 50,000 writes of 1,000 keys: the order was compacted along the way, or
  // evicting now would walk every stale mention; either way only live rows
  // count, and a budget cut to one row keeps the last one written.
  RowCache small(RowCache::Charge(Key(0), MakeRow("x", 1)));
  for (int i = 0; i < 5000; ++i) small.Put(Key(i % 7), MakeRow("x", i));
  EXPECT_EQ(small.size(), 1u);
  EXPECT_NE(small.Find(Key(4999 % 7)), nullptr);
}

}  // namespace
}  // namespace raftkv::storage
