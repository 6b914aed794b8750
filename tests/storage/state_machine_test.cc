// StateMachine: put/get/delete/compare-and-swap semantics with etcd-style
// revisions, range scans, exactly-once sessions and their deterministic
// expiry, idempotent replay, validation of bad input.
#include "storage/state_machine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>

#include "leveldb/db.h"
#include "tests/storage/test_util.h"

namespace raftkv::storage {
namespace {

using raft::Entry;
using ::testing::HasSubstr;
using testing::TempDir;
using v1::Command;
using v1::CommandResult;

Command Put(std::string key, std::string value, uint64_t client = 0, uint64_t seq = 0) {
  Command c;
  c.set_client_id(client);
  c.set_sequence(seq);
  c.mutable_put()->set_key(std::move(key));
  c.mutable_put()->set_value(std::move(value));
  return c;
}

Command Del(std::string key) {
  Command c;
  c.mutable_delete_()->set_key(std::move(key));
  return c;
}

Command CasValue(std::string key, std::string expected, std::string value) {
  Command c;
  c.mutable_compare_and_swap()->set_key(std::move(key));
  c.mutable_compare_and_swap()->set_expected_value(std::move(expected));
  c.mutable_compare_and_swap()->set_new_value(std::move(value));
  return c;
}

Command CasRevision(std::string key, int64_t rev, std::string value) {
  Command c;
  c.mutable_compare_and_swap()->set_key(std::move(key));
  c.mutable_compare_and_swap()->set_expected_mod_revision(rev);
  c.mutable_compare_and_swap()->set_new_value(std::move(value));
  return c;
}

Command CasAbsent(std::string key, std::string value) {
  Command c;
  c.mutable_compare_and_swap()->set_key(std::move(key));
  c.mutable_compare_and_swap()->set_expect_absent(true);
  c.mutable_compare_and_swap()->set_new_value(std::move(value));
  return c;
}

Entry Normal(uint64_t index, const Command& c, uint64_t term = 1) {
  return testing::MakeEntry(index, term, c.SerializeAsString());
}

Entry Typed(uint64_t index, v1::EntryType type) {
  Entry e = testing::MakeEntry(index, 1);
  e.set_type(type);
  return e;
}

class StateMachineTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  void Reopen(StateMachineOptions o = {}) {
    sm_.reset();
    auto s = StateMachine::Open(dir_.path(), o);
    ASSERT_TRUE(s.ok()) << s.status();
    sm_ = std::move(*s);
  }
  // Applies one command as the next entry and returns its result.
  CommandResult Run(const Command& c) {
    auto r = sm_->Apply({Normal(sm_->applied_index() + 1, c)});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? (*r)[0] : CommandResult();
  }
  std::string ValueOf(const std::string& key) {
    auto kv = sm_->Get(key);
    EXPECT_TRUE(kv.ok());
    return kv.ok() && kv->has_value() ? (*kv)->value() : "<absent>";
  }

