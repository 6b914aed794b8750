// Deterministic simulation of a Raft cluster built from raft::Node cores.
//
// RunSimulation() owns, for one seed, N nodes (ids 1..N), each a raft::Node
// over its own raft::MemoryStorage that plays the node's disk, a virtual
// clock, a network and a client, all driven by one std::mt19937_64 seeded
// with the seed: the same seed always replays the same run. Nothing here reads
// a wall clock or starts a thread.
//
// A run has two phases. During the chaos phase the network drops, delays,
// duplicates and reorders messages and partitions nodes (symmetric splits,
// isolated nodes and leaders, asymmetric one-way cuts, a bridge node that sees
// both halves); nodes crash (also between sending a Ready's messages_send_now
// and persisting it, so state that was not persisted before a message went out
// is visibly lost), pause, and restart from what their MemoryStorage holds.
// In two thirds of the runs the state machine is volatile and is replayed from
// index 1 (Config.applied = 0); in the other third it is durable (its applied
// index survives crashes), logs are compacted up to it at random, and
// followers that fall behind a compacted log receive snapshots. A third of the
// runs are "leader storms": every new leader crashes within a few ticks, often
// right after advancing its commit index, with one entry per AppendEntries —
// the short-lived, partially replicated leaders of the paper's figure 8.
// Then every fault heals and the run must show liveness: within a bounded
// number of ticks a leader is elected and a fresh proposal is applied on every
// node.
//
// After every step a SafetyChecker (safety_checker.h) checks election safety,
// one vote per term, log matching, commit safety, leader completeness,
// state-machine safety and read safety, and every node's CheckInvariants().
//
// Thread safety: RunSimulation() shares nothing between calls; calls for
// different seeds may run on different threads.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "raft/node.h"

namespace raftkv::sim {

struct SimOptions {
  uint64_t seed = 1;
  int nodes = 3;  // 3, 5 or 7 (any value in [1, 15] works)
  raft::TestingBugs bugs;
  std::string bug_name;  // for the replay command only
  // Ticks of faults, then faults stop and the liveness bound starts.
  int chaos_ticks = 1000;
  // Ticks allowed, after healing, for a leader to be elected and a fresh
  // proposal to be applied on every node.
  int liveness_ticks = 600;
  // Log every event to `log` (when set).
  bool verbose = false;
  std::ostream* log = nullptr;
};

struct FaultCounts {
  uint64_t drops = 0;         // messages lost at random
  uint64_t duplicates = 0;    // messages delivered twice
  uint64_t delays = 0;        // messages held back for up to several election timeouts
  uint64_t partitions = 0;    // network partition changes (cuts, not heals)
  uint64_t crashes = 0;       // crash-restarts at a tick boundary
  uint64_t torn_readies = 0;  // crashes between sending a Ready's messages and persisting it
  uint64_t pauses = 0;        // a node stops running for a while (GC pause, stalled disk)

  uint64_t Total() const {
    return drops + duplicates + delays + partitions + crashes + torn_readies + pauses;
  }
  FaultCounts& operator+=(const FaultCounts& o);
};

struct SimResult {
  // OK, or the first safety violation, core error or liveness failure.
  absl::Status status;
  FaultCounts faults;
  uint64_t ticks = 0;
  uint64_t committed = 0;  // highest commit index seen
  uint64_t leaders = 0;    // distinct terms with a leader
  uint64_t reads_answered = 0;
  uint64_t transfers = 0;        // leadership transfers requested
  uint64_t snapshots = 0;        // snapshots installed by followers
  int liveness_ticks_used = -1;  // ticks from healing to the fresh commit on all nodes
};

SimResult RunSimulation(const SimOptions& options);

// Names accepted by --bug: commit_previous_term_by_counting,
// vote_before_persist, skip_log_consistency_check ("" or "none" = no bug).
absl::StatusOr<raft::TestingBugs> ParseBug(std::string_view name);
std::vector<std::string> BugNames();

// The one-line command that replays `options` alone.
std::string ReplayCommand(const SimOptions& options);

struct BatchOptions {
  uint64_t start = 1;
  uint64_t seeds = 100;
  // 0 = mixed: seed s runs with 3, 5 or 7 nodes (s % 3).
  int nodes = 0;
  std::string bug_name;
  int threads = 1;
  // Stop at the first failing seed (used to show a bug is caught).
  bool stop_at_first_failure = false;
  int chaos_ticks = 1000;
  int liveness_ticks = 600;
};

struct BatchResult {
  uint64_t seeds_run = 0;
  uint64_t failures = 0;
  FaultCounts faults;
  double seconds = 0;
  int max_liveness_ticks = 0;
  uint64_t snapshots = 0;  // installed, over all seeds
  std::vector<uint64_t> failing_seeds;
  std::vector<std::string> failure_messages;  // same order as failing_seeds
  std::string Summary() const;
};

// Runs seeds [start, start + seeds), printing one line per failing seed (with
// its replay command) to `out` if set. Wall time is measured here, outside the
// simulation, for the summary only.
absl::StatusOr<BatchResult> RunBatch(const BatchOptions& options, std::ostream* out);

int NodesForSeed(int nodes_option, uint64_t seed);

}  // namespace raftkv::sim
