#include "tests/sim/simulator.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "raft/memory_storage.h"
#include "tests/sim/safety_checker.h"

namespace raftkv::sim {
namespace {

using raft::Message;

// The network and the nodes run in sub-tick steps, so that message deliveries
// interleave with ticks at a finer grain than one tick.
constexpr int kStepsPerTick = 4;
constexpr int kElectionTicks = 10;

// Fault rates of one run, drawn from the seed so that the seeds cover calm
// runs, lossy runs, partition-heavy runs and crash-heavy runs.
struct FaultProfile {
  double drop = 0;        // per message
  double duplicate = 0;   // per message
  double long_delay = 0;  // per message
  int max_long_delay_steps = 0;
  double crash = 0;         // per node per tick
  double leader_crash = 0;  // per tick: crash whoever leads
  double torn_ready = 0;    // per Ready that must be persisted
  // Per newly elected leader: crash it within a few ticks, before it has
  // replicated much (the short-lived leaders of the paper's figure 8).
  double fresh_leader_crash = 0;
  // Per commit-index advance on a leader: crash it before the new commit index
  // (or the entries after it) reach the followers.
  double commit_crash = 0;
  double pause = 0;            // per node per tick
  int mean_partition_gap = 0;  // ticks between partition changes (0 = never)
  double propose = 0;          // client proposals per tick
  double read = 0;             // client ReadIndex requests per tick
  double transfer = 0;         // leadership transfers per tick
  // Per node per tick: compact the log up to a random index at or below the
  // applied index (only in runs whose state machines are durable).
  double compact = 0;
};

struct InFlight {
  uint64_t deliver_at = 0;  // step
  uint64_t order = 0;       // random tie-break: equal-time messages arrive in any order
  Message msg;
  bool operator>(const InFlight& o) const {
    return deliver_at != o.deliver_at ? deliver_at > o.deliver_at : order > o.order;
  }
};

struct SimNode {
  uint64_t id = 0;
  raft::Config config;
  raft::MemoryStorage storage;       // the disk: survives crashes
  std::unique_ptr<raft::Node> node;  // null while crashed
  uint64_t restart_at = 0;           // step, while crashed
  uint64_t paused_until = 0;         // step
  uint64_t crash_at = 0;             // step of a scheduled crash (0 = none)
  int tick_period = kStepsPerTick;   // steps per tick: clocks drift a little
  int tick_phase = 0;
  std::vector<InFlight> inbox;  // min-heap on (deliver_at, order)
  // In runs with durable state machines: the applied index, which survives
  // a crash like the log does (the state machine's own disk). Logs are then
  // compacted up to it, and followers behind a compacted log get snapshots.
  uint64_t sm_applied = 0;
  // Peers whose snapshot the network lost since this node last ran; the
  // transport tells the core (ReportSnapshotFailure) before the next step.
  std::vector<uint64_t> snapshot_failures;
  // Leaders whose snapshot this node received and has not answered yet.
  std::set<uint64_t> snapshot_calls;
  raft::NodeStatus status;  // as of the last observation
};

class Simulation {
 public:
  explicit Simulation(const SimOptions& o) : opt_(o), rng_(o.seed), checker_(o.nodes) {}

  SimResult Run();

 private:
  double Uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }
  bool Chance(double p) { return p > 0 && Uniform() < p; }
  uint64_t Between(uint64_t lo, uint64_t hi) {  // inclusive
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_);
  }
  template <typename T>
  const T& Pick(const std::vector<T>& v) {
    return v[Between(0, v.size() - 1)];
  }

  template <typename... Args>
  void Log(const Args&... args) {
    if (opt_.verbose && opt_.log != nullptr) {
      *opt_.log << absl::StrFormat("[%6.2f] ", static_cast<double>(step_) / kStepsPerTick)
                << absl::StrCat(args...) << "\n";
    }
  }

  void Setup();
  absl::Status StartNode(SimNode& n);
  void Crash(SimNode& n, uint64_t down_steps, const char* why);
  absl::Status Send(uint64_t from, const Message& msg);
  absl::Status HandleReady(SimNode& n);
  absl::Status Observe(SimNode& n);
  absl::Status RunStep();
  absl::Status Deliver(SimNode& n);
  // The network lost `msg`; a lost snapshot is reported back to its sender.
  void Lost(const Message& msg);
  absl::Status ClientActions();
  void InjectFaults();
  void NewPartition();
  void Heal();
  SimNode* Leader();
  bool Up(const SimNode& n) const { return n.node != nullptr; }
  bool Running(const SimNode& n) const { return n.node != nullptr && n.paused_until <= step_; }
  bool Blocked(uint64_t from, uint64_t to) const { return blocked_[from][to]; }