  TempDir dir_;
  std::unique_ptr<StateMachine> sm_;
};

TEST_F(StateMachineTest, PutTracksRevisionsAndVersions) {
  CommandResult r = Run(Put("a", "1"));
  EXPECT_EQ(r.code(), CommandResult::OK);
  EXPECT_EQ(r.revision(), 1);
  EXPECT_FALSE(r.has_prev_kv());
  Run(Put("b", "x"));
  r = Run(Put("a", "2"));
  EXPECT_EQ(r.revision(), 3);
  EXPECT_EQ(r.prev_kv().value(), "1");
  auto kv = sm_->Get("a");
  ASSERT_TRUE(kv.ok() && kv->has_value());
  EXPECT_EQ((*kv)->key(), "a");
  EXPECT_EQ((*kv)->value(), "2");
  EXPECT_EQ((*kv)->create_revision(), 1);
  EXPECT_EQ((*kv)->mod_revision(), 3);
  EXPECT_EQ((*kv)->version(), 2);
  EXPECT_EQ(sm_->revision(), 3);
  EXPECT_EQ(sm_->applied_index(), 3u);
}

// A result carries the old value only where the caller wants it, but for a
// compare-and-swap (whose failure names the mod revision) and a command with a
// session (whose stored result every node must agree on); revisions and
// versions do not depend on it, whichever source the old row comes from.
TEST_F(StateMachineTest, PrevKvOnlyWhereWanted) {
  uint64_t client = 7;
  for (size_t row_cache : {size_t{64} << 20, size_t{0}}) {
    SCOPED_TRACE(row_cache);
    const std::string a = "a" + std::to_string(client), b = "b" + std::to_string(client);
    ++client;
    StateMachineOptions o;
    o.row_cache_bytes = row_cache;
    Reopen(o);
    const uint64_t base = sm_->applied_index();
    const int64_t rev = sm_->revision();
    auto first = sm_->Apply({Normal(base + 1, Put(a, "1")), Normal(base + 2, Put(b, "x"))},
                            [](uint64_t) { return false; });
    ASSERT_TRUE(first.ok()) << first.status();
    Reopen(o);  // the old rows now come from the database (or the row cache, refilled)
    const std::vector<Entry> es = {
        Normal(base + 3, Put(a, "2")),               // wanted
        Normal(base + 4, Put(a, "3")),               // not wanted, old row pending
        Normal(base + 5, Put(b, "y")),               // not wanted, old row stored
        Normal(base + 6, CasValue(b, "nope", "z")),  // not wanted, a compare
        Normal(base + 7, Put(b, "w", client, 1)),    // not wanted, a session
        Normal(base + 8, Del(a)),                    // not wanted
    };
    auto r = sm_->Apply(es, [&](uint64_t index) { return index == base + 3; });
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->size(), es.size());
    EXPECT_EQ((*r)[0].prev_kv().value(), "1");
    EXPECT_EQ((*r)[0].prev_kv().key(), a);
    EXPECT_EQ((*r)[0].prev_kv().mod_revision(), rev + 1);
    EXPECT_FALSE((*r)[1].has_prev_kv());
    EXPECT_EQ((*r)[1].revision(), rev + 4);
    EXPECT_FALSE((*r)[2].has_prev_kv());
    EXPECT_EQ((*r)[3].code(), CommandResult::COMPARE_FAILED);
    EXPECT_EQ((*r)[3].prev_kv().mod_revision(), rev + 5);
    EXPECT_EQ((*r)[3].prev_kv().value(), "y");
    EXPECT_EQ((*r)[4].prev_kv().value(), "y");
    EXPECT_EQ((*r)[5].code(), CommandResult::OK);
    EXPECT_FALSE((*r)[5].has_prev_kv());
    EXPECT_EQ(ValueOf(a), "<absent>");
    auto kv = sm_->Get(b);
    ASSERT_TRUE(kv.ok() && kv->has_value());
    EXPECT_EQ((*kv)->value(), "w");
    EXPECT_EQ((*kv)->create_revision(), rev + 2);
    EXPECT_EQ((*kv)->mod_revision(), rev + 6);
    EXPECT_EQ((*kv)->version(), 3);
    // A retry gets the stored result, old value included.
    auto retry =
        sm_->Apply({Normal(base + 9, Put(b, "w", client, 1))}, [](uint64_t) { return false; });
    ASSERT_TRUE(retry.ok()) << retry.status();
    EXPECT_EQ((*retry)[0].prev_kv().value(), "y");
    EXPECT_EQ((*retry)[0].revision(), rev + 6);
  }
}

TEST_F(StateMachineTest, DeleteRemovesKeyAndMissingKeyIsNotFound) {
  Run(Put("a", "1"));
  CommandResult r = Run(Del("a"));
  EXPECT_EQ(r.code(), CommandResult::OK);
  EXPECT_EQ(r.revision(), 2);
  EXPECT_EQ(r.prev_kv().value(), "1");
  EXPECT_EQ(ValueOf("a"), "<absent>");
  r = Run(Del("a"));
  EXPECT_EQ(r.code(), CommandResult::NOT_FOUND);
  EXPECT_EQ(r.revision(), 2);  // nothing written
  EXPECT_EQ(sm_->revision(), 2);
  // Re-created keys start a new life: version 1, new create revision.
  Run(Put("a", "again"));
  EXPECT_EQ((*sm_->Get("a"))->version(), 1);
  EXPECT_EQ((*sm_->Get("a"))->create_revision(), 3);
}

