// LogStorage: the read-only view of the persisted Raft log that the core uses.
//
// The core never writes through this interface. The driver persists what a
// Ready hands it (entries, hard state, snapshot) into the concrete store
// (storage::LogStore on LevelDB, or raft::MemoryStorage in tests), and only then
// calls Node::Advance(); from that moment the core reads those entries here.
//
// Index ranges: a store holds entries [FirstIndex(), LastIndex()]. Everything
// before FirstIndex() has been compacted into a snapshot whose last index is
// FirstIndex() - 1 and whose term Term(FirstIndex() - 1) still answers. An empty
// log has FirstIndex() == LastIndex() + 1.
//
// Thread safety: implementations are called only from the thread that owns the
// core (the Raft thread); they need no locking for the core's sake.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "raftkv/v1/raft.pb.h"

namespace raftkv::raft {

using Entry = ::raftkv::v1::Entry;
using HardState = ::raftkv::v1::HardState;
using ConfState = ::raftkv::v1::ConfState;
using SnapshotMetadata = ::raftkv::v1::SnapshotMetadata;

// Returned (as absl::StatusCode::kOutOfRange) for an index below FirstIndex()-1.
absl::Status LogCompactedError(uint64_t index);
// Returned (as absl::StatusCode::kNotFound) for an index above LastIndex().
absl::Status LogUnavailableError(uint64_t index);
bool IsLogCompacted(const absl::Status& status);
bool IsLogUnavailable(const absl::Status& status);

struct InitialState {
  HardState hard_state;
  ConfState conf_state;
};

class LogStorage {
 public:
  virtual ~LogStorage() = default;

  // The persisted hard state, and the membership as of the latest snapshot
  // (entries after it may change membership again; the core replays them).
  virtual absl::StatusOr<InitialState> GetInitialState() const = 0;

  // Entries [lo, hi), in order. Stops early once the encoded size passes
  // max_bytes, but always returns at least one entry when lo < hi.
  // REQUIRES: FirstIndex() <= lo <= hi <= LastIndex() + 1; otherwise
  // LogCompactedError / LogUnavailableError.
  virtual absl::StatusOr<std::vector<Entry>> Entries(uint64_t lo, uint64_t hi,
                                                     uint64_t max_bytes) const = 0;

  // Term of the entry at `index`, for index in [FirstIndex() - 1, LastIndex()].
  virtual absl::StatusOr<uint64_t> Term(uint64_t index) const = 0;

  virtual uint64_t FirstIndex() const = 0;
  virtual uint64_t LastIndex() const = 0;

  // Metadata of the latest snapshot (index 0 when there is none).
  virtual SnapshotMetadata Snapshot() const = 0;
};

}  // namespace raftkv::raft
