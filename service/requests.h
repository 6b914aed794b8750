// Waiters: how the Raft and apply threads hand a result back to whoever asked.
//
// A gRPC handler (or the Raft thread, for another node's forwarded request)
// creates a waiter, passes it by shared_ptr into the Raft inbox or the apply
// queue, and returns. Exactly one of the waiter's completion methods is
// called, once, from the Raft thread, the apply thread or (serializable reads)
// the thread that asked; implementations must therefore not block (they
// finish a gRPC call or queue a message). A waiter may outlive the RPC it
// serves (the client may have gone away); implementations guard against that.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "raftkv/v1/state_machine.pb.h"

namespace raftkv::service {

class KvStore;  // the state machine as the apply thread exposes it to reads

// A proposed write. Completed by the apply thread once its entry is applied,
// or failed (UNAVAILABLE when leadership was lost before the entry committed,
// or when the entry at its index turned out to be another leader's).
class WriteWaiter {
 public:
  virtual ~WriteWaiter() = default;
  // `term` is the Raft term of the applied entry.
  virtual void Applied(const v1::CommandResult& result, uint64_t term) = 0;
  virtual void Failed(const absl::Status& status) = 0;
  // Whether Applied() needs the key's previous value (the result's prev_kv).
  // Called on the apply thread, before the entry is applied.
  virtual bool WantsPrevKv() const { return true; }
};

// A read. Linearizable reads get a read index from the core (or from the
// leader, on a follower); serializable reads use index 0.
class ReadWaiter {
 public:
  virtual ~ReadWaiter() = default;
  // True: Serve() runs on the apply thread once applied >= index, with the
  // state machine. False: Serve() runs as soon as the index is known and
  // `store` is null (the leader answering a follower's ReadIndex call).
  virtual bool NeedsApply() const = 0;
  virtual void Serve(uint64_t index, uint64_t term, const KvStore* store) = 0;
  virtual void Failed(const absl::Status& status) = 0;
};

}  // namespace raftkv::service