TEST_F(StateMachineTest, CompareAndSwapComparesValueRevisionOrAbsence) {
  EXPECT_EQ(Run(CasValue("k", "", "v")).code(), CommandResult::COMPARE_FAILED);
  EXPECT_EQ(Run(CasAbsent("k", "v1")).code(), CommandResult::OK);
  EXPECT_EQ(Run(CasAbsent("k", "v2")).code(), CommandResult::COMPARE_FAILED);
  CommandResult r = Run(CasValue("k", "nope", "v2"));
  EXPECT_EQ(r.code(), CommandResult::COMPARE_FAILED);
  EXPECT_EQ(r.prev_kv().value(), "v1");  // the caller sees what is there
  EXPECT_EQ(ValueOf("k"), "v1");
  EXPECT_EQ(Run(CasValue("k", "v1", "v2")).code(), CommandResult::OK);
  const int64_t mod = (*sm_->Get("k"))->mod_revision();
  EXPECT_EQ(Run(CasRevision("k", mod - 1, "v3")).code(), CommandResult::COMPARE_FAILED);
  EXPECT_EQ(Run(CasRevision("k", mod, "v3")).code(), CommandResult::OK);
  EXPECT_EQ(ValueOf("k"), "v3");
  EXPECT_EQ((*sm_->Get("k"))->version(), 3);
  // Mod revision 0 is what an absent key compares as (as in etcd).
  EXPECT_EQ(Run(CasRevision("fresh", 0, "x")).code(), CommandResult::OK);
  EXPECT_EQ(sm_->revision(), 4);  // three successful swaps + one create
}

TEST_F(StateMachineTest, NoopAndConfChangeEntriesOnlyAdvanceAppliedIndex) {
  Run(Put("a", "1"));
  auto r = sm_->Apply({Typed(2, v1::ENTRY_NOOP), Typed(3, v1::ENTRY_CONF_CHANGE)});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].SerializeAsString(), "");
  EXPECT_EQ(sm_->applied_index(), 3u);
  EXPECT_EQ(sm_->revision(), 1);
}

TEST_F(StateMachineTest, ReplayIsIdempotentAndGapsAreRefused) {
  std::vector<Entry> es = {Normal(1, Put("a", "1")), Normal(2, Put("a", "2")), Normal(3, Del("b"))};
  ASSERT_TRUE(sm_->Apply(es).ok());
  Reopen();
  EXPECT_EQ(sm_->applied_index(), 3u);
  auto r = sm_->Apply(es);  // a restart replays the log from the start
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), 3u);
  EXPECT_EQ(sm_->revision(), 2);
  EXPECT_EQ((*sm_->Get("a"))->version(), 2);
  absl::Status gap = sm_->Apply({Normal(5, Put("a", "x"))}).status();
  EXPECT_EQ(gap.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(gap.message(), HasSubstr("entry 5 cannot be applied after entry 3"));
  EXPECT_EQ(ValueOf("a"), "2");
  EXPECT_EQ(sm_->applied_index(), 3u);
  // A batch that overlaps what was applied applies only the new part.
  r = sm_->Apply({Normal(3, Del("b")), Normal(4, Put("a", "3"))});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(ValueOf("a"), "3");
  EXPECT_EQ(sm_->applied_index(), 4u);
}

TEST_F(StateMachineTest, AppliedStateSurvivesReopen) {
  Run(Put("a", "1"));
  Run(Put("b", "2"));
  ASSERT_TRUE(sm_->Sync().ok());
  Reopen();
  EXPECT_EQ(sm_->applied_index(), 2u);
  EXPECT_EQ(sm_->applied_term(), 1u);
  EXPECT_EQ(sm_->revision(), 2);
  EXPECT_EQ(ValueOf("b"), "2");
}

TEST_F(StateMachineTest, DuplicateCommandReturnsRecordedResultAndChangesNothing) {
  CommandResult first = Run(Put("a", "1", /*client=*/7, /*seq=*/1));
  Run(Put("a", "other"));
  CommandResult again = Run(Put("a", "1", 7, 1));
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(ValueOf("a"), "other");
  EXPECT_EQ(sm_->revision(), 2);
  EXPECT_EQ(Run(Put("a", "2", 7, 2)).code(), CommandResult::OK);
  CommandResult old = Run(Put("a", "1", 7, 1));
  EXPECT_EQ(old.code(), CommandResult::INVALID);
  EXPECT_THAT(old.error(), HasSubstr("older than its last applied sequence 2"));
  EXPECT_EQ(ValueOf("a"), "2");
  // Sessions are durable: a duplicate after a restart is still caught.
  Reopen();
  EXPECT_EQ(Run(Put("a", "2", 7, 2)).revision(), 3);
  EXPECT_EQ(sm_->revision(), 3);
  // Duplicates inside one batch too.
  auto r = sm_->Apply({Normal(sm_->applied_index() + 1, Put("c", "1", 8, 1)),
                       Normal(sm_->applied_index() + 2, Put("c", "1", 8, 1))});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)[0].SerializeAsString(), (*r)[1].SerializeAsString());
  EXPECT_EQ((*sm_->Get("c"))->version(), 1);
}