  const SimOptions opt_;
  std::mt19937_64 rng_;
  SafetyChecker checker_;
  FaultProfile prof_;
  std::vector<SimNode> nodes_;              // nodes_[id - 1]
  std::vector<std::vector<bool>> blocked_;  // [from][to], ids 1..N
  uint64_t step_ = 0;
  bool chaos_ = true;
  uint64_t next_partition_change_ = 0;
  bool partitioned_ = false;
  uint64_t next_value_ = 0;
  uint64_t next_read_ = 0;
  uint64_t order_ = 0;
  SimResult result_;
  // Liveness phase: one fresh proposal per leader (node, term), and the index
  // of the first one applied anywhere.
  uint64_t final_index_ = 0;
  std::set<std::pair<uint64_t, uint64_t>> final_proposed_;  // (node, term)
  bool live_ = false;
  bool storm_ = false;
  bool durable_sm_ = false;
  raftkv::v1::ConfState conf_;  // the (fixed) membership
  absl::Status compaction_error_;
};

absl::Status Simulation::StartNode(SimNode& n) {
  // A volatile state machine is replayed from the start of the log; a
  // durable one resumes after what it applied.
  n.config.applied = durable_sm_ ? n.sm_applied : 0;
  auto node = raft::Node::Create(n.config, &n.storage);
  if (!node.ok()) {
    return absl::InternalError(absl::StrCat(
        "node ", n.id, " failed to start from its storage: ", node.status().message()));
  }
  n.node = std::move(*node);
  checker_.OnRestart(n.id);
  return Observe(n);
}

void Simulation::Setup() {
  // One draw per knob, always in the same order, so a seed fixes all of them.
  const double drops[] = {0, 0.01, 0.05, 0.15};
  const double dups[] = {0, 0.02, 0.08};
  const double delays[] = {0, 0.02, 0.08};
  const double crashes[] = {0, 0.002, 0.01};
  const double torn[] = {0, 0.01, 0.05};
  const int gaps[] = {0, 20, 60};
  // 1 byte: one entry per AppendEntries, so followers often hold a prefix of
  // what a leader sent them.
  const uint64_t append_bytes[] = {1, 48, 200, 1 << 20};
  const int inflight[] = {1, 2, 8, 256};
  prof_.drop = drops[Between(0, 3)];
  prof_.duplicate = dups[Between(0, 2)];
  prof_.long_delay = delays[Between(0, 2)];
  prof_.max_long_delay_steps = static_cast<int>(Between(1, 3)) * kElectionTicks * kStepsPerTick;
  prof_.crash = crashes[Between(0, 2)];
  prof_.leader_crash = Chance(0.5) ? 0.01 : 0;
  prof_.fresh_leader_crash = Pick(std::vector<double>{0, 0.3, 0.7, 1.0});
  prof_.commit_crash = Pick(std::vector<double>{0, 0.05, 0.2});
  prof_.torn_ready = torn[Between(0, 2)];
  prof_.pause = Chance(0.3) ? 0.003 : 0;
  prof_.mean_partition_gap = gaps[Between(0, 2)];
  prof_.propose = 0.3 + 0.5 * Uniform();
  prof_.read = 0.1 + 0.3 * Uniform();
  prof_.transfer = Chance(0.3) ? 0.005 : 0;

  uint64_t max_append = append_bytes[Between(0, 3)];
  int max_inflight = inflight[Between(0, 3)];
  // A third of the seeds are leader storms: every new leader dies within a
  // few ticks, often right after it advances its commit index, and entries
  // travel one per message with one message in flight. Logs then diverge
  // the way the paper's figure 8 shows (short-lived leaders, each leaving a
  // partial replica of its entries), which is what commit-rule bugs need.
  storm_ = Chance(1.0 / 3);
  if (storm_) {
    prof_.fresh_leader_crash = 1.0;
    prof_.commit_crash = 0.3;
    max_append = 1;
    max_inflight = 1;
  }
  // A third of the runs keep their state machines on disk and compact logs,
  // so leaders must send snapshots to followers that fell behind.
  durable_sm_ = Chance(1.0 / 3);
  prof_.compact = durable_sm_ ? 0.05 : 0;
  const bool pre_vote = Chance(0.8);
  const bool check_quorum = Chance(0.8);
  // From the seed, not the random stream, so that the rest of a seed's
  // scenario is what it was before this option existed.
  const bool thrifty = opt_.seed % 2 == 1;
  const int heartbeat = static_cast<int>(Between(1, 3));

  raftkv::v1::ConfState& conf = conf_;
  for (int i = 1; i <= opt_.nodes; ++i) conf.add_voters(i);
  nodes_.resize(opt_.nodes);
  blocked_.assign(opt_.nodes + 1, std::vector<bool>(opt_.nodes + 1, false));
  for (int i = 0; i < opt_.nodes; ++i) {
    SimNode& n = nodes_[i];
    n.id = i + 1;
    n.storage = raft::MemoryStorage(conf);
    n.config.id = n.id;
    n.config.election_ticks = kElectionTicks;
    n.config.heartbeat_ticks = heartbeat;
    n.config.max_append_bytes = max_append;
    n.config.max_inflight_appends = max_inflight;
    n.config.pre_vote = pre_vote;
    n.config.check_quorum = check_quorum;
    n.config.thrifty_replication = thrifty;
    n.config.random_seed = rng_();
    n.config.testing_bugs = opt_.bugs;
    // Most clocks run at the nominal rate; some a quarter slower or faster.
    n.tick_period = static_cast<int>(Pick(std::vector<int>{4, 4, 4, 3, 5}));
    n.tick_phase = static_cast<int>(Between(0, n.tick_period - 1));
  }
  Log("seed ", opt_.seed, " nodes=", opt_.nodes, storm_ ? " (leader storm)" : "",
      " drop=", prof_.drop, " dup=", prof_.duplicate, " delay=", prof_.long_delay,
      " crash=", prof_.crash, " leader_crash=", prof_.leader_crash, " torn=", prof_.torn_ready,
      " fresh_leader_crash=", prof_.fresh_leader_crash, " commit_crash=", prof_.commit_crash,
      " pause=", prof_.pause, " partition_gap=", prof_.mean_partition_gap,
      " max_append=", max_append, " inflight=", max_inflight, " durable_sm=", durable_sm_,
      " pre_vote=", pre_vote, " check_quorum=", check_quorum, " heartbeat=", heartbeat,
      " thrifty=", thrifty);
}

