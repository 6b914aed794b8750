// Progress: what a leader knows about one follower's log, and the flow control
// that decides whether it may send that follower more entries.
//
// Invariants: 0 <= match < next; in kReplicate, inflight entries are the last
// indexes of AppendEntries sent and not yet acknowledged, in increasing order,
// all >= next - ... and at most `max_inflight` of them. In kProbe at most one
// AppendEntries is outstanding (probe_sent) until the follower answers.
//
// Owned by the leader role of raft::Node; single-threaded like the core.
#pragma once

#include <cstdint>
#include <deque>
#include <string>

#include "raft/node.h"

namespace raftkv::raft {

class Progress {
 public:
  Progress(uint64_t next, int max_inflight) : next_(next), max_inflight_(max_inflight) {}

  uint64_t match() const { return match_; }
  uint64_t next() const { return next_; }
  ProgressState state() const { return state_; }
  int inflight() const { return static_cast<int>(inflight_.size()); }
  bool recent_active() const { return recent_active_; }
  int64_t ticks_since_contact() const { return ticks_since_contact_; }
  uint64_t read_round_acked() const { return read_round_acked_; }

  // True when no AppendEntries should be sent now (probe outstanding, or the
  // in-flight window is full).
  bool IsPaused() const;

  // A success acknowledgement up to `index`. Returns true if match advanced.
  bool MaybeUpdate(uint64_t index);
  // Records that entries up to `last` were sent (kReplicate: optimistically
  // advances next; kProbe: pauses until the follower answers).
  void SentEntries(uint64_t last, bool carried_entries);
  // A rejection of an append whose prev_log_index was `rejected`; the leader
  // computed `hint` as the next index to try. Returns false if stale.
  bool MaybeDecreaseTo(uint64_t rejected, uint64_t hint);

  // The follower needs a snapshot covering up to `index`: stop sending
  // entries until it has one (or the transport reports failure).
  void BecomeSnapshot(uint64_t index);
  uint64_t pending_snapshot() const { return pending_snapshot_; }
  void BecomeProbe();
  void BecomeReplicate();
  // A heartbeat answer: lets a paused probe try again, and frees one in-flight
  // slot so a window full of lost messages cannot stall a follower forever.
  void OnHeartbeatResponse();

  void MarkContact() {
    recent_active_ = true;
    ticks_since_contact_ = 0;
  }
  void Tick() { ++ticks_since_contact_; }
  void ResetRecentActive() { recent_active_ = false; }
  // The highest commit index sent to this follower.
  uint64_t commit_sent() const { return commit_sent_; }
  void SentCommit(uint64_t commit) {
    if (commit > commit_sent_) commit_sent_ = commit;
  }
  void AckReadRound(uint64_t round) {
    if (round > read_round_acked_) read_round_acked_ = round;
  }

 private:
  uint64_t match_ = 0;
  uint64_t next_;
  ProgressState state_ = ProgressState::kProbe;
  bool probe_sent_ = false;
  std::deque<uint64_t> inflight_;
  int max_inflight_;
  bool recent_active_ = false;
  int64_t ticks_since_contact_ = 0;
  uint64_t read_round_acked_ = 0;
  uint64_t pending_snapshot_ = 0;  // in kSnapshot: index of the snapshot sent
  uint64_t commit_sent_ = 0;
};

}  // namespace raftkv::raft