TEST_F(StateMachineTest, SessionsExpireByLogPositionNotByBatching) {
  StateMachineOptions o;
  o.session_expiry_entries = 5;
  // The same entries applied one by one and in one batch give the same results.
  std::vector<Entry> es;
  es.push_back(Normal(1, Put("a", "1", 1, 1)));
  for (uint64_t i = 2; i <= 6; ++i) es.push_back(Typed(i, v1::ENTRY_NOOP));
  es.push_back(Normal(7, Put("a", "1", 1, 1)));  // 6 entries later: expired, applied again
  es.push_back(Normal(8, Put("b", "1", 2, 1)));
  for (uint64_t i = 9; i <= 12; ++i) es.push_back(Typed(i, v1::ENTRY_NOOP));
  es.push_back(Normal(13, Put("b", "1", 2, 1)));  // 5 entries later: still live
  std::vector<std::string> outcomes[2];
  for (int mode = 0; mode < 2; ++mode) {
    TempDir d;
    auto sm = StateMachine::Open(d.path(), o);
    ASSERT_TRUE(sm.ok());
    if (mode == 0) {
      auto r = (*sm)->Apply(es);
      ASSERT_TRUE(r.ok());
      for (const auto& x : *r) outcomes[mode].push_back(x.SerializeAsString());
    } else {
      for (const Entry& e : es) {
        auto r = (*sm)->Apply({e});
        ASSERT_TRUE(r.ok());
        outcomes[mode].push_back((*r)[0].SerializeAsString());
      }
    }
    EXPECT_EQ((*(*sm)->Get("a"))->version(), 2) << "mode " << mode;
    EXPECT_EQ((*(*sm)->Get("b"))->version(), 1) << "mode " << mode;
    EXPECT_EQ((*sm)->revision(), 3);
  }
  EXPECT_EQ(outcomes[0], outcomes[1]);
}

// Randomized: clients retrying old and current sequences, sessions expiring
// after 10 entries; splitting the same entries into Apply calls differently
// (and reopening in between) must not change a single result or byte.
std::vector<Entry> RandomWorkload(std::mt19937_64& rng) {
  std::vector<Entry> es;
  std::map<uint64_t, uint64_t> next_seq;
  for (uint64_t i = 1; i <= 600; ++i) {
    const uint64_t client = 1 + rng() % 6;
    uint64_t seq = next_seq[client];
    if (seq == 0 || rng() % 3 != 0) seq = ++next_seq[client];  // else retry the last one
    if (rng() % 10 == 0 && seq > 1) seq -= 1;                  // a stale retry
    if (rng() % 9 == 0) {
      es.push_back(Typed(i, v1::ENTRY_NOOP));
    } else if (rng() % 4 == 0) {
      Command c = Del("k" + std::to_string(rng() % 8));
      c.set_client_id(client);
      c.set_sequence(seq);
      es.push_back(Normal(i, c));
    } else {
      es.push_back(Normal(i, Put("k" + std::to_string(rng() % 8), std::to_string(i), client, seq)));
    }
  }
  return es;
}

TEST(StateMachineDeterminism, ResultsDoNotDependOnBatchingOrRestarts) {
  StateMachineOptions o;
  o.session_expiry_entries = 10;
  std::mt19937_64 rng(7);
  const std::vector<Entry> es = RandomWorkload(rng);
  std::vector<std::string> reference;
  std::string reference_dump;
  for (int mode = 0; mode < 3; ++mode) {
    SCOPED_TRACE(::testing::Message() << "mode " << mode);
    TempDir d;
    auto sm = StateMachine::Open(d.path(), o);
    ASSERT_TRUE(sm.ok());
    std::vector<std::string> results;
    size_t pos = 0;
    while (pos < es.size()) {
      size_t n = mode == 0 ? es.size() : mode == 1 ? 1 : 1 + rng() % 40;
      n = std::min(n, es.size() - pos);
      std::vector<Entry> batch(es.begin() + pos, es.begin() + pos + n);
      auto r = (*sm)->Apply(batch);
      ASSERT_TRUE(r.ok()) << r.status();
      for (const auto& x : *r) results.push_back(x.SerializeAsString());
      pos += n;
      if (mode == 2 && rng() % 5 == 0) {
        sm->reset();
        sm = StateMachine::Open(d.path(), o);
        ASSERT_TRUE(sm.ok());
      }
    }
    std::string dump;
    auto all = (*sm)->RangePrefix("", 0);
    ASSERT_TRUE(all.ok());
    for (const auto& kv : all->kvs) dump += kv.SerializeAsString();
    dump += std::to_string((*sm)->revision());
    if (mode == 0) {
      reference = results;
      reference_dump = dump;
      int duplicates = 0;
      for (const auto& r : results) duplicates += r.find("older than") != std::string::npos;
      EXPECT_GT(duplicates, 0);  // the workload does exercise stale retries
    } else {
      EXPECT_EQ(results, reference);
      EXPECT_EQ(dump, reference_dump);
    }
  }
}

