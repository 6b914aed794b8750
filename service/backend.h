// Backends: the two stores raftd drives, seen through the narrow interfaces the
// Raft and apply threads need.
//
// LogBackend is owned and called by the Raft thread only. StateMachineBackend
// applies on one thread at a time (the Applier's); its reads may come from any
// thread, concurrently with applying (storage::StateMachine locks). raftd uses
// the LevelDB implementations in storage/ (OpenBackends).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "raft/log_storage.h"
#include "raftkv/v1/state_machine.pb.h"

namespace raftkv::service {

class LogBackend {
 public:
  virtual ~LogBackend() = default;
  // The read-only view the core reads; valid as long as the backend.
  virtual const raft::LogStorage* view() const = 0;
  // Persists `entries` (replacing any stored suffix from entries[0].index on)
  // and `hard_state` in one write, synced when `sync` (Ready::must_sync).
  // The entries are taken by value: a caller done with them moves them in.
  virtual absl::Status Save(std::vector<raft::Entry> entries,
                            const std::optional<raft::HardState>& hard_state, bool sync) = 0;
};

// Reads; thread-safe.
class KvStore {
 public:
  virtual ~KvStore() = default;
  virtual absl::StatusOr<std::optional<v1::KeyValue>> Get(const std::string& key) const = 0;
  // Keys in [start, end) (end empty = to the end of the key space), at most
  // `limit` of them (limit > 0); *more is set when more matched.
  virtual absl::Status Range(const std::string& start, const std::string& end, int64_t limit,
                             std::vector<v1::KeyValue>* out, bool* more) const = 0;
  virtual int64_t revision() const = 0;
};

class StateMachineBackend : public KvStore {
 public:
  virtual uint64_t applied_index() const = 0;
  // Checks a command before it is proposed; INVALID_ARGUMENT with a message.
  virtual absl::Status Validate(const v1::Command& command) const = 0;
  // Applies committed entries in order (any type: non-normal entries only
  // advance the applied index). One result per entry; a write's carries the
  // key's previous value when wants_prev_kv(its index) says so (and may
  // otherwise).
  virtual absl::StatusOr<std::vector<v1::CommandResult>> Apply(
      const std::vector<raft::Entry>& entries,
      absl::FunctionRef<bool(uint64_t index)> wants_prev_kv) = 0;
  virtual absl::Status Sync() = 0;
};

struct Backends {
  std::unique_ptr<LogBackend> log;
  std::unique_ptr<StateMachineBackend> state_machine;
};

// Opens (creating on first start) the node's stores under `data_dir`, checks
// that they belong to (cluster_id, node_id) and, on a fresh directory,
// bootstraps the log with `initial_voters`. FAILED_PRECONDITION with a clear
// message when the directory belongs to another node or cluster.
absl::StatusOr<Backends> OpenBackends(const std::string& data_dir, uint64_t cluster_id,
                                      uint64_t node_id,
                                      const std::vector<uint64_t>& initial_voters);

}  // namespace raftkv::service
