// SafetyChecker: the global history of a simulated (or scripted) Raft cluster
// and the safety properties checked against it after every step.
//
// It owns what an omniscient observer would record: every (term, leader) pair
// seen, every vote granted, the prefix hash of every persisted log, every entry
// known to be committed, every entry applied, and every ReadIndex issued. The
// driver (Simulator or TestCluster) reports events as they happen; each report
// returns the first violated property as a non-OK absl::Status naming it, and
// the checker remembers it (first_violation()).
//
// Properties (Raft paper figure 3 and §5.4, thesis §6.4 for reads):
//  - Election safety: at most one leader per term.
//  - One vote per term: a server never grants its vote in one term to two
//    different candidates (§5.2), as seen in the VoteResponses it sends.
//  - Log matching: two logs holding an entry with the same index and term hold
//    identical prefixes up to it. Every log is tracked as a chain of prefix
//    hashes, so (index, term) must always map to one prefix hash, across all
//    nodes and all of time (a leader creates at most one entry per index in a
//    term). Terms never decrease along a log.
//  - Commit safety: every node whose commit index covers index i holds the same
//    prefix up to i; a node's commit index never decreases while it runs, and
//    its log never changes below it.
//  - Leader completeness: an entry committed in term c is in the log of every
//    leader of a term > c. The commit term recorded for index i is the term of
//    the first node seen with commit >= i, which is >= the real commit term, so
//    the check can miss nothing it claims and never fires falsely.
//  - State-machine safety: nodes apply the same entry at each index, in order,
//    each index once per incarnation, and never a value no client proposed or
//    one value at two indices.
//  - Read safety: a ReadState's index is >= the highest commit index known
//    anywhere when the read was issued, is answered at most once, and only by
//    the node it was issued to.
//
// Not thread-safe: one simulation, one thread.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "raft/memory_storage.h"
#include "raft/node.h"

namespace raftkv::sim {

class SafetyChecker {
 public:
  // Node ids are 1..num_nodes.
  explicit SafetyChecker(int num_nodes);

  SafetyChecker(const SafetyChecker&) = delete;
  SafetyChecker& operator=(const SafetyChecker&) = delete;

  // A client asked `node` to propose `data`.
  void OnPropose(const std::string& data) { proposed_.insert(data); }

  // `node` sent `msg` (before the network sees it).
  absl::Status OnSend(uint64_t node, const raft::Message& msg);

  // `node` is about to persist `entries` (a Ready's entries) into `log`,
  // which still holds the old contents. Checks the append against the node's
  // commit index and the global (index, term) -> prefix map.
  absl::Status OnPersistEntries(uint64_t node, const raft::MemoryStorage& log,
                                const std::vector<raft::Entry>& entries);

  // `node` persisted hard state `hs` (previous value in `before`).
  absl::Status OnPersistHardState(uint64_t node, const raft::HardState& before,
                                  const raft::HardState& hs);

  // `node` handed out `e` for applying.
  absl::Status OnApply(uint64_t node, const raft::Entry& e);

  // A read with `context` was issued to `node` and accepted.
  void OnReadIssued(uint64_t node, const std::string& context);
  // `node` answered the read with `rs`.
  absl::Status OnReadState(uint64_t node, const raft::ReadState& rs, uint64_t node_commit);
  // `node` gave up the read `context`.
  absl::Status OnReadDropped(uint64_t node, const std::string& context);

  // `node`'s state after it handled all its Readies. `log` is its disk.
  absl::Status Observe(uint64_t node, const raft::NodeStatus& status,
                       const raft::MemoryStorage& log);

  // `node` replaces its log (and state machine) by a leader's snapshot.
  // Checks that the snapshot covers only committed entries.
  absl::Status OnSnapshot(uint64_t node, const raft::SnapshotMetadata& meta);

  // `node` crashed (its volatile state is gone; its state machine too unless
  // `keep_state_machine`, when the applied index is durable) / restarted.
  void OnCrash(uint64_t node, bool keep_state_machine = false);
  void OnRestart(uint64_t node);

  // The first violation reported, OK if none.
  const absl::Status& first_violation() const { return first_violation_; }

  uint64_t max_commit() const { return committed_.size(); }
  uint64_t applied_on(uint64_t node) const { return nodes_[node].applied; }
  size_t leaders_seen() const { return leader_by_term_.size(); }
  size_t reads_answered() const { return reads_answered_; }

 private:
  struct CommittedEntry {
    uint64_t term = 0;
    uint64_t prefix_hash = 0;
    uint64_t commit_term = 0;  // term of the first node seen with commit >= index
  };
  struct PerNode {
    // chain[i - 1] = hash of the persisted log prefix [1, i].
    std::vector<uint64_t> chain;
    std::vector<uint64_t> chain_terms;
    bool up = true;
    uint64_t commit = 0;          // last observed commit index, this incarnation
    uint64_t commit_checked = 0;  // prefix verified against committed_
    uint64_t applied = 0;         // applied index, this incarnation
    uint64_t applied_hash = 0;    // prefix hash of applied entries
    uint64_t leader_term = 0;     // term in which completeness was last checked
    bool is_leader = false;
    uint64_t term = 0;
  };
  struct PendingRead {
    uint64_t node = 0;
    uint64_t min_index = 0;
  };

  absl::Status Fail(absl::Status s);
  absl::Status CheckLeaderCompleteness(uint64_t node, uint64_t term);
  absl::Status RecordCommitted(uint64_t node, uint64_t index, uint64_t term);

  std::vector<PerNode> nodes_;  // indexed by node id; [0] unused
  std::map<uint64_t, uint64_t> leader_by_term_;
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> vote_by_node_term_;  // (node, term) -> cand
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> prefix_by_index_term_;
  std::vector<CommittedEntry> committed_;        // committed_[i - 1]
  std::vector<uint64_t> applied_prefix_;         // applied_prefix_[i - 1], any node
  std::map<std::string, uint64_t> value_index_;  // applied data -> index
  std::set<std::string> proposed_;
  std::map<std::string, PendingRead> reads_;
  std::set<std::string> reads_done_;
  size_t reads_answered_ = 0;
  absl::Status first_violation_;
};

// Hash of the log prefix ending in `e`, given the hash of the prefix before it.
uint64_t ChainHash(uint64_t prev, const raft::Entry& e);

}  // namespace raftkv::sim