// The row cache and the key filter only save lookups: with the cache off,
// tiny (evicting all the time) or large, and the filter off, on, or rebuilt
// by its own scan at each reopen (verify_on_open off), the same entries give
// the same results and data.
TEST(StateMachineDeterminism, RowCacheAndKeyFilterDoNotChangeResults) {
  std::mt19937_64 rng(11);
  std::vector<Entry> es = RandomWorkload(rng);
  for (uint64_t i = es.size() + 1; i <= 1200; ++i) {
    // CAS on values and revisions read back through the cache.
    const std::string key = "k" + std::to_string(rng() % 8);
    es.push_back(Normal(i, rng() % 2 ? CasValue(key, std::to_string(i - 1 - rng() % 3), "c")
                                     : CasRevision(key, static_cast<int64_t>(rng() % 700), "r")));
  }
  struct Setting {
    size_t row_cache_bytes, key_filter_bytes;
    bool verify_on_open;
  };
  const Setting settings[] = {{0, 0, true},         {300, 0, true},
                              {64 << 20, 0, true},  {0, 64 << 20, true},
                              {0, 64 << 20, false}, {64 << 20, 64 << 20, true}};
  std::vector<std::string> reference;
  for (const Setting& setting : settings) {
    SCOPED_TRACE(::testing::Message()
                 << "row_cache_bytes " << setting.row_cache_bytes << ", key_filter_bytes "
                 << setting.key_filter_bytes << ", verify_on_open " << setting.verify_on_open);
    StateMachineOptions o;
    o.session_expiry_entries = 10;
    o.row_cache_bytes = setting.row_cache_bytes;
    o.key_filter_bytes = setting.key_filter_bytes;
    o.verify_on_open = setting.verify_on_open;
    TempDir d;
    auto sm = StateMachine::Open(d.path(), o);
    ASSERT_TRUE(sm.ok());
    std::mt19937_64 split(5);
    std::vector<std::string> results;
    for (size_t pos = 0; pos < es.size();) {
      const size_t n = std::min<size_t>(1 + split() % 30, es.size() - pos);
      auto r = (*sm)->Apply(std::vector<Entry>(es.begin() + pos, es.begin() + pos + n));
      ASSERT_TRUE(r.ok()) << r.status();
      for (const auto& x : *r) results.push_back(x.SerializeAsString());
      pos += n;
      if (split() % 10 == 0) {
        sm->reset();
        sm = StateMachine::Open(d.path(), o);
        ASSERT_TRUE(sm.ok());
      }
    }
    auto all = (*sm)->RangePrefix("", 0);
    ASSERT_TRUE(all.ok());
    for (const auto& kv : all->kvs) results.push_back(kv.SerializeAsString());
    if (reference.empty()) {
      reference = results;
    } else {
      EXPECT_EQ(results, reference);
    }
  }
}

