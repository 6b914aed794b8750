// Named hazard scenarios, replayed step by step on a scripted network
// (TestCluster). Each test names the rule of the Raft paper (§) or of
// Ongaro's thesis (thesis §) it checks, and ends by asserting that the
// SafetyChecker watching every step saw no violation.
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <string>

#include "tests/sim/test_cluster.h"

namespace raftkv::sim {
namespace {

using raft::Message;
using raft::ProposeOutcome;
using raft::Role;

constexpr int kElection = 10;

uint64_t TermAt(const TestCluster& c, uint64_t id, uint64_t index) {
  auto t = c.storage(id).Term(index);
  return t.ok() ? *t : 0;
}

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

bool Answered(const TestCluster& c, uint64_t id, const std::string& ctx) {
  for (const raft::ReadState& rs : c.read_states(id)) {
    if (rs.context == ctx) return true;
  }
  return false;
}

bool HasApplied(const TestCluster& c, uint64_t id, const std::string& data) {
  for (const raft::Entry& e : c.applied(id)) {
    if (e.data() == data) return true;
  }
  return false;
}

bool AppendCarriesBeyond(const Message& m, uint64_t index) {
  if (!m.has_append_request()) return false;
  for (const raft::Entry& e : m.append_request().entries()) {
    if (e.index() > index) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------
// Figure 8 (§5.4.2): "Raft never commits log entries from previous terms by
// counting replicas." Five servers S1..S5; the script follows the figure.
// Elections are scripted, so PreVote and CheckQuorum are off, and entries
// travel one per AppendEntries so that a follower can hold the old entry
// without the new leader's own.

struct Figure8 {
  uint64_t term_a = 0, term_b = 0, term_c = 0;
  uint64_t s1_commit_after_c = 0;  // S1's commit once (2, A) sits on a majority
};

raft::TestingBugs NoBugs() { return {}; }

std::function<void(raft::Config&)> Figure8Config(raft::TestingBugs bugs) {
  return [bugs](raft::Config& cfg) {
    cfg.election_ticks = kElection;
    cfg.pre_vote = false;
    cfg.check_quorum = false;
    cfg.max_append_bytes = 1;
    cfg.max_inflight_appends = 1;
    cfg.testing_bugs = bugs;
  };
}

// Plays (a)-(c): S1's term-A entry at index 2 ends up on S1, S2, S3 while
// S5 holds a term-B entry at index 2 and S1 leads term C.
void PlayFigure8UpToC(TestCluster& c, Figure8* f) {
  // (a) S1 is leader of term A and replicates the entry at index 2 to S2 only.
  ASSERT_TRUE(c.Campaign(1));
  f->term_a = c.Status(1).term;
  ASSERT_GE(c.TickUntil(
                {1}, [&] { return c.Status(5).commit >= 1; }, 5),
            0)
      << "the no-op of term A should commit everywhere";
  c.SetFilter([](const Message& m) { return m.from() != 1 || m.to() == 2; });
  ASSERT_EQ(c.Propose(1, "x@A").outcome, ProposeOutcome::kAccepted);
  c.Stabilize();
  ASSERT_EQ(TermAt(c, 2, 2), f->term_a);
  ASSERT_EQ(c.storage(3).LastIndex(), 1u);

  // (b) S1 crashes; S5 is elected for term B by S3, S4 and itself, and puts a
  // different entry (its no-op) at index 2, which reaches no one.
  c.Crash(1);
  c.SetFilter([](const Message& m) { return !(m.from() == 5 && m.has_append_request()); });
  ASSERT_TRUE(c.Campaign(5));
  f->term_b = c.Status(5).term;
  ASSERT_GT(f->term_b, f->term_a);
  ASSERT_EQ(TermAt(c, 5, 2), f->term_b);
  c.Crash(5);

  // (c) S5 crashes; S1 restarts, is elected for term C, and replicates its
  // term-A entry at index 2 to S3, but its own term-C no-op at index 3 does
  // not reach a majority. (S2 takes the no-op too: with one entry per
  // append, that acknowledgement is how S1 learns S2 holds index 2. Two
  // replicas of five are still a minority.) S3 gets S1's appends only when
  // they stop at index 2 or when it will refuse them (they start past its log).
  c.Restart(1);
  c.SetFilter([&c](const Message& m) {
    if (m.from() != 1 || !m.has_append_request()) return true;
    if (m.to() == 2) return true;
    if (m.to() != 3) return false;
    return !AppendCarriesBeyond(m, 2) ||
           m.append_request().prev_log_index() > c.storage(3).LastIndex();
  });
  ASSERT_TRUE(c.Campaign(1));
  f->term_c = c.Status(1).term;
  ASSERT_GT(f->term_c, f->term_b);
  ASSERT_EQ(TermAt(c, 1, 3), f->term_c);
  // Heartbeats drive the probing until S1 knows S2 and S3 hold index 2.
  ASSERT_GE(c.TickUntil(
                {1},
                [&] {
                  auto st = c.Status(1);
                  return st.peers[2].match >= 2 && st.peers[3].match >= 2;
                },
                20),
            0);
  ASSERT_EQ(TermAt(c, 3, 2), f->term_a);
  ASSERT_EQ(c.storage(3).LastIndex(), 2u);
  f->s1_commit_after_c = c.Status(1).commit;
}

// (d) S1 crashes; S5 restarts and is elected by S3 and S4, whose last entry
// (2, A) is older than S5's (2, B), and it overwrites index 2 everywhere.
// Returns whether S2..S5 then commit through index 3 within 30 ticks.
bool PlayFigure8D(TestCluster& c) {
  c.Crash(1);
  c.SetFilter(nullptr);
  c.Restart(5);
  if (!c.Campaign(5)) {
    ADD_FAILURE() << "S5 was not elected";
    return false;
  }
  return c.TickUntil(
             {5},
             [&] {
               if (!c.Violation().ok()) return true;  // no point going on
               for (uint64_t id = 2; id <= 5; ++id) {
                 if (c.Status(id).commit < 3) return false;
               }
               return true;
             },
             30) >= 0;
}

TEST(Figure8, PreviousTermEntryOnAMajorityIsNotCommittedByCounting) {
  TestCluster c(5, Figure8Config(NoBugs()));
  Figure8 f;
  PlayFigure8UpToC(c, &f);
  if (HasFailure()) return;
  // (c): (2, A) is on S1, S2, S3 — a majority — yet it is not committed.
  EXPECT_EQ(f.s1_commit_after_c, 1u) << "§5.4.2: S1 committed index 2 of term " << f.term_a
                                     << " by counting replicas in term " << f.term_c;
  for (uint64_t id = 1; id <= 5; ++id) EXPECT_FALSE(HasApplied(c, id, "x@A")) << "S" << id;

  ASSERT_TRUE(PlayFigure8D(c));
  // (d) is legal precisely because (2, A) was never committed: index 2 now
  // holds S5's term-B entry everywhere, and no one ever applied (2, A).
  for (uint64_t id = 2; id <= 5; ++id) EXPECT_EQ(TermAt(c, id, 2), f.term_b) << "S" << id;
  c.Restart(1);
  ASSERT_GE(c.TickUntil(
                {5}, [&] { return c.Status(1).commit >= 3; }, 30),
            0);
  EXPECT_EQ(TermAt(c, 1, 2), f.term_b);
  for (uint64_t id = 1; id <= 5; ++id) EXPECT_FALSE(HasApplied(c, id, "x@A")) << "S" << id;
  EXPECT_TRUE(c.Violation().ok()) << c.Violation();
}

TEST(Figure8, CurrentTermEntryOnAMajorityCommitsTheOldOneAndBlocksS5) {
  TestCluster c(5, Figure8Config(NoBugs()));
  Figure8 f;
  PlayFigure8UpToC(c, &f);
  if (HasFailure()) return;
  // (e): S1 replicates its term-C entry to S2 and S3 before crashing. Index 3
  // (term C) is on a majority and commits, and with it index 2 (§5.4.2).
  c.SetFilter([](const Message& m) {
    return !(m.from() == 1 && m.has_append_request() && m.to() != 2 && m.to() != 3);
  });
  ASSERT_GE(c.TickUntil(
                {1}, [&] { return c.Status(1).commit >= 3; }, 20),
            0);
  EXPECT_TRUE(HasApplied(c, 1, "x@A"));
  c.Crash(1);
  c.SetFilter(nullptr);
  // S5 can no longer win: S2 and S3 hold a term-C entry, newer than its last.
  c.Restart(5);
  EXPECT_FALSE(c.Campaign(5, 6 * kElection));
  // Whoever wins next keeps (2, A): it is committed.
  ASSERT_GE(c.TickUntil(
                {2, 3, 4, 5}, [&] { return c.Leader() != 0; }, 10 * kElection),
            0);
  const uint64_t leader = c.Leader();
  EXPECT_TRUE(leader == 2 || leader == 3) << "leader S" << leader;
  ASSERT_GE(c.TickUntil(
                {2, 3, 4, 5}, [&] { return c.Status(5).commit >= 3; }, 30),
            0);
  for (uint64_t id = 2; id <= 5; ++id) {
    EXPECT_EQ(TermAt(c, id, 2), f.term_a) << "S" << id;
    EXPECT_TRUE(HasApplied(c, id, "x@A")) << "S" << id;
  }
  EXPECT_TRUE(c.Violation().ok()) << c.Violation();
}

// The same script against a core that commits by counting: the checker must
// flag it. This shows the scenario really exercises the rule.
TEST(Figure8, CoreThatCommitsByCountingIsCaught) {
  raft::TestingBugs bugs;
  bugs.commit_previous_term_by_counting = true;
  TestCluster c(5, Figure8Config(bugs));
  Figure8 f;
  PlayFigure8UpToC(c, &f);
  if (HasFailure()) return;
  EXPECT_EQ(f.s1_commit_after_c, 2u);
  EXPECT_TRUE(HasApplied(c, 1, "x@A"));
  PlayFigure8D(c);  // the checker objects as soon as S5 is elected
  const absl::Status v = c.Violation();
  ASSERT_FALSE(v.ok()) << "S5 overwrote an applied entry and nothing noticed";
  EXPECT_NE(v.message().find("leader completeness"), std::string::npos) << v;
}

// ---------------------------------------------------------------------------
// PreVote (thesis §9.6): a server cut off from the cluster cannot win
// pre-votes, so its term does not grow; when it rejoins it does not depose a
// healthy leader.

std::function<void(raft::Config&)> Config(bool pre_vote, bool check_quorum) {
  return [=](raft::Config& cfg) {
    cfg.election_ticks = kElection;
    cfg.heartbeat_ticks = 1;
    cfg.pre_vote = pre_vote;
    cfg.check_quorum = check_quorum;
  };
}

TEST(PreVoteHazard, PartitionedNodeRejoiningDoesNotDeposeTheLeader) {
  TestCluster c(3, Config(/*pre_vote=*/true, /*check_quorum=*/true));
  ASSERT_TRUE(c.Campaign(1));
  const uint64_t term = c.Status(1).term;
  ASSERT_EQ(c.Propose(1, "a").outcome, ProposeOutcome::kAccepted);
  c.Stabilize();

  c.Isolate(3);
  bool s3_campaigned = false;
  bool leader_held = true;
  c.TickUntil(
      c.All(),
      [&] {
        s3_campaigned |= c.Status(3).role == Role::kPreCandidate;
        leader_held &= c.Status(1).role == Role::kLeader && c.Status(1).term == term;
        return false;
      },
      10 * kElection);
  EXPECT_TRUE(s3_campaigned) << "S3 should have tried to campaign while cut off";
  EXPECT_EQ(c.Status(3).term, term) << "a failed pre-vote must not advance S3's term";
  EXPECT_TRUE(leader_held);

  c.HealAll();
  ASSERT_GE(c.TickUntil(
                c.All(),
                [&] {
                  leader_held &= c.Status(1).role == Role::kLeader && c.Status(1).term == term;
                  return c.Status(3).leader == 1;
                },
                3 * kElection),
            0);
  EXPECT_TRUE(leader_held) << "S1 lost leadership when S3 rejoined";
  for (uint64_t id = 1; id <= 3; ++id) EXPECT_EQ(c.Status(id).term, term) << "S" << id;
  ASSERT_EQ(c.Propose(1, "b").outcome, ProposeOutcome::kAccepted);
  ASSERT_GE(c.TickUntil(
                c.All(), [&] { return HasApplied(c, 3, "b"); }, 10),
            0);
  EXPECT_TRUE(c.Violation().ok()) << c.Violation();
}

// The hazard PreVote removes: without it, the isolated server's term climbs,
// and when it rejoins its vote requests force the healthy leader to step down.
TEST(PreVoteHazard, WithoutPreVoteTheRejoiningNodeDisruptsTheLeader) {
  TestCluster c(3, Config(/*pre_vote=*/false, /*check_quorum=*/false));
  ASSERT_TRUE(c.Campaign(1));
  const uint64_t term = c.Status(1).term;
  c.Isolate(3);
  c.TickUntil(
      c.All(), [] { return false; }, 10 * kElection);
  EXPECT_GT(c.Status(3).term, term + 2);
  c.HealAll();
  ASSERT_GE(c.TickUntil(
                c.All(), [&] { return c.Status(1).term > term; }, 3 * kElection),
            0);
  EXPECT_TRUE(c.Violation().ok()) << c.Violation();
}

// ---------------------------------------------------------------------------
// CheckQuorum (thesis §6.2): a leader that hears from no quorum for a whole
// election timeout steps down. The core (like etcd) checks once per election
// timeout whether a quorum was active since the previous check, so a leader
// cut off just after a check steps down at the second one: after one to two
// election timeouts.

TEST(CheckQuorumHazard, LeaderCutOffFromTheMajorityStepsDown) {
  TestCluster c(3, Config(/*pre_vote=*/true, /*check_quorum=*/true));
  ASSERT_TRUE(c.Campaign(1));
  const uint64_t term = c.Status(1).term;
  c.Isolate(1);
  // What it accepts while cut off can never commit.
  ASSERT_EQ(c.Propose(1, "lost").outcome, ProposeOutcome::kAccepted);
  const int ticks = c.TickUntil(
      {1}, [&] { return c.Status(1).role != Role::kLeader; }, 3 * kElection);
  ASSERT_GE(ticks, 0) << "the isolated leader never stepped down";
  std::cout << "the cut-off leader stepped down after " << ticks << " ticks\n";
  // Not before a whole election timeout without a quorum (that would cause
  // needless elections), and not after two.
  EXPECT_GE(ticks, kElection);
  EXPECT_LE(ticks, 2 * kElection);
  EXPECT_EQ(c.Status(1).role, Role::kFollower);
  EXPECT_FALSE(HasApplied(c, 1, "lost"));

  // The majority elects a new leader; after healing S1 follows it and its
  // uncommitted entry is replaced.
  ASSERT_GE(c.TickUntil(
                {2, 3}, [&] { return c.Leader() == 2 || c.Leader() == 3; }, 5 * kElection),
            0);
  const uint64_t leader = c.Leader();
  EXPECT_GT(c.Status(leader).term, term);
  c.HealAll();
  ASSERT_EQ(c.Propose(leader, "kept").outcome, ProposeOutcome::kAccepted);
  ASSERT_GE(c.TickUntil(
                c.All(), [&] { return HasApplied(c, 1, "kept"); }, 3 * kElection),
            0);
  for (uint64_t id = 1; id <= 3; ++id) EXPECT_FALSE(HasApplied(c, id, "lost")) << "S" << id;
  EXPECT_TRUE(c.Violation().ok()) << c.Violation();
}

// ---------------------------------------------------------------------------
// ReadIndex (thesis §6.4): a read is served only after a quorum confirmed
// leadership in a heartbeat round sent after the read arrived. A leader cut
// off from the majority can never confirm, so its read is never answered;
// when it learns it lost leadership, the read is handed back as dropped.

void CommitOne(TestCluster& c, uint64_t leader, const std::string& v) {
  ASSERT_EQ(c.Propose(leader, v).outcome, ProposeOutcome::kAccepted);
  ASSERT_GE(c.TickUntil(
                c.All(),
                [&] {
                  for (uint64_t id : c.All()) {
                    if (!HasApplied(c, id, v)) return false;
                  }
                  return true;
                },
                10),
            0);
}

TEST(StaleReadHazard, HealthyLeaderAnswersAtItsCommitIndex) {
  TestCluster c(3, Config(true, true));
  ASSERT_TRUE(c.Campaign(1));
  CommitOne(c, 1, "a");
  const uint64_t commit = c.Status(1).commit;
  ASSERT_EQ(c.ReadIndex(1, "fresh"), ProposeOutcome::kAccepted);
  ASSERT_GE(c.TickUntil(
                {1}, [&] { return Answered(c, 1, "fresh"); }, 5),
            0);
  EXPECT_GE(c.read_states(1).front().index, commit);
  EXPECT_TRUE(c.Violation().ok()) << c.Violation();
}

TEST(StaleReadHazard, StaleLeaderNeverAnswersAndDropsTheReadWhenItStepsDown) {
  TestCluster c(3, Config(/*pre_vote=*/true, /*check_quorum=*/true));
  ASSERT_TRUE(c.Campaign(1));
  CommitOne(c, 1, "a");
  c.Isolate(1);
  ASSERT_EQ(c.ReadIndex(1, "stale"), ProposeOutcome::kAccepted);
  // The majority moves on and commits a newer write.
  ASSERT_GE(c.TickUntil(
                c.All(), [&] { return c.Leader() == 2 || c.Leader() == 3; }, 5 * kElection),
            0);
  ASSERT_EQ(c.Propose(c.Leader(), "newer").outcome, ProposeOutcome::kAccepted);
  ASSERT_GE(c.TickUntil(
                c.All(), [&] { return c.Status(1).role != Role::kLeader; }, 3 * kElection),
            0);
  EXPECT_FALSE(Answered(c, 1, "stale"));
  EXPECT_TRUE(Contains(c.dropped_reads(1), "stale"));
  c.HealAll();
  c.TickUntil(
      c.All(), [] { return false; }, 3 * kElection);
  for (uint64_t id = 1; id <= 3; ++id) EXPECT_FALSE(Answered(c, id, "stale")) << "S" << id;
  EXPECT_TRUE(c.Violation().ok()) << c.Violation();
}

// Without CheckQuorum the cut-off leader keeps believing it leads; the read
// still waits, unanswered, until the leader hears of the new term.
TEST(StaleReadHazard, StaleLeaderWithoutCheckQuorumHoldsTheReadUntilItLearnsTheNewTerm) {
  TestCluster c(3, Config(/*pre_vote=*/false, /*check_quorum=*/false));
  ASSERT_TRUE(c.Campaign(1));
  CommitOne(c, 1, "a");
  c.Isolate(1);
  ASSERT_EQ(c.ReadIndex(1, "stale"), ProposeOutcome::kAccepted);
  c.TickUntil(
      c.All(), [] { return false; }, 5 * kElection);
  EXPECT_EQ(c.Status(1).role, Role::kLeader) << "without CheckQuorum it cannot know";
  const uint64_t new_leader = c.Leader() == 1 ? 0 : c.Leader();
  ASSERT_NE(new_leader, 0u);
  EXPECT_FALSE(Answered(c, 1, "stale"));
  c.HealAll();
  ASSERT_GE(c.TickUntil(
                c.All(), [&] { return c.Status(1).role == Role::kFollower; }, 2 * kElection),
            0);
  EXPECT_FALSE(Answered(c, 1, "stale"));
  EXPECT_TRUE(Contains(c.dropped_reads(1), "stale"));
  EXPECT_TRUE(c.Violation().ok()) << c.Violation();
}

// Acknowledgements of a heartbeat sent before the read arrived prove nothing
// about leadership after it: they must not confirm the read.
TEST(StaleReadHazard, AcksOfAnEarlierRoundDoNotConfirmARead) {
  TestCluster c(3, Config(/*pre_vote=*/true, /*check_quorum=*/true));
  ASSERT_TRUE(c.Campaign(1));
  CommitOne(c, 1, "a");
  // A heartbeat round leaves; the followers answer; the answers are in flight.
  c.Tick(1);
  ASSERT_EQ(c.DeliverIf([](const Message& m) { return m.from() == 1; }), 2);
  ASSERT_EQ(c.in_flight().size(), 2u);
  // Now the read arrives. Its own heartbeat round is lost; only the answers
  // to the earlier round reach S1.
  ASSERT_EQ(c.ReadIndex(1, "late"), ProposeOutcome::kAccepted);
  c.DropIf([](const Message& m) { return m.from() == 1; });
  ASSERT_EQ(c.DeliverIf([](const Message& m) { return m.to() == 1; }), 2);
  EXPECT_FALSE(Answered(c, 1, "late"));
  c.Isolate(1);
  ASSERT_GE(c.TickUntil(
                {1}, [&] { return c.Status(1).role != Role::kLeader; }, 3 * kElection),
            0);
  EXPECT_FALSE(Answered(c, 1, "late"));
  EXPECT_TRUE(Contains(c.dropped_reads(1), "late"));
  EXPECT_TRUE(c.Violation().ok()) << c.Violation();
}

// ---------------------------------------------------------------------------
// Leadership transfer (thesis §3.10): the leader brings the target up to
// date, then sends TimeoutNow; the target campaigns at once, in the next
// term, and wins. Proposals are refused meanwhile.

TEST(TransferScenario, LaggingTargetIsCaughtUpThenTakesOver) {
  TestCluster c(3, Config(/*pre_vote=*/true, /*check_quorum=*/true));
  ASSERT_TRUE(c.Campaign(1));
  const uint64_t term = c.Status(1).term;
  c.Cut(1, 3);
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(c.Propose(1, "w" + std::to_string(i)).outcome, ProposeOutcome::kAccepted);
  }
  c.Stabilize();
  const uint64_t last = c.Status(1).last_index;
  ASSERT_LT(c.storage(3).LastIndex(), last);
  c.HealAll();

  ASSERT_TRUE(c.TransferLeadership(1, 3).ok());
  EXPECT_EQ(c.Propose(1, "during").outcome, ProposeOutcome::kTransferring);
  ASSERT_GE(c.TickUntil(
                {1}, [&] { return c.Status(3).role == Role::kLeader; }, kElection),
            0);
  EXPECT_EQ(c.Status(3).term, term + 1);
  EXPECT_NE(c.Status(1).role, Role::kLeader);
  EXPECT_GE(c.storage(3).LastIndex(), last);
  CommitOne(c, 3, "after");
  for (uint64_t id = 1; id <= 3; ++id) EXPECT_TRUE(HasApplied(c, id, "w4")) << "S" << id;
  EXPECT_TRUE(c.Violation().ok()) << c.Violation();
}

// ---------------------------------------------------------------------------
// Log backtracking (§5.3, with the conflict-term hint of thesis §5.3): a
// follower whose log diverges over many entries is repaired in a few round
// trips — about one per conflicting term — not one per entry.

TEST(BacktrackingScenario, DivergentSuffixIsRepairedInAFewRoundTrips) {
  TestCluster c(3, Config(/*pre_vote=*/true, /*check_quorum=*/true));
  ASSERT_TRUE(c.Campaign(1));
  CommitOne(c, 1, "common");
  // S1, cut off, appends 40 entries in its term that no one else gets.
  c.Isolate(1);
  for (int i = 0; i < 40; ++i) {
    ASSERT_EQ(c.Propose(1, "orphan" + std::to_string(i)).outcome, ProposeOutcome::kAccepted);
  }
  ASSERT_GE(c.TickUntil(
                c.All(), [&] { return c.Leader() == 2 || c.Leader() == 3; }, 5 * kElection),
            0);
  const uint64_t leader = c.Leader();
  for (int i = 0; i < 25; ++i) {
    ASSERT_EQ(c.Propose(leader, "real" + std::to_string(i)).outcome, ProposeOutcome::kAccepted);
  }
  c.Stabilize();

  int rejections = 0;
  c.SetObserver([&](const Message& m) {
    if (m.from() == 1 && m.has_append_response() && !m.append_response().success()) ++rejections;
  });
  c.HealAll();
  // A new leader (by transfer, so S1 is connected for it) probes S1 at its
  // own last index, far past the common prefix. (A heartbeat would probe at
  // S1's commit index, which needs no search.)
  const uint64_t next_leader = leader == 2 ? 3 : 2;
  ASSERT_TRUE(c.TransferLeadership(leader, next_leader).ok());
  c.Stabilize();
  ASSERT_EQ(c.Leader(), next_leader);
  ASSERT_GE(c.TickUntil(
                c.All(), [&] { return HasApplied(c, 1, "real24"); }, 3 * kElection),
            0);
  std::cout << "S1 rejected " << rejections << " AppendEntries before its log matched\n";
  EXPECT_GE(rejections, 1) << "S1's log never conflicted: the scenario tests nothing";
  EXPECT_LE(rejections, 3) << "backtracking took one round trip per entry";
  EXPECT_EQ(c.storage(1).LastIndex(), c.storage(next_leader).LastIndex());
  for (uint64_t i = 1; i <= c.storage(1).LastIndex(); ++i) {
    EXPECT_EQ(TermAt(c, 1, i), TermAt(c, next_leader, i)) << "index " << i;
  }
  for (uint64_t id = 1; id <= 3; ++id) EXPECT_FALSE(HasApplied(c, id, "orphan0")) << "S" << id;
  EXPECT_TRUE(c.Violation().ok()) << c.Violation();
}

}  // namespace
}  // namespace raftkv::sim
