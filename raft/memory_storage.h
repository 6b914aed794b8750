// MemoryStorage: an in-memory LogStorage with the write operations a driver
// needs. It is the twin of storage::LogStore used by unit tests and by the
// deterministic simulator, where "what was persisted" is exactly what is in
// here when a node crashes.
//
// Not thread-safe: one owner, one thread.
#pragma once

#include <vector>

#include "raft/log_storage.h"

namespace raftkv::raft {

class MemoryStorage : public LogStorage {
 public:
  MemoryStorage();
  // A fresh log whose membership is `voters` (bootstrapping a new cluster).
  explicit MemoryStorage(const ConfState& initial_conf);

  absl::StatusOr<InitialState> GetInitialState() const override;
  absl::StatusOr<std::vector<Entry>> Entries(uint64_t lo, uint64_t hi,
                                             uint64_t max_bytes) const override;
  absl::StatusOr<uint64_t> Term(uint64_t index) const override;
  uint64_t FirstIndex() const override;
  uint64_t LastIndex() const override;
  SnapshotMetadata Snapshot() const override;

  void SetHardState(const HardState& hs) { hard_state_ = hs; }
  const HardState& hard_state() const { return hard_state_; }

  // Appends `entries`, first truncating any existing suffix from
  // entries[0].index on. REQUIRES: entries contiguous, and
  // FirstIndex() <= entries[0].index <= LastIndex() + 1.
  absl::Status Append(const std::vector<Entry>& entries);

  // Discards entries up to and including `index` (which must be <= LastIndex()),
  // remembering the term of `index` and `conf` as the snapshot metadata.
  absl::Status Compact(uint64_t index, const ConfState& conf);

  // Replaces the whole log by a snapshot (InstallSnapshot on a follower).
  void ApplySnapshot(const SnapshotMetadata& meta);

 private:
  HardState hard_state_;
  SnapshotMetadata snapshot_;
  // entries_[i] has index snapshot_.index() + 1 + i.
  std::vector<Entry> entries_;
};

}  // namespace raftkv::raft