// Keys of the live state-machine database whose first byte is `prefix`, read
// with LevelDB directly. REQUIRES: the state machine in `dir` is closed.
// A key the filter does not hold is taken as absent without a lookup, so
// the filter must hold every stored key after a reopen, whether the
// verifying scan built it or a scan of its own.
TEST(StateMachineKeyFilter, StoredKeysAreFoundAfterReopen) {
  for (bool verify : {true, false}) {
    SCOPED_TRACE(::testing::Message() << "verify_on_open " << verify);
    StateMachineOptions o;
    o.row_cache_bytes = 0;  // every previous value comes from LevelDB
    o.verify_on_open = verify;
    TempDir d;
    constexpr int kKeys = 3000;
    {
      auto sm = StateMachine::Open(d.path(), o);
      ASSERT_TRUE(sm.ok()) << sm.status();
      std::vector<Entry> es;
      for (int i = 0; i < kKeys; ++i) {
        es.push_back(Normal(i + 1, Put("key-" + std::to_string(i), "v" + std::to_string(i))));
      }
      es.push_back(Normal(kKeys + 1, Del("key-7")));
      ASSERT_TRUE((*sm)->Apply(es).ok());
    }
    auto sm = StateMachine::Open(d.path(), o);
    ASSERT_TRUE(sm.ok()) << sm.status();
    std::vector<Entry> es;
    for (int i = 0; i < kKeys; ++i) {
      es.push_back(Normal(kKeys + 2 + i, Put("key-" + std::to_string(i), "again")));
    }
    auto r = (*sm)->Apply(es);
    ASSERT_TRUE(r.ok()) << r.status();
    for (int i = 0; i < kKeys; ++i) {
      SCOPED_TRACE(i);
      if (i == 7) {
        EXPECT_FALSE((*r)[i].has_prev_kv());
        continue;
      }
      ASSERT_TRUE((*r)[i].has_prev_kv());
      EXPECT_EQ((*r)[i].prev_kv().value(), "v" + std::to_string(i));
      EXPECT_EQ((*r)[i].prev_kv().version(), 1);
    }
  }
}

// The filter holds each stored key once: overwriting a key adds nothing, a
// key created (or created again after a delete) is added, within one Apply
// call or across several.
TEST(StateMachineKeyFilter, OnlyCreatedKeysAreAdded) {
  TempDir d;
  auto sm = StateMachine::Open(d.path(), StateMachineOptions{});
  ASSERT_TRUE(sm.ok()) << sm.status();
  uint64_t index = 0;
  std::vector<Entry> es;
  for (int round = 0; round < 10; ++round) {
    for (int k = 0; k < 10; ++k) {
      es.push_back(Normal(++index, Put("key-" + std::to_string(k), "v" + std::to_string(round))));
    }
  }
  ASSERT_TRUE((*sm)->Apply(es).ok());
  EXPECT_EQ((*sm)->key_filter_adds(), 10u);
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE((*sm)->Apply({Normal(++index, Put("key-3", "again"))}).ok());
  }
  EXPECT_EQ((*sm)->key_filter_adds(), 10u);
  ASSERT_TRUE((*sm)->Apply({Normal(++index, Del("key-3")), Normal(++index, Put("key-3", "back")),
                            Normal(++index, Put("fresh", "x")), Normal(++index, Put("fresh", "y"))})
                  .ok());
  EXPECT_EQ((*sm)->key_filter_adds(), 12u);
  auto kv = (*sm)->Get("key-3");
  ASSERT_TRUE(kv.ok() && kv->has_value());
  EXPECT_EQ((*kv)->version(), 1);
  EXPECT_EQ((*kv)->value(), "back");
}

std::vector<std::string> RawKeys(const std::string& dir, char prefix) {
  std::vector<std::string> out;
  leveldb::DB* raw = nullptr;
  leveldb::Status s = leveldb::DB::Open(leveldb::Options(), dir + "/db-000001", &raw);
  EXPECT_TRUE(s.ok()) << s.ToString();
  if (!s.ok()) return out;
  std::unique_ptr<leveldb::DB> db(raw);
  std::unique_ptr<leveldb::Iterator> it(db->NewIterator(leveldb::ReadOptions()));
  for (it->Seek(std::string(1, prefix)); it->Valid() && it->key()[0] == prefix; it->Next()) {
    out.push_back(it->key().ToString());
  }
  return out;
}

// Expired sessions are physically removed, including those that expire long
// after the last scan found nothing to remove (scans are skipped until the
// oldest remaining session can have expired).
TEST(StateMachineSessions, ExpiredSessionRecordsAreRemoved) {
  TempDir d;
  StateMachineOptions o;
  o.session_expiry_entries = 10;
  {
    auto sm = StateMachine::Open(d.path(), o);
    ASSERT_TRUE(sm.ok());
    uint64_t i = 0;
    auto apply = [&](std::optional<Command> c) {
      ++i;
      auto r = (*sm)->Apply({c ? Normal(i, *c) : Typed(i, v1::ENTRY_NOOP)});
      ASSERT_TRUE(r.ok()) << r.status();
    };
    apply(Put("a", "1", 1, 1));
    for (int k = 0; k < 4; ++k) apply(std::nullopt);
    apply(Put("b", "1", 2, 1));  // index 6
    for (int k = 0; k < 4; ++k) apply(std::nullopt);
    apply(Put("c", "1", 1, 2));  // index 11: client 1 re-recorded, not removed
    for (int k = 0; k < 30; ++k) apply(std::nullopt);
    // A retry of a forgotten session is applied again.
    apply(Put("c", "1", 1, 2));
    EXPECT_EQ((*(*sm)->Get("c"))->version(), 2);
    for (int k = 0; k < 30; ++k) apply(std::nullopt);
  }
  EXPECT_THAT(RawKeys(d.path(), 's'), ::testing::IsEmpty());
  EXPECT_THAT(RawKeys(d.path(), 'x'), ::testing::IsEmpty());
}

