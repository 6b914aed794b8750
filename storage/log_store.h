// LogStore: the durable Raft log of one node, on LevelDB.
//
// Owns one LevelDB database holding, under these keys:
//   "a:format"    format tag ("raftkv-log-2"), written when the db is created
//   "a:identity"  the (cluster id, node id) this data directory belongs to
//   "a:hard"      HardState: term and vote, and the commit index as it was
//                 when either last changed
//   "a:snapshot"  SnapshotMetadata of the latest snapshot / compaction point
//   "e" + index as 8 big-endian bytes   one serialized Entry each
// so that iteration order over "e" keys is log order, and every metadata
// key sorts before them (log_store.cc says why). Format 1 ("raftkv-log-1")
// had the metadata under "h:" keys; Open() upgrades it in place.
//
// Invariants (checked at Open, kept by every write):
//   - entries are exactly [FirstIndex(), LastIndex()], no gaps, and
//     FirstIndex() == Snapshot().index() + 1;
//   - each stored Entry's index equals its key, and terms never decrease;
//   - the hard state's term never decreases, its vote does not change within
//     a term once cast, and its commit never decreases;
//   - committed entries (index <= hard state commit) are never rewritten with
//     another term.
// Every write (Save, Compact, ApplySnapshot, Bootstrap, CheckIdentity) is one
// LevelDB WriteBatch, so a crash leaves either all of it or none of it.
//
// An in-memory copy of the hard state, snapshot metadata, last index, the
// terms of all stored entries (as runs of equal term, so it stays tiny) and
// the most recently written entries (bounded by entry_cache_bytes) means that
// Term(), FirstIndex(), LastIndex() never read LevelDB and Entries() reads it
// only for entries older than the cache.
//
// Thread safety: all methods may be called from any thread; one internal
// mutex serializes them (writes hold it during their fsync, so the Raft
// thread, the only one on the hot path, should be the one that writes).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "leveldb/db.h"
#include "leveldb/env.h"
#include "leveldb/write_batch.h"
#include "raft/log_storage.h"

namespace raftkv::storage {

struct LogStoreOptions {
  // fsync every write (Save, Compact, ...). Only tests and benchmarks of the
  // unsynced path turn this off: Raft's safety depends on it.
  bool sync = true;
  // LevelDB memtable size. Larger than LevelDB's 4 MiB default so that bursts
  // of appends do not stall on memtable flushes.
  size_t write_buffer_size = 16 << 20;
  // Target size of LevelDB table files (LevelDB's default is 2 MiB).
  size_t max_file_size = 32 << 20;
  // Bytes of recently written entries kept in memory for Entries(); 0 turns
  // the cache off.
  size_t entry_cache_bytes = 8 << 20;
  // LevelDB environment; nullptr = leveldb::Env::Default(). Tests pass a
  // wrapper to count fsyncs or inject faults. Must outlive the store.
  leveldb::Env* env = nullptr;
};

class LogStore : public raft::LogStorage {
 public:
  // Opens or creates the log in `dir` (created if missing). Fails with a
  // message naming `dir`, the damaged file where LevelDB reports one, and what
  // to do, if the database is corrupt or unreadable (every entry is read and
  // checksummed once here), belongs to another kind of database, or is in use
  // by another process.
  static absl::StatusOr<std::unique_ptr<LogStore>> Open(const std::string& dir,
                                                        const LogStoreOptions& options);
  ~LogStore() override;
  LogStore(const LogStore&) = delete;
  LogStore& operator=(const LogStore&) = delete;

  // Identity of the data directory. The first call records (cluster_id,
  // node_id), synced; later calls return FailedPrecondition if they differ.
  // REQUIRES: non-empty cluster_id, non-zero node_id (else InvalidArgument).
  absl::Status CheckIdentity(const std::string& cluster_id, uint64_t node_id);

  // True when the log has never been written: no hard state, no entries and
  // no snapshot (a node that has neither bootstrapped nor joined).
  bool IsEmpty() const;

  // Bootstraps an empty log: records `conf` as the membership of a snapshot
  // at index 0, term 0. FailedPrecondition if the log is not empty;
  // InvalidArgument if `conf` has no voter, a zero id or a repeated id.
  absl::Status Bootstrap(const raft::ConfState& conf);