absl::Status Simulation::Send(uint64_t from, const Message& msg) {
  if (auto s = checker_.OnSend(from, msg); !s.ok()) return s;
  if (msg.has_snapshot_response()) nodes_[from - 1].snapshot_calls.erase(msg.to());
  if (msg.to() < 1 || msg.to() > nodes_.size()) {
    return absl::InternalError(
        absl::StrCat("node ", from, " sent a message to unknown node ", msg.to()));
  }
  int copies = 1;
  if (chaos_) {
    if (Chance(prof_.drop)) {
      ++result_.faults.drops;
      Lost(msg);
      return absl::OkStatus();
    }
    if (Chance(prof_.duplicate)) {
      ++result_.faults.duplicates;
      copies = 2;
    }
  }
  SimNode& to = nodes_[msg.to() - 1];
  for (int c = 0; c < copies; ++c) {
    uint64_t delay = Between(1, kStepsPerTick);
    if (chaos_ && Chance(prof_.long_delay)) {
      ++result_.faults.delays;
      delay = Between(kStepsPerTick, prof_.max_long_delay_steps);
    }
    to.inbox.push_back(InFlight{step_ + delay, order_++ ^ rng_(), msg});
    std::push_heap(to.inbox.begin(), to.inbox.end(), std::greater<>());
  }
  return absl::OkStatus();
}

void Simulation::Crash(SimNode& n, uint64_t down_steps, const char* why) {
  Log("node ", n.id, " crashes (", why, "), down for ", down_steps, " steps");
  n.node.reset();
  n.crash_at = 0;
  n.snapshot_failures.clear();
  for (uint64_t leader : n.snapshot_calls) {
    if (Up(nodes_[leader - 1])) nodes_[leader - 1].snapshot_failures.push_back(n.id);
  }
  n.snapshot_calls.clear();
  n.restart_at = step_ + down_steps;
  n.paused_until = 0;
  checker_.OnCrash(n.id, /*keep_state_machine=*/durable_sm_);
}