// Table files of the live database, and their total size.
uint64_t TableBytes(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& f : std::filesystem::directory_iterator(dir + "/db-000001")) {
    if (f.path().extension() == ".ldb") total += f.file_size();
  }
  return total;
}

TEST(StateMachineOptionsTest, CompressionIsHonouredAndDataSurviveReopen) {
  uint64_t bytes[2] = {0, 0};
  for (int compress = 0; compress < 2; ++compress) {
    SCOPED_TRACE(::testing::Message() << "compress " << compress);
    TempDir d;
    StateMachineOptions o;
    o.compress = compress == 1;
    {
      auto sm = StateMachine::Open(d.path(), o);
      ASSERT_TRUE(sm.ok());
      std::vector<Entry> es;
      for (uint64_t i = 1; i <= 1000; ++i) {
        es.push_back(Normal(i, Put("key" + std::to_string(i), std::string(1000, 'a' + i % 26))));
      }
      ASSERT_TRUE((*sm)->Apply(es).ok());
      ASSERT_TRUE((*sm)->Sync().ok());  // flushes the memtable into a table
    }
    bytes[compress] = TableBytes(d.path());
    // Reopened with the other setting: tables of either kind stay readable.
    o.compress = !o.compress;
    auto sm = StateMachine::Open(d.path(), o);
    ASSERT_TRUE(sm.ok()) << sm.status();
    EXPECT_EQ((*sm)->applied_index(), 1000u);
    for (uint64_t i = 1; i <= 1000; i += 37) {
      auto kv = (*sm)->Get("key" + std::to_string(i));
      ASSERT_TRUE(kv.ok() && kv->has_value());
      EXPECT_EQ((*kv)->value(), std::string(1000, 'a' + i % 26));
    }
  }
  EXPECT_GE(bytes[0], 1000u * 1000u);  // values stored as they are
  EXPECT_LT(bytes[1], bytes[0] / 4);   // repetitive values compress
}

// Counts reads of LevelDB table files.
class TableReadCountingEnv : public leveldb::EnvWrapper {
 public:
  TableReadCountingEnv() : leveldb::EnvWrapper(leveldb::Env::Default()) {}
  int reads() const { return reads_.load(); }
  void Reset() { reads_ = 0; }

  leveldb::Status NewRandomAccessFile(const std::string& f,
                                      leveldb::RandomAccessFile** r) override {
    leveldb::Status s = target()->NewRandomAccessFile(f, r);
    if (s.ok()) *r = new File(*r, &reads_);
    return s;
  }

 private:
  class File : public leveldb::RandomAccessFile {
   public:
    File(leveldb::RandomAccessFile* base, std::atomic<int>* reads) : base_(base), reads_(reads) {}
    ~File() override { delete base_; }
    leveldb::Status Read(uint64_t offset, size_t n, leveldb::Slice* result,
                         char* scratch) const override {
      ++*reads_;
      return base_->Read(offset, n, result, scratch);
    }

   private:
    leveldb::RandomAccessFile* const base_;
    std::atomic<int>* const reads_;
  };
  std::atomic<int> reads_{0};
};

TEST(StateMachineOptionsTest, BlockCacheIsHonoured) {
  TempDir d;
  TableReadCountingEnv env;
  StateMachineOptions o;
  o.env = &env;
  {
    auto sm = StateMachine::Open(d.path(), o);
    ASSERT_TRUE(sm.ok());
    std::vector<Entry> es;
    for (uint64_t i = 1; i <= 2000; ++i) {
      es.push_back(Normal(i, Put("key" + std::to_string(i), std::string(500, 'v'))));
    }
    ASSERT_TRUE((*sm)->Apply(es).ok());
    ASSERT_TRUE((*sm)->Sync().ok());
  }
  // Reads every key twice; returns the table reads of the second pass.
  auto second_pass_reads = [&](size_t cache_bytes) {
    o.block_cache_bytes = cache_bytes;
    auto sm = StateMachine::Open(d.path(), o);
    EXPECT_TRUE(sm.ok()) << sm.status();
    if (!sm.ok()) return -1;
    for (int pass = 0; pass < 2; ++pass) {
      env.Reset();
      for (uint64_t i = 1; i <= 2000; ++i) {
        auto kv = (*sm)->Get("key" + std::to_string(i));
        EXPECT_TRUE(kv.ok() && kv->has_value() && (*kv)->value() == std::string(500, 'v'));
      }
    }
    return env.reads();
  };
  EXPECT_EQ(second_pass_reads(64 << 20), 0);  // everything stays cached
  EXPECT_GT(second_pass_reads(1), 100);  // a cache too small to keep blocks
}