  // Persists one Ready: truncates any stored suffix from entries[0].index()
  // on, appends `entries`, and writes `hard_state` if set and its term or
  // vote differs from the stored one, in ONE WriteBatch, synced when
  // options.sync: one fsync per call however many entries. A hard state that
  // only moves the commit index is kept in memory (hard_state() and the
  // checks below use it) but not written, and a call with nothing to write
  // does not touch LevelDB: after a restart the commit index may be older,
  // which Raft allows (the leader tells it again).
  // REQUIRES (else InvalidArgument and nothing written): entries contiguous,
  // FirstIndex() <= entries[0].index() <= LastIndex() + 1, terms >= 1 and
  // non-decreasing (also against the entry before entries[0]), no committed
  // entry rewritten with another term, and the hard state invariants above.
  // `sync` = false skips the fsync (for a Ready whose must_sync is false: a
  // commit-only hard state); options.sync = false disables it always.
  // The entries are taken by value: those saved move into the entry cache.
  absl::Status Save(std::vector<raft::Entry> entries,
                    const std::optional<raft::HardState>& hard_state, bool sync = true);

  // Drops entries <= index in one batch and records (index, Term(index),
  // conf) as the snapshot metadata. A no-op if index <= Snapshot().index().
  // InvalidArgument if index > LastIndex().
  // Crash window the caller must respect: the state machine must already be
  // durably applied up to `index` (StateMachine::Sync()), because after this
  // call those entries exist nowhere else on this node.
  absl::Status Compact(uint64_t index, const raft::ConfState& conf);

  // Replaces the whole log by a snapshot (a follower installing one): all
  // entries are dropped and `meta` becomes the snapshot metadata.
  // FailedPrecondition if meta.index() is below the current snapshot index.
  absl::Status ApplySnapshot(const raft::SnapshotMetadata& meta);

  // raft::LogStorage.
  absl::StatusOr<raft::InitialState> GetInitialState() const override;
  absl::StatusOr<std::vector<raft::Entry>> Entries(uint64_t lo, uint64_t hi,
                                                   uint64_t max_bytes) const override;
  absl::StatusOr<uint64_t> Term(uint64_t index) const override;
  uint64_t FirstIndex() const override;
  uint64_t LastIndex() const override;
  raft::SnapshotMetadata Snapshot() const override;

  raft::HardState hard_state() const;
  // What Open() changed on disk, one line each for the operator's log: a
  // write that a crash tore, cut off the end of the preallocated LevelDB log
  // (internal::RepairTornLogTail), or an upgrade from format 1. Usually
  // empty.
  const std::vector<std::string>& open_notes() const { return open_notes_; }
  const std::string& dir() const { return dir_; }

 private:
  LogStore(std::string dir, const LogStoreOptions& options);
  absl::Status Load();
  // Moves format 1's "h:" metadata keys to their format 2 names, in one
  // batch, when the database is a format 1 log; nothing otherwise.
  absl::Status UpgradeFromFormat1() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Write(leveldb::WriteBatch* batch, absl::string_view what, bool sync = true);
  absl::StatusOr<uint64_t> TermLocked(uint64_t index) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status ValidateHardState(const raft::HardState& hs, uint64_t new_last) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Drops cached terms and entries from `index` on.
  void TruncateCacheFrom(uint64_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops cached terms and entries up to and including `index`.
  void CompactCacheTo(uint64_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AppendToCache(raft::Entry e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const std::string dir_;
  const LogStoreOptions options_;
  std::unique_ptr<leveldb::Env> env_;  // outlives db_
  std::vector<std::string> open_notes_;  // filled by Open(), before the store is shared
  std::unique_ptr<leveldb::DB> db_;

  mutable absl::Mutex mu_;
  // Mirror of what is on disk, except that the hard state is the latest one
  // given to Save(), whose commit index may be newer than the stored one.
  raft::HardState hard_state_ ABSL_GUARDED_BY(mu_);
  bool has_hard_state_ ABSL_GUARDED_BY(mu_) = false;
  raft::SnapshotMetadata snapshot_ ABSL_GUARDED_BY(mu_);
  bool has_snapshot_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t last_index_ ABSL_GUARDED_BY(mu_) = 0;
  // (first index, term) runs covering exactly [FirstIndex(), LastIndex()],
  // sorted by index; empty when the log holds no entries.
  std::vector<std::pair<uint64_t, uint64_t>> term_runs_ ABSL_GUARDED_BY(mu_);
  // The newest stored entries, contiguous and ending at last_index_.
  std::deque<raft::Entry> cache_ ABSL_GUARDED_BY(mu_);
  // Reused by Save so that its buffer keeps the capacity of earlier appends.
  leveldb::WriteBatch save_batch_ ABSL_GUARDED_BY(mu_);
  size_t cache_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace raftkv::storage
