// Node: the Raft consensus core as a pure, deterministic state machine.
//
// It owns one server's volatile Raft state (role, term, log view, per-peer
// progress) and nothing else: no threads, no clock, no I/O. Time is Tick();
// the network is Step() in and Ready::messages_* out; the disk is the
// LogStorage view in and Ready::entries / hard_state out.
//
// The driver loop (service/ or the simulator), in this order:
//   1. Feed inputs: Tick(), Step(), Propose(), ReadIndex(), TransferLeadership().
//   2. If HasReady(), take rd = GetReady(), then
//      a. send rd.messages_send_now (a leader's AppendEntries may leave before
//         its own disk write: Raft thesis §10.2.1);
//      b. if rd.snapshot is set, replace the log by it (and the state machine
//         by the snapshot data the transport received); then persist
//         rd.entries (truncating any conflicting suffix first) and
//         rd.hard_state in one synced write;
//      c. send rd.messages_after_persist (votes, acknowledgements: they promise
//         what was just persisted);
//      d. apply rd.committed_entries in order and serve rd.read_states once the
//         state machine has applied up to each read's index. (A Ready without
//         entries or snapshot that need not be synced may do d before b, and
//         before a: committed entries always come from an earlier, persisted
//         Ready, and no message is harmed by leaving later.)
//   3. Call Advance(): the core now reads those entries from LogStorage.
// Given the same Config (including random_seed), storage contents and input
// sequence, a Node produces the same outputs.
//
// Thread safety: none. Exactly one thread may call a Node (the Raft thread).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "raft/log_storage.h"

namespace raftkv::raft {

using Message = ::raftkv::v1::Message;

enum class Role { kFollower, kPreCandidate, kCandidate, kLeader };
const char* RoleName(Role role);

// Deliberately broken behaviours, so tests can show that the simulator
// catches each one. Never set outside tests.
struct TestingBugs {
  // Commit an entry of an earlier term by counting replicas (violates §5.4.2).
  bool commit_previous_term_by_counting = false;
  // Send vote grants before the vote is persisted.
  bool vote_before_persist = false;
  // Accept AppendEntries without checking prev_log_index / prev_log_term.
  bool skip_log_consistency_check = false;
};

struct Config {
  uint64_t id = 0;  // this node; must be non-zero
  // A follower that hears nothing for a random timeout in
  // [election_ticks, 2 * election_ticks) campaigns.
  int election_ticks = 10;
  int heartbeat_ticks = 1;  // REQUIRES: heartbeat_ticks < election_ticks
  // Cap on the encoded entries in one AppendEntries.
  uint64_t max_append_bytes = 1 << 20;
  // Cap on AppendEntries messages in flight to one follower (pipelining).
  int max_inflight_appends = 256;
  // Cap on the encoded committed entries handed out by one Ready.
  uint64_t max_committed_bytes_per_ready = 16 << 20;
  bool pre_vote = true;
  bool check_quorum = true;
  // Thrifty replication: a leader sends new entries at once only to the
  // fewest voters that make a quorum with it (the "eager" followers; one of
  // two in a three-node cluster) and to the rest with each heartbeat. A
  // commit waits for the same acknowledgements as before (the eager ones
  // are the first to answer), but the other followers write and fsync once
  // per heartbeat instead of once per round of entries: on one shared disk
  // and two cores that is fewer parallel fsyncs per commit and less CPU per
  // entry. An eager follower that leaves entries unacknowledged for a whole
  // heartbeat interval is replaced by the most up-to-date other voter (which
  // is sent what it lacks at once). No follower is sent a commit index on
  // its own: each learns it with its next append or heartbeat, or when the
  // driver calls AnnounceCommit once writes pause. So lazy followers' own
  // serializable reads may be up to a heartbeat older; SendEntriesNow
  // serves a follower about to wait for entries or a commit index.
  bool thrifty_replication = false;
  // Index of the last entry the state machine has already applied (restart).
  uint64_t applied = 0;
  uint64_t random_seed = 0;
  TestingBugs testing_bugs;
};

// A read that may be served once the state machine has applied `index`.
struct ReadState {
  uint64_t index = 0;
  std::string context;
};

struct Ready {
  // Set when term, vote or commit changed since the last Ready.
  std::optional<HardState> hard_state;
  // Set when a leader's snapshot replaces this node's log: everything up to
  // snapshot->index() is now covered by it, and membership is its conf_state.
  std::optional<SnapshotMetadata> snapshot;
  // Entries to persist; the first one's index may be at or below the stored
  // last index, in which case the stored suffix from there on is replaced.
  std::vector<Entry> entries;
  // Safe to send before this Ready is persisted.
  std::vector<Message> messages_send_now;
  // Send only after `entries` and `hard_state` are durable.
  std::vector<Message> messages_after_persist;
  // Committed entries to apply, in log order, each handed out exactly once.
  std::vector<Entry> committed_entries;
  std::vector<ReadState> read_states;
  // Contexts of ReadIndex requests that can no longer be served here (lost
  // leadership); their callers should retry elsewhere.
  std::vector<std::string> dropped_reads;