TEST_F(StateMachineTest, ValidateRejectsBadCommandsWithReasons) {
  StateMachineOptions o;
  o.max_key_bytes = 8;
  o.max_value_bytes = 16;
  Reopen(o);
  auto expect_invalid = [&](const Command& c, const std::string& why) {
    absl::Status s = sm_->Validate(c);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << why;
    EXPECT_THAT(s.message(), HasSubstr(why));
  };
  expect_invalid(Command(), "no operation");
  expect_invalid(Put("", "v"), "empty key");
  expect_invalid(Del(""), "empty key");
  expect_invalid(Put("123456789", "v"), "key is 9 bytes, over the limit of 8");
  expect_invalid(Put("k", std::string(17, 'v')), "value is 17 bytes, over the limit of 16");
  expect_invalid(CasValue("k", std::string(17, 'v'), "x"), "expected value is 17 bytes");
  Command cas;
  cas.mutable_compare_and_swap()->set_key("k");
  expect_invalid(cas, "nothing to compare");
  expect_invalid(Put("k", "v", 3, 0), "sequence 0");
  EXPECT_TRUE(sm_->Validate(Put("12345678", std::string(16, 'v'))).ok());
  EXPECT_TRUE(sm_->Validate(Put("k", "v", 3, 1)).ok());
}

TEST_F(StateMachineTest, MalformedCommittedEntriesAreInvalidAndChangeNoData) {
  Run(Put("a", "1"));
  Entry garbage = testing::MakeEntry(2, 1, "\xff\xff\xff not a command");
  auto r = sm_->Apply({garbage, Normal(3, Command()), Normal(4, Put("", "x"))});
  ASSERT_TRUE(r.ok());
  for (const auto& x : *r) EXPECT_EQ(x.code(), CommandResult::INVALID);
  EXPECT_THAT((*r)[0].error(), HasSubstr("entry 2 does not hold a well-formed Command"));
  EXPECT_EQ(sm_->applied_index(), 4u);
  EXPECT_EQ(sm_->revision(), 1);
  EXPECT_EQ(sm_->RangePrefix("", 0)->kvs.size(), 1u);
}

TEST_F(StateMachineTest, RangeByBoundsPrefixAndLimit) {
  const std::vector<std::string> ks = {"a", "b/1", "b/2", "b/3", "c", std::string("b\xff", 2)};
  for (const std::string& k : ks) Run(Put(k, "v-" + k));
  auto keys = [](const StateMachine::RangeResult& r) {
    std::vector<std::string> out;
    for (const auto& kv : r.kvs) out.push_back(kv.key());
    return out;
  };
  auto all = sm_->Range("", "", 0);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->kvs.size(), 6u);
  EXPECT_FALSE(all->more);
  auto r = sm_->Range("b/1", "b/3", 0);
  EXPECT_THAT(keys(*r), ::testing::ElementsAre("b/1", "b/2"));
  r = sm_->RangePrefix("b/", 2);
  EXPECT_THAT(keys(*r), ::testing::ElementsAre("b/1", "b/2"));
  EXPECT_TRUE(r->more);
  r = sm_->RangePrefix("b/", 3);
  EXPECT_FALSE(r->more);
  r = sm_->RangePrefix("b", 0);
  EXPECT_EQ(r->kvs.size(), 4u);  // b/1 b/2 b/3 b\xff
  EXPECT_EQ(r->kvs[0].value(), "v-b/1");
  EXPECT_EQ(r->kvs[0].mod_revision(), 2);
  r = sm_->Range("c", "", 0);
  EXPECT_THAT(keys(*r), ::testing::ElementsAre("c"));
  EXPECT_EQ(sm_->Range("c", "a", 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(sm_->Range("x", "y", 0)->kvs.empty());
}

}  // namespace
}  // namespace raftkv::storage