absl::Status Simulation::HandleReady(SimNode& n) {
  while (Up(n) && n.node->HasReady()) {
    raft::Ready rd = n.node->GetReady();
    for (const Message& m : rd.messages_send_now) {
      if (auto s = Send(n.id, m); !s.ok()) return s;
    }
    if (chaos_ && rd.MustPersist() && Chance(prof_.torn_ready)) {
      ++result_.faults.torn_readies;
      Crash(n, Between(0, 2) * Between(0, 2 * kElectionTicks * kStepsPerTick),
            "after sending, before persisting");
      return absl::OkStatus();
    }
    if (rd.snapshot.has_value()) {
      if (!durable_sm_) {
        // Leaders send snapshots only to followers behind a compacted log.
        return absl::InternalError(absl::StrCat("node ", n.id, " was handed a snapshot at index ",
                                                rd.snapshot->index(),
                                                " but no log in this run is ever compacted"));
      }
      if (auto s = checker_.OnSnapshot(n.id, *rd.snapshot); !s.ok()) return s;
      Log("node ", n.id, " installs a snapshot at index ", rd.snapshot->index());
      n.storage.ApplySnapshot(*rd.snapshot);
      n.sm_applied = rd.snapshot->index();
      ++result_.snapshots;
    }
    if (!rd.entries.empty()) {
      if (auto s = checker_.OnPersistEntries(n.id, n.storage, rd.entries); !s.ok()) return s;
      if (auto s = n.storage.Append(rd.entries); !s.ok()) {
        return absl::InternalError(
            absl::StrCat("node ", n.id, " Ready entries do not fit its log: ", s.message()));
      }
    }
    if (rd.hard_state.has_value()) {
      if (auto s = checker_.OnPersistHardState(n.id, n.storage.hard_state(), *rd.hard_state);
          !s.ok()) {
        return s;
      }
      n.storage.SetHardState(*rd.hard_state);
    }
    for (const Message& m : rd.messages_after_persist) {
      if (auto s = Send(n.id, m); !s.ok()) return s;
    }
    for (const raft::Entry& e : rd.committed_entries) {
      if (auto s = checker_.OnApply(n.id, e); !s.ok()) return s;
      n.sm_applied = e.index();
      if (final_index_ == 0 && e.data().starts_with("final-")) final_index_ = e.index();
    }
    for (const raft::ReadState& rs : rd.read_states) {
      if (auto s = checker_.OnReadState(n.id, rs, n.node->Status().commit); !s.ok()) return s;
      Log("node ", n.id, " answers read ", rs.context, " at index ", rs.index);
    }
    for (const std::string& ctx : rd.dropped_reads) {
      if (auto s = checker_.OnReadDropped(n.id, ctx); !s.ok()) return s;
    }
    n.node->Advance();
  }
  if (!Up(n)) return absl::OkStatus();
  return Observe(n);
}

absl::Status Simulation::Observe(SimNode& n) {
  if (auto s = n.node->CheckInvariants(); !s.ok()) {
    return absl::InternalError(absl::StrCat("node ", n.id, " CheckInvariants: ", s.message()));
  }
  raft::NodeStatus st = n.node->Status();
  // Drivers publish Summary() instead of Status(): the two must agree.
  const raft::NodeSummary sum = n.node->Summary();
  if (sum.role != st.role || sum.term != st.term || sum.leader != st.leader ||
      sum.commit != st.commit) {
    return absl::InternalError(absl::StrCat("node ", n.id, " Summary() (", raft::RoleName(sum.role),
                                            ", term ", sum.term, ", leader ", sum.leader,
                                            ", commit ", sum.commit, ") disagrees with Status()"));
  }
  if (opt_.verbose && (st.role != n.status.role || st.term != n.status.term)) {
    Log("node ", n.id, " is ", raft::RoleName(st.role), " in term ", st.term, " (last index ",
        st.last_index, ", commit ", st.commit, ")");
  }
  if (chaos_ && st.role == raft::Role::kLeader &&
      (n.status.role != raft::Role::kLeader || n.status.term != st.term) &&
      Chance(prof_.fresh_leader_crash)) {
    n.crash_at = step_ + Between(1, 6 * kStepsPerTick);
  }
  if (chaos_ && st.role == raft::Role::kLeader && n.status.role == raft::Role::kLeader &&
      st.commit > n.status.commit && Chance(prof_.commit_crash)) {
    n.crash_at = step_;  // at the next tick boundary
  }
  n.status = st;
  result_.committed = std::max(result_.committed, st.commit);
  return checker_.Observe(n.id, st, n.storage);
}

// A snapshot travels as one InstallSnapshot call: it ends either with the
// follower's answer reaching the leader or with the transport reporting a
// failure (request or answer lost, follower crashed while handling it).
void Simulation::Lost(const Message& msg) {
  if (msg.has_snapshot_request()) {
    SimNode& leader = nodes_[msg.from() - 1];
    if (Up(leader)) leader.snapshot_failures.push_back(msg.to());
  } else if (msg.has_snapshot_response()) {
    SimNode& leader = nodes_[msg.to() - 1];
    if (Up(leader)) leader.snapshot_failures.push_back(msg.from());
  }
}

