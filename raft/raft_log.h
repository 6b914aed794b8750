// RaftLog: the core's view of its log — the persisted part (read through
// LogStorage) followed by an unstable tail of entries not yet persisted.
//
// Index ranges: storage holds [first, offset - 1] of this log (entries at or
// past `offset` in storage, if any, are stale and about to be overwritten);
// unstable holds [offset, offset + unstable.size() - 1].
// Invariants: applied <= committed <= LastIndex(); committed never decreases;
// offset - 1 is the highest index known to be durable *in this log*, which is
// what a leader may count for itself toward a commit quorum.
//
// Single-threaded; owned by raft::Node.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "raft/log_storage.h"

namespace raftkv::raft {

class RaftLog {
 public:
  RaftLog(const LogStorage* storage, uint64_t committed, uint64_t applied);

  uint64_t FirstIndex() const;
  uint64_t LastIndex() const;
  uint64_t LastTerm() const;
  // Term of `index`, or 0 when it is out of range (compacted or beyond the end).
  uint64_t TermOr0(uint64_t index) const;
  absl::StatusOr<uint64_t> Term(uint64_t index) const;
  bool MatchTerm(uint64_t index, uint64_t term) const;
  // Raft paper §5.4.1: a candidate's log is at least as up to date as ours.
  bool IsUpToDate(uint64_t last_index, uint64_t last_term) const;

  // Entries [lo, hi), at most max_bytes (at least one entry if lo < hi).
  absl::StatusOr<std::vector<Entry>> Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) const;

  uint64_t committed() const { return committed_; }
  uint64_t applied() const { return applied_; }
  // Highest index of this log that is on stable storage.
  uint64_t persisted() const { return offset_ - 1; }
  const std::vector<Entry>& unstable() const { return unstable_; }

  // Appends entries whose indexes continue or overwrite this log from
  // entries[0].index (which must be in [committed + 1, LastIndex() + 1]).
  void Append(std::vector<Entry> entries);
  // The follower's half of the consistency check (§5.3): if our entry at
  // prev_index has prev_term, append the new entries (dropping any that we
  // already have, truncating from the first conflict) and return the index of
  // the last new entry. Returns nullopt on mismatch.
  std::optional<uint64_t> MaybeAppend(uint64_t prev_index, uint64_t prev_term,
                                      std::vector<Entry> entries, bool skip_check);
  // First index of the term of `index` at or below `index`, not scanning below
  // `floor` (for conflict hints).
  uint64_t FirstIndexOfTermAt(uint64_t index, uint64_t floor) const;
  // Last index whose term is <= term (leader side of fast backtracking).
  uint64_t LastIndexWithTermAtMost(uint64_t from, uint64_t term) const;

  void CommitTo(uint64_t index);
  // Committed entries not yet handed out, at most max_bytes; marks them handed out.
  std::vector<Entry> TakeCommittedEntries(uint64_t max_bytes);
  bool HasCommittedEntries() const { return applied_ < committed_; }
  // The driver persisted everything up to `index` of the unstable tail.
  void StableTo(uint64_t index);

  // Replaces the whole log by a snapshot (a follower far behind its leader).
  // The snapshot stays pending until the driver has persisted it.
  void Restore(const SnapshotMetadata& meta);
  const std::optional<SnapshotMetadata>& pending_snapshot() const { return pending_snapshot_; }
  void SnapshotPersisted() { pending_snapshot_.reset(); }

  // Non-empty once an append tried to overwrite a committed entry — which no
  // correct leader can cause; CheckInvariants reports it.
  const std::string& violation() const { return violation_; }

 private:
  std::string violation_;
  const LogStorage* storage_;
  uint64_t offset_;
  std::vector<Entry> unstable_;
  // A snapshot not yet persisted: it, not storage, defines the log below offset_.
  std::optional<SnapshotMetadata> pending_snapshot_;
  uint64_t committed_;
  uint64_t applied_;
};

}  // namespace raftkv::raft