  // True when the writes of this Ready must be synced before the messages in
  // messages_after_persist leave: new entries, a snapshot, or a new term or
  // vote. A Ready that only moves the commit index may be written without an
  // fsync: a commit index lost in a crash is learned again from the leader.
  bool must_sync = false;

  bool MustPersist() const {
    return hard_state.has_value() || !entries.empty() || snapshot.has_value();
  }
};

// What happened to a proposal. Expected outcomes, not errors.
enum class ProposeOutcome { kAccepted, kNotLeader, kTransferring };

struct ProposeResult {
  ProposeOutcome outcome = ProposeOutcome::kNotLeader;
  uint64_t index = 0;   // when accepted: the entry's index...
  uint64_t term = 0;    // ...and term; it is committed iff an entry with this
                        // index and term shows up in committed_entries.
  uint64_t leader = 0;  // when not accepted: the leader, if known (0 if not)
};

enum class ProgressState { kProbe, kReplicate, kSnapshot };
const char* ProgressStateName(ProgressState state);

struct PeerStatus {
  uint64_t match = 0;
  uint64_t next = 0;
  ProgressState state = ProgressState::kProbe;
  int inflight = 0;
  // Ticks since the leader last heard from this peer.
  int64_t ticks_since_contact = 0;
};

// A read-only snapshot of a node's state, for Status RPCs and tests.
struct NodeStatus {
  uint64_t id = 0;
  Role role = Role::kFollower;
  uint64_t term = 0;
  uint64_t vote = 0;
  uint64_t leader = 0;
  uint64_t commit = 0;
  uint64_t applied = 0;  // handed out for applying
  uint64_t last_index = 0;
  uint64_t first_index = 0;
  ConfState conf_state;
  uint64_t transfer_target = 0;
  std::map<uint64_t, PeerStatus> peers;  // leader only, followers and self
};

// The few fields a driver publishes after every step; cheap to take, unlike
// NodeStatus (which copies membership and progress).
struct NodeSummary {
  Role role = Role::kFollower;
  uint64_t term = 0;
  uint64_t leader = 0;
  uint64_t commit = 0;
};

class Node {
 public:
  // Reads the initial state from `storage`, which must outlive the Node.
  static absl::StatusOr<std::unique_ptr<Node>> Create(const Config& config,
                                                      const LogStorage* storage);
  virtual ~Node() = default;

  // One unit of logical time.
  virtual void Tick() = 0;
  // A message from a peer. Messages from unknown senders or for another node
  // are ignored; a malformed message is an error and changes nothing. Taken
  // by value: an append's entries move into the log (pass an rvalue to
  // spare the copy).
  virtual absl::Status Step(Message msg) = 0;
  // Appends a normal entry carrying `data` if this node is the leader.
  virtual ProposeResult Propose(std::string data) = 0;
  // Asks for a linearizable read point. On the leader the request joins the
  // next heartbeat round; once a quorum confirms leadership a ReadState with
  // `context` comes out in a Ready. kNotLeader elsewhere.
  virtual ProposeOutcome ReadIndex(std::string context) = 0;
  // Leader only: brings `target` up to date, then asks it to campaign at once.
  // Proposals are refused (kTransferring) until it completes or times out
  // after one election timeout.
  virtual absl::Status TransferLeadership(uint64_t target) = 0;
  // A leader sends `peer` the entries it lacks, or else the commit index it
  // has not been told, now rather than with the next heartbeat
  // (thrifty_replication): it is about to wait for them, e.g. to serve a
  // linearizable read at a read index this leader gave it. No-op for a peer
  // that lacks neither, or on a follower.
  virtual void SendEntriesNow(uint64_t peer) = 0;
  // A leader tells each follower that holds every entry sent to it the
  // commit index it has not been told yet (thrifty_replication sends no
  // commit index on its own). For a driver to call once writes pause, so
  // that followers need not wait for the next heartbeat to apply the last
  // ones. Lazy followers still lacking entries get them with the heartbeat.
  // No-op on a follower, or when every follower has been told.
  virtual void AnnounceCommit() = 0;

  // The transport could not deliver the snapshot that a snapshot_request to
  // `peer` announced: the leader goes back to probing that peer.
  // Contract: the leader sends that peer nothing but heartbeats until the
  // peer's snapshot_response arrives or this is called, so a transport must
  // end every snapshot transfer in exactly one of the two (treat it as one
  // call that answers or fails), or the peer stalls.
  virtual void ReportSnapshotFailure(uint64_t peer) = 0;

  virtual bool HasReady() const = 0;
  virtual Ready GetReady() = 0;
  // REQUIRES: the last Ready has been handled as the loop above states.
  virtual void Advance() = 0;

  virtual NodeStatus Status() const = 0;
  // The same role, term, leader and commit as Status(), without copies.
  virtual NodeSummary Summary() const = 0;
  // Checks the core's own invariants (e.g. commit <= last index, a leader
  // voted for itself, 0 <= match < next). OK when all hold.
  virtual absl::Status CheckInvariants() const = 0;
};

}  // namespace raftkv::raft