absl::Status Simulation::Deliver(SimNode& n) {
  while (!n.inbox.empty() && n.inbox.front().deliver_at <= step_) {
    std::pop_heap(n.inbox.begin(), n.inbox.end(), std::greater<>());
    InFlight f = std::move(n.inbox.back());
    n.inbox.pop_back();
    if (Blocked(f.msg.from(), n.id)) {  // cut by a partition
      Lost(f.msg);
      continue;
    }
    if (f.msg.has_snapshot_request()) n.snapshot_calls.insert(f.msg.from());
    if (auto s = n.node->Step(f.msg); !s.ok()) {
      return absl::InternalError(absl::StrCat("node ", n.id, " rejects a message from node ",
                                              f.msg.from(), " as malformed: ", s.message(), " [",
                                              f.msg.ShortDebugString(), "]"));
    }
  }
  return absl::OkStatus();
}

SimNode* Simulation::Leader() {
  SimNode* best = nullptr;
  for (SimNode& n : nodes_) {
    if (!Running(n) || n.status.role != raft::Role::kLeader) continue;
    if (best == nullptr || n.status.term > best->status.term) best = &n;
  }
  return best;
}

absl::Status Simulation::ClientActions() {
  const double per_step = 1.0 / kStepsPerTick;
  // A client finds the leader most of the time, and sometimes asks a stale or
  // random node (which must refuse, or take the request as a stale leader).
  auto target = [&]() -> SimNode* {
    SimNode* l = Leader();
    if (l == nullptr || Chance(0.2)) l = &nodes_[Between(0, nodes_.size() - 1)];
    return Running(*l) ? l : nullptr;
  };
  if (Chance(prof_.propose * per_step)) {
    if (SimNode* n = target()) {
      std::string v = absl::StrCat("v", next_value_++);
      checker_.OnPropose(v);
      raft::ProposeResult r = n->node->Propose(v);
      if (r.outcome == raft::ProposeOutcome::kAccepted) {
        Log("node ", n->id, " accepts ", v, " at index ", r.index, " term ", r.term);
      }
      if (auto s = HandleReady(*n); !s.ok()) return s;
    }
  }
  if (Chance(prof_.read * per_step)) {
    if (SimNode* n = target()) {
      std::string ctx = absl::StrCat("r", next_read_++);
      // Registered before the call: the check needs the commit known now.
      checker_.OnReadIssued(n->id, ctx);
      if (n->node->ReadIndex(ctx) == raft::ProposeOutcome::kAccepted) {
        Log("node ", n->id, " takes read ", ctx);
      } else {
        if (auto s = checker_.OnReadDropped(n->id, ctx); !s.ok()) return s;
      }
      if (auto s = HandleReady(*n); !s.ok()) return s;
    }
  }
  if (chaos_ && Chance(prof_.transfer * per_step)) {
    if (SimNode* l = Leader(); l != nullptr && nodes_.size() > 1) {
      uint64_t to = Between(1, nodes_.size() - 1);
      if (to >= l->id) ++to;
      Log("node ", l->id, " transfers leadership to ", to);
      ++result_.transfers;
      (void)l->node->TransferLeadership(to);  // may refuse (already transferring)
      if (auto s = HandleReady(*l); !s.ok()) return s;
    }
  }
  // Mid-tick the leader announces its commit index, as raftd's driver does
  // once commits stand still (it sends something only with thrifty
  // replication, which leaves commits unannounced). No randomness is drawn
  // here, so seeds without thrifty replication keep their scenarios.
  if (step_ % kStepsPerTick == kStepsPerTick / 2) {
    if (SimNode* l = Leader(); l != nullptr && Running(*l)) {
      l->node->AnnounceCommit();
      if (auto s = HandleReady(*l); !s.ok()) return s;
    }
  }
  if (live_) {
    // Liveness phase: each leader (term) gets one fresh proposal.
    SimNode* l = Leader();
    if (l != nullptr && final_proposed_.insert({l->id, l->status.term}).second) {
      std::string v = absl::StrCat("final-", l->id, "-", l->status.term);
      checker_.OnPropose(v);
      raft::ProposeResult r = l->node->Propose(v);
      Log("node ", l->id, " takes fresh proposal ", v, ": ",
          r.outcome == raft::ProposeOutcome::kAccepted ? "accepted" : "refused");
      if (r.outcome != raft::ProposeOutcome::kAccepted)
        final_proposed_.erase({l->id, l->status.term});
      if (auto s = HandleReady(*l); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

void Simulation::NewPartition() {
  const uint64_t n = nodes_.size();
  for (auto& row : blocked_) std::fill(row.begin(), row.end(), false);
  auto cut = [&](uint64_t a, uint64_t b) { blocked_[a][b] = true; };
  auto isolate = [&](uint64_t x) {
    for (uint64_t y = 1; y <= n; ++y) {
      if (y != x) {
        cut(x, y);
        cut(y, x);
      }
    }
  };
  SimNode* leader = Leader();
  const uint64_t victim = Between(1, n);
  switch (Between(0, 6)) {
    case 0:
      Log("partition: node ", victim, " isolated");
      isolate(victim);
      break;
    case 1: {
      const uint64_t x = leader != nullptr ? leader->id : victim;
      Log("partition: leader ", x, " isolated");
      isolate(x);
      break;
    }
    case 2: {
      // Two sides, symmetric; either side may be the majority.
      std::vector<int> side(n + 1);
      for (uint64_t i = 1; i <= n; ++i) side[i] = static_cast<int>(Between(0, 1));
      std::string desc;
      for (uint64_t a = 1; a <= n; ++a) {
        absl::StrAppend(&desc, side[a] ? "B" : "A");
        for (uint64_t b = 1; b <= n; ++b) {
          if (side[a] != side[b]) cut(a, b);
        }
      }
      Log("partition: split ", desc);
      break;
    }
    case 3:
      Log("partition: node ", victim, " deaf (sends, receives nothing)");
      for (uint64_t y = 1; y <= n; ++y) {
        if (y != victim) cut(y, victim);
      }
      break;
    case 4:
      Log("partition: node ", victim, " mute (receives, sends nothing)");
      for (uint64_t y = 1; y <= n; ++y) {
        if (y != victim) cut(victim, y);
      }
      break;
    case 5:
      Log("partition: random one-way cuts");
      for (uint64_t a = 1; a <= n; ++a) {
        for (uint64_t b = 1; b <= n; ++b) {
          if (a != b && Chance(0.3)) cut(a, b);
        }
      }
      break;
    default: {
      // Two halves that only `victim` connects: it sees everyone, the halves
      // see only it and themselves.
      Log("partition: node ", victim, " bridges two halves");
      std::vector<int> side(n + 1);
      for (uint64_t i = 1; i <= n; ++i) side[i] = static_cast<int>(i % 2);
      for (uint64_t a = 1; a <= n; ++a) {
        for (uint64_t b = 1; b <= n; ++b) {
          if (a != victim && b != victim && side[a] != side[b]) cut(a, b);
        }
      }
      break;
    }
  }
  ++result_.faults.partitions;
  partitioned_ = true;
}

void Simulation::InjectFaults() {
  const bool tick_boundary = step_ % kStepsPerTick == 0;
  if (!tick_boundary) return;
  if (prof_.mean_partition_gap > 0 && step_ >= next_partition_change_) {
    if (partitioned_) {
      Log("partition healed");
      for (auto& row : blocked_) std::fill(row.begin(), row.end(), false);
      partitioned_ = false;
    } else {
      NewPartition();
    }
    next_partition_change_ =
        step_ +
        Between(prof_.mean_partition_gap / 2, prof_.mean_partition_gap * 3 / 2) * kStepsPerTick;
  }
  const uint64_t max_down = 3 * kElectionTicks * kStepsPerTick;
  for (SimNode& n : nodes_) {
    if (!Up(n)) continue;
    if (n.sm_applied >= n.storage.FirstIndex() && Chance(prof_.compact)) {
      // Only what the durable state machine holds may leave the log.
      const uint64_t to = Between(n.storage.FirstIndex(), n.sm_applied);
      if (auto s = n.storage.Compact(to, conf_); !s.ok()) {
        compaction_error_ = absl::InternalError(
            absl::StrCat("node ", n.id, " cannot compact to ", to, ": ", s.message()));
      }
    }
    if (n.crash_at != 0 && n.crash_at <= step_) {
      ++result_.faults.crashes;
      Crash(n, Chance(0.3) ? 0 : Between(1, 2 * max_down), "leader, scheduled");
    } else if (Chance(prof_.crash)) {
      ++result_.faults.crashes;
      // Often back at once (a quick reboot), sometimes down for a while.
      Crash(n, Chance(0.4) ? 0 : Between(1, max_down), "random");
    } else if (n.paused_until <= step_ && Chance(prof_.pause)) {
      ++result_.faults.pauses;
      n.paused_until = step_ + Between(1, 4) * kElectionTicks * kStepsPerTick / 2;
      Log("node ", n.id, " pauses until step ", n.paused_until);
    }
  }
  if (Chance(prof_.leader_crash)) {
    if (SimNode* l = Leader()) {
      ++result_.faults.crashes;
      Crash(*l, Chance(0.3) ? 0 : Between(1, max_down), "leader");
    }
  }
}

void Simulation::Heal() {
  Log("all faults healed");
  chaos_ = false;
  for (auto& row : blocked_) std::fill(row.begin(), row.end(), false);
  partitioned_ = false;
  for (SimNode& n : nodes_) {
    n.paused_until = 0;
    n.crash_at = 0;
    if (!Up(n)) n.restart_at = step_;
  }
}

absl::Status Simulation::RunStep() {
  // Visit nodes in a fresh random order each step.
  std::vector<size_t> order(nodes_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng_);
  for (size_t i : order) {
    SimNode& n = nodes_[i];
    if (!Up(n)) {
      // Messages that arrive while a node is down are lost.
      while (!n.inbox.empty() && n.inbox.front().deliver_at <= step_) {
        std::pop_heap(n.inbox.begin(), n.inbox.end(), std::greater<>());
        Lost(n.inbox.back().msg);
        n.inbox.pop_back();
      }
      if (n.restart_at > step_) continue;
      Log("node ", n.id, " restarts");
      if (auto s = StartNode(n); !s.ok()) return s;
    }
    if (!Running(n)) continue;  // paused: messages wait in its inbox
    for (uint64_t peer : n.snapshot_failures) n.node->ReportSnapshotFailure(peer);
    n.snapshot_failures.clear();
    if (auto s = Deliver(n); !s.ok()) return s;
    if (static_cast<int>(step_ % n.tick_period) == n.tick_phase) n.node->Tick();
    if (auto s = HandleReady(n); !s.ok()) return s;
  }
  if (auto s = ClientActions(); !s.ok()) return s;
  if (chaos_) InjectFaults();
  return compaction_error_;
}

SimResult Simulation::Run() {
  Setup();
  auto finish = [&](absl::Status s) {
    if (s.ok() && !checker_.first_violation().ok()) s = checker_.first_violation();
    result_.status = s;
    result_.ticks = step_ / kStepsPerTick;
    result_.leaders = checker_.leaders_seen();
    result_.reads_answered = checker_.reads_answered();
    if (!s.ok()) Log("FAILED: ", s.message());
    return result_;
  };
  for (SimNode& n : nodes_) {
    if (auto s = StartNode(n); !s.ok()) return finish(s);
  }
  const uint64_t chaos_steps = static_cast<uint64_t>(opt_.chaos_ticks) * kStepsPerTick;
  const uint64_t end_steps =
      chaos_steps + static_cast<uint64_t>(opt_.liveness_ticks) * kStepsPerTick;
  for (step_ = 1; step_ <= end_steps; ++step_) {
    if (step_ == chaos_steps) {
      Heal();
      live_ = true;
    }
    if (auto s = RunStep(); !s.ok()) return finish(s);
    if (live_) {
      bool all = final_index_ != 0;
      for (const SimNode& n : nodes_) {
        all = all && Up(n) && checker_.applied_on(n.id) >= final_index_;
      }
      if (all) {
        result_.liveness_ticks_used = static_cast<int>((step_ - chaos_steps) / kStepsPerTick);
        Log("liveness: fresh entry ", final_index_, " applied on all nodes after ",
            result_.liveness_ticks_used, " ticks");
        return finish(absl::OkStatus());
      }
    }
  }
  if (opt_.verbose) {
    for (const SimNode& n : nodes_) {
      if (!Up(n)) continue;
      raft::NodeStatus st = n.node->Status();
      Log("node ", n.id, ": ", raft::RoleName(st.role), " term ", st.term, " commit ", st.commit,
          " applied ", checker_.applied_on(n.id), " log [", n.storage.FirstIndex(), ", ",
          n.storage.LastIndex(), "]");
      for (const auto& [id, p] : st.peers) {
        Log("  peer ", id, ": ", raft::ProgressStateName(p.state), " match ", p.match, " next ",
            p.next, " inflight ", p.inflight, " ticks since contact ", p.ticks_since_contact);
      }
    }
  }
  return finish(absl::DeadlineExceededError(
      absl::StrCat("liveness: no fresh proposal was applied on all ", nodes_.size(),
                   " nodes within ", opt_.liveness_ticks, " ticks after all faults healed")));
}

}  // namespace

FaultCounts& FaultCounts::operator+=(const FaultCounts& o) {
  drops += o.drops;
  duplicates += o.duplicates;
  delays += o.delays;
  partitions += o.partitions;
  crashes += o.crashes;
  torn_readies += o.torn_readies;
  pauses += o.pauses;
  return *this;
}

SimResult RunSimulation(const SimOptions& options) { return Simulation(options).Run(); }

std::vector<std::string> BugNames() {
  return {"commit_previous_term_by_counting", "vote_before_persist", "skip_log_consistency_check"};
}

absl::StatusOr<raft::TestingBugs> ParseBug(std::string_view name) {
  raft::TestingBugs bugs;
  if (name.empty() || name == "none") return bugs;
  if (name == "commit_previous_term_by_counting") {
    bugs.commit_previous_term_by_counting = true;
  } else if (name == "vote_before_persist") {
    bugs.vote_before_persist = true;
  } else if (name == "skip_log_consistency_check") {
    bugs.skip_log_consistency_check = true;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown --bug '", absl::string_view(name.data(), name.size()),
                     "'; known: none, commit_previous_term_by_counting, "
                     "vote_before_persist, skip_log_consistency_check"));
  }
  return bugs;
}

std::string ReplayCommand(const SimOptions& o) {
  std::string cmd = absl::StrCat("raft_sim --seed=", o.seed, " --nodes=", o.nodes);
  if (!o.bug_name.empty()) absl::StrAppend(&cmd, " --bug=", o.bug_name);
  if (o.chaos_ticks != BatchOptions().chaos_ticks) {
    absl::StrAppend(&cmd, " --chaos_ticks=", o.chaos_ticks);
  }
  if (o.liveness_ticks != BatchOptions().liveness_ticks) {
    absl::StrAppend(&cmd, " --liveness_ticks=", o.liveness_ticks);
  }
  absl::StrAppend(&cmd, " --verbose");
  return cmd;
}

int NodesForSeed(int nodes_option, uint64_t seed) {
  if (nodes_option != 0) return nodes_option;
  static constexpr int kMix[] = {3, 5, 7};
  return kMix[seed % 3];
}

std::string BatchResult::Summary() const {
  return absl::StrFormat("%d seeds, %d failures, %d faults injected, %.1fs", seeds_run, failures,
                         faults.Total(), seconds);
}

absl::StatusOr<BatchResult> RunBatch(const BatchOptions& options, std::ostream* out) {
  auto bugs = ParseBug(options.bug_name);
  if (!bugs.ok()) return bugs.status();
  if (options.nodes < 0 || options.nodes > 15) {
    return absl::InvalidArgumentError(
        absl::StrCat("--nodes must be 3, 5, 7 (or 1..15), or mixed; got ", options.nodes));
  }
  if (options.threads < 1) return absl::InvalidArgumentError("--threads must be >= 1");
  const auto started = std::chrono::steady_clock::now();

  // Shared by the worker threads; each seed's simulation itself shares nothing.
  struct Shared {
    absl::Mutex mu;
    uint64_t next ABSL_GUARDED_BY(mu) = 0;  // next seed offset to hand out
    bool stop ABSL_GUARDED_BY(mu) = false;
    BatchResult total ABSL_GUARDED_BY(mu);
    // seed -> message, so failures are reported in seed order.
    std::map<uint64_t, std::string> failures ABSL_GUARDED_BY(mu);
  } shared;
  auto worker = [&]() {
    for (;;) {
      uint64_t i;
      {
        absl::MutexLock lock(&shared.mu);
        if (shared.stop || shared.next >= options.seeds) return;
        i = shared.next++;
      }
      SimOptions so;
      so.seed = options.start + i;
      so.nodes = NodesForSeed(options.nodes, so.seed);
      so.bugs = *bugs;
      so.bug_name = options.bug_name;
      so.chaos_ticks = options.chaos_ticks;
      so.liveness_ticks = options.liveness_ticks;
      SimResult r = RunSimulation(so);
      absl::MutexLock lock(&shared.mu);
      BatchResult& total = shared.total;
      ++total.seeds_run;
      total.faults += r.faults;
      total.snapshots += r.snapshots;
      total.max_liveness_ticks = std::max(total.max_liveness_ticks, r.liveness_ticks_used);
      if (!r.status.ok()) {
        ++total.failures;
        shared.failures[so.seed] = std::string(r.status.message());
        if (out != nullptr) {
          *out << "FAIL seed " << so.seed << " (" << so.nodes << " nodes): " << r.status.message()
               << "\n  replay: " << ReplayCommand(so) << std::endl;
        }
        if (options.stop_at_first_failure) shared.stop = true;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 1; t < options.threads; ++t) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
  absl::MutexLock lock(&shared.mu);
  BatchResult total = shared.total;
  for (const auto& [seed, msg] : shared.failures) {
    total.failing_seeds.push_back(seed);
    total.failure_messages.push_back(msg);
  }
  total.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return total;
}

}  // namespace raftkv::sim
