// Behaviour of the core, stated as the Raft paper's rules. A tiny in-memory
// network delivers messages in order; every node is driven exactly as the
// contract at the top of raft/node.h says.
#include "raft/node.h"

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/str_cat.h"
#include "raft/memory_storage.h"

namespace raftkv::raft {
namespace {

class Cluster {
 public:
  explicit Cluster(int n, bool pre_vote = true, bool check_quorum = true, int max_inflight = 256,
                   bool thrifty = false) {
    ConfState conf;
    for (int i = 1; i <= n; ++i) conf.add_voters(i);
    for (int i = 1; i <= n; ++i) {
      storage_[i] = std::make_unique<MemoryStorage>(conf);
      Config c;
      c.id = i;
      c.election_ticks = 10;
      c.heartbeat_ticks = 1;
      c.pre_vote = pre_vote;
      c.check_quorum = check_quorum;
      c.random_seed = 42;
      c.max_inflight_appends = max_inflight;
      c.thrifty_replication = thrifty;
      auto node = Node::Create(c, storage_[i].get());
      EXPECT_TRUE(node.ok()) << node.status();
      nodes_[i] = std::move(*node);
    }
  }

  Node& node(uint64_t id) { return *nodes_.at(id); }
  const std::vector<Entry>& applied(uint64_t id) { return applied_[id]; }
  std::vector<ReadState>& reads(uint64_t id) { return reads_[id]; }
  std::vector<std::string>& dropped(uint64_t id) { return dropped_[id]; }

  MemoryStorage& disk(uint64_t id) { return *storage_.at(id); }
  int snapshots_installed(uint64_t id) { return snapshots_installed_[id]; }
  void Isolate(uint64_t id) { isolated_.insert(id); }
  void Heal() { isolated_.clear(); }

  // Handles every node's Ready and delivers messages until quiet.
  void Stabilize() {
    for (int round = 0; round < 1000; ++round) {
      bool progress = false;
      for (auto& [id, node] : nodes_) {
        if (!node->HasReady()) continue;
        progress = true;
        Ready rd = node->GetReady();
        Send(rd.messages_send_now);
        MemoryStorage& disk = *storage_[id];
        if (rd.snapshot) {
          disk.ApplySnapshot(*rd.snapshot);
          snapshots_installed_[id]++;
        }
        ASSERT_TRUE(disk.Append(rd.entries).ok());
        if (rd.hard_state) disk.SetHardState(*rd.hard_state);
        Send(rd.messages_after_persist);
        for (auto& e : rd.committed_entries) applied_[id].push_back(e);
        for (auto& r : rd.read_states) reads_[id].push_back(r);
        for (auto& d : rd.dropped_reads) dropped_[id].push_back(d);
        node->Advance();
        ASSERT_TRUE(node->CheckInvariants().ok()) << node->CheckInvariants();
      }
      while (!inflight_.empty()) {
        progress = true;
        Message m = std::move(inflight_.front());
        inflight_.pop_front();
        ASSERT_TRUE(nodes_.at(m.to())->Step(m).ok());
      }
      if (!progress) return;
    }
    FAIL() << "cluster did not become quiet";
  }

  void TickAll(int ticks) {
    for (int t = 0; t < ticks; ++t) {
      for (auto& [id, node] : nodes_) node->Tick();
      Stabilize();
    }
  }

  uint64_t Leader() {
    uint64_t leader = 0;
    for (auto& [id, node] : nodes_) {
      if (node->Status().role == Role::kLeader && !isolated_.count(id)) leader = id;
    }
    return leader;
  }

  uint64_t ElectLeader() {
    for (int t = 0; t < 100 && Leader() == 0; ++t) TickAll(1);
    return Leader();
  }

 private:
  void Send(const std::vector<Message>& msgs) {
    for (const auto& m : msgs) {
      sent_.push_back(m);
      if (isolated_.count(m.from()) || isolated_.count(m.to())) continue;
      inflight_.push_back(m);
    }
  }

  std::map<uint64_t, std::unique_ptr<MemoryStorage>> storage_;
  std::map<uint64_t, std::unique_ptr<Node>> nodes_;
  std::map<uint64_t, std::vector<Entry>> applied_;
  std::map<uint64_t, std::vector<ReadState>> reads_;
  std::map<uint64_t, std::vector<std::string>> dropped_;
  std::map<uint64_t, int> snapshots_installed_;
  std::set<uint64_t> isolated_;
  std::deque<Message> inflight_;

 public:
  // Every message any node sent, including those dropped by isolation.
  std::vector<Message> sent_;
};

ConfState ThreeVoters() {
  ConfState conf;
  for (uint64_t i = 1; i <= 3; ++i) conf.add_voters(i);
  return conf;
}

// Node 1 of a three-voter cluster over `storage`, with default settings.
absl::StatusOr<std::unique_ptr<Node>> NodeOne(const MemoryStorage& storage) {
  Config config;
  config.id = 1;
  return Node::Create(config, &storage);
}

Message FromTwoToOne() {
  Message m;
  m.set_from(2);
  m.set_to(1);
  return m;
}

// An AppendEntries request from node 2, as leader of `term`, to node 1.
Message AppendFromTwo(uint64_t term) {
  Message m = FromTwoToOne();
  m.mutable_append_request()->set_term(term);
  m.mutable_append_request()->set_leader_id(2);
  return m;
}

std::vector<std::string> NormalData(const std::vector<Entry>& entries) {
  std::vector<std::string> out;
  for (const auto& e : entries) {
    if (e.type() == v1::ENTRY_NORMAL) out.push_back(e.data());
  }
  return out;
}

TEST(Election, SingleNodeBecomesLeaderAndCommitsAlone) {
  Cluster c(1);
  ASSERT_EQ(c.ElectLeader(), 1u);
  auto r = c.node(1).Propose("x");
  ASSERT_EQ(r.outcome, ProposeOutcome::kAccepted);
  c.Stabilize();
  EXPECT_EQ(NormalData(c.applied(1)), std::vector<std::string>{"x"});
}

TEST(Election, ThreeNodesElectExactlyOneLeader) {
  Cluster c(3);
  const uint64_t leader = c.ElectLeader();
  ASSERT_NE(leader, 0u);
  int leaders = 0;
  for (uint64_t id = 1; id <= 3; ++id) {
    if (c.node(id).Status().role == Role::kLeader) ++leaders;
    EXPECT_EQ(c.node(id).Status().leader, leader);
  }
  EXPECT_EQ(leaders, 1);
}

TEST(Replication, CommittedEntriesReachEveryNodeInOrder) {
  Cluster c(3);
  const uint64_t leader = c.ElectLeader();
  ASSERT_NE(leader, 0u);
  for (int i = 0; i < 50; ++i) {
    ASSERT_EQ(c.node(leader).Propose("v" + std::to_string(i)).outcome, ProposeOutcome::kAccepted);
  }
  c.Stabilize();
  c.TickAll(2);  // heartbeats carry the final commit index
  for (uint64_t id = 1; id <= 3; ++id) {
    auto data = NormalData(c.applied(id));
    ASSERT_EQ(data.size(), 50u) << "node " << id;
    EXPECT_EQ(data.front(), "v0");
    EXPECT_EQ(data.back(), "v49");
  }
}

TEST(Replication, FollowerRefusesProposals) {
  Cluster c(3);
  const uint64_t leader = c.ElectLeader();
  const uint64_t follower = leader % 3 + 1;
  auto r = c.node(follower).Propose("x");
  EXPECT_EQ(r.outcome, ProposeOutcome::kNotLeader);
  EXPECT_EQ(r.leader, leader);
}

TEST(Replication, IsolatedFollowerCatchesUpAfterHealing) {
  Cluster c(3);
  const uint64_t leader = c.ElectLeader();
  const uint64_t lagging = leader % 3 + 1;
  c.Isolate(lagging);
  for (int i = 0; i < 20; ++i) c.node(leader).Propose("v" + std::to_string(i));
  c.Stabilize();
  c.TickAll(3);
  c.Heal();
  c.TickAll(5);
  EXPECT_EQ(NormalData(c.applied(lagging)).size(), 20u);
}

TEST(Snapshot, FollowerBehindCompactedLogInstallsSnapshotThenCatchesUp) {
  Cluster c(3);
  const uint64_t leader = c.ElectLeader();
  const uint64_t lagging = leader % 3 + 1;
  c.Isolate(lagging);
  for (int i = 0; i < 20; ++i) c.node(leader).Propose("v" + std::to_string(i));
  c.Stabilize();
  c.TickAll(2);
  const uint64_t compact_to = c.node(leader).Status().commit - 3;
  ASSERT_TRUE(c.disk(leader).Compact(compact_to, c.node(leader).Status().conf_state).ok());
  c.Heal();
  c.TickAll(5);
  EXPECT_EQ(c.snapshots_installed(lagging), 1);
  EXPECT_EQ(c.disk(lagging).FirstIndex(), compact_to + 1);
  EXPECT_EQ(c.node(lagging).Status().commit, c.node(leader).Status().commit);
  // Only the entries after the snapshot are applied from the log.
  auto data = NormalData(c.applied(lagging));
  ASSERT_FALSE(data.empty());
  EXPECT_EQ(data.back(), "v19");
  EXPECT_LT(data.size(), 20u);
}

TEST(ReadIndex, LeaderAnswersAfterQuorumHeartbeat) {
  Cluster c(3);
  const uint64_t leader = c.ElectLeader();
  c.Stabilize();
  ASSERT_EQ(c.node(leader).ReadIndex("r1"), ProposeOutcome::kAccepted);
  c.Stabilize();
  ASSERT_EQ(c.reads(leader).size(), 1u);
  EXPECT_EQ(c.reads(leader)[0].context, "r1");
  EXPECT_EQ(c.reads(leader)[0].index, c.node(leader).Status().commit);
}

// The read rounds a leader's heartbeats carried (0 = none).
std::set<uint64_t> ReadRoundsSent(const std::vector<Message>& sent, uint64_t leader) {
  std::set<uint64_t> rounds;
  for (const auto& m : sent) {
    if (m.from() == leader && m.has_append_request() && m.append_request().read_round() > 0) {
      rounds.insert(m.append_request().read_round());
    }
  }
  return rounds;
}

// The voters a leader's read round went to (heartbeats with that round).
std::set<uint64_t> AskedForRound(const std::vector<Message>& sent, uint64_t leader,
                                 uint64_t round) {
  std::set<uint64_t> asked;
  for (const auto& m : sent) {
    if (m.from() == leader && m.has_append_request() && m.append_request().read_round() == round) {
      asked.insert(m.to());
    }
  }
  return asked;
}

// A round needs a quorum's acknowledgement, so it asks only as many voters
// as make one with the leader: one of two followers, two of four.
TEST(ReadIndex, RoundAsksOnlyAQuorum) {
  for (int n : {3, 5}) {
    Cluster c(n);
    const uint64_t leader = c.ElectLeader();
    c.Stabilize();
    for (int r = 0; r < 3; ++r) {
      c.sent_.clear();
      const std::string ctx = "r" + std::to_string(r);
      ASSERT_EQ(c.node(leader).ReadIndex(ctx), ProposeOutcome::kAccepted);
      c.Stabilize();
      ASSERT_EQ(c.reads(leader).size(), static_cast<size_t>(r + 1)) << n;
      EXPECT_EQ(c.reads(leader).back().context, ctx);
      const std::set<uint64_t> rounds = ReadRoundsSent(c.sent_, leader);
      ASSERT_EQ(rounds.size(), 1u);
      EXPECT_EQ(AskedForRound(c.sent_, leader, *rounds.begin()).size(),
                static_cast<size_t>(n / 2)) << n;
    }
  }
}

// A chosen voter that does not answer holds the round up until the next
// heartbeat, which carries it to every follower; the next round goes to one
// that answered.
TEST(ReadIndex, SilentVoterDelaysTheRoundByOneHeartbeat) {
  Cluster c(3);
  const uint64_t leader = c.ElectLeader();
  c.Stabilize();
  c.sent_.clear();
  ASSERT_EQ(c.node(leader).ReadIndex("first"), ProposeOutcome::kAccepted);
  c.Stabilize();
  ASSERT_EQ(c.reads(leader).size(), 1u);
  const std::set<uint64_t> rounds = ReadRoundsSent(c.sent_, leader);
  ASSERT_EQ(rounds.size(), 1u);
  const uint64_t round = *rounds.begin();
  const std::set<uint64_t> asked = AskedForRound(c.sent_, leader, round);
  ASSERT_EQ(asked.size(), 1u);
  const uint64_t silent = *asked.begin();
  c.Isolate(silent);
  c.sent_.clear();
  ASSERT_EQ(c.node(leader).ReadIndex("second"), ProposeOutcome::kAccepted);
  c.Stabilize();
  EXPECT_EQ(c.reads(leader).size(), 1u) << "served without a quorum's answer";
  c.TickAll(1);  // one heartbeat interval
  ASSERT_EQ(c.reads(leader).size(), 2u);
  EXPECT_EQ(c.reads(leader).back().context, "second");
  c.sent_.clear();
  ASSERT_EQ(c.node(leader).ReadIndex("third"), ProposeOutcome::kAccepted);
  c.Stabilize();
  ASSERT_EQ(c.reads(leader).size(), 3u);
  const std::set<uint64_t> third = AskedForRound(c.sent_, leader, round + 2);
  ASSERT_EQ(third.size(), 1u);
  EXPECT_NE(*third.begin(), silent);
}

TEST(ReadIndex, FollowerRefuses) {
  Cluster c(3);
  const uint64_t leader = c.ElectLeader();
  EXPECT_EQ(c.node(leader % 3 + 1).ReadIndex("r"), ProposeOutcome::kNotLeader);
}

TEST(CheckQuorum, IsolatedLeaderStepsDownAndDropsReads) {
  Cluster c(3);
  const uint64_t leader = c.ElectLeader();
  c.Isolate(leader);
  ASSERT_EQ(c.node(leader).ReadIndex("stale"), ProposeOutcome::kAccepted);
  c.TickAll(25);
  EXPECT_NE(c.node(leader).Status().role, Role::kLeader);
  EXPECT_TRUE(c.reads(leader).empty());
  EXPECT_EQ(c.dropped(leader), std::vector<std::string>{"stale"});
}

TEST(Transfer, TargetBecomesLeader) {
  Cluster c(3);
  const uint64_t leader = c.ElectLeader();
  const uint64_t target = leader % 3 + 1;
  ASSERT_TRUE(c.node(leader).TransferLeadership(target).ok());
  c.Stabilize();
  EXPECT_EQ(c.node(target).Status().role, Role::kLeader);
  EXPECT_EQ(c.node(leader).Status().leader, target);
}

// ---- Thrifty replication ----

// The followers a leader sent `data` to at once (in an append carrying it).
std::set<uint64_t> SentAtOnce(Cluster& c, uint64_t leader, const std::string& data) {
  c.sent_.clear();
  c.node(leader).Propose(data);
  c.Stabilize();
  std::set<uint64_t> to;
  for (const auto& m : c.sent_) {
    if (m.from() != leader || !m.has_append_request()) continue;
    for (const auto& e : m.append_request().entries()) {
      if (e.data() == data) to.insert(m.to());
    }
  }
  return to;
}

bool Applied(Cluster& c, uint64_t id, const std::string& data) {
  for (const auto& e : c.applied(id)) {
    if (e.data() == data) return true;
  }
  return false;
}

TEST(Thrifty, NewEntriesGoAtOnceToAQuorumAndToTheOthersWithTheHeartbeat) {
  for (int n : {3, 5}) {
    SCOPED_TRACE(::testing::Message() << n << " nodes");
    Cluster c(n, true, true, 256, /*thrifty=*/true);
    const uint64_t leader = c.ElectLeader();
    c.Stabilize();
    const std::set<uint64_t> eager = SentAtOnce(c, leader, "v");
    EXPECT_EQ(eager.size(), static_cast<size_t>(n / 2));  // a quorum with the leader
    EXPECT_TRUE(Applied(c, leader, "v"));                  // committed without the others
    for (uint64_t id = 1; id <= static_cast<uint64_t>(n); ++id) {
      if (id != leader && !eager.contains(id)) {
        EXPECT_FALSE(Applied(c, id, "v")) << "node " << id;
      }
    }
    // The same followers stay eager while they keep up.
    EXPECT_EQ(SentAtOnce(c, leader, "w"), eager);
    c.TickAll(1);  // the heartbeat brings the others the entries and the commit
    for (uint64_t id = 1; id <= static_cast<uint64_t>(n); ++id) {
      EXPECT_TRUE(Applied(c, id, "w")) << "node " << id;
    }
  }
}

// A three-node thrifty cluster whose leader has committed "v", sent at once
// to `eager` only; `lazy` has not got it yet.
class ThriftyThree : public ::testing::Test {
 protected:
  void SetUp() override {
    leader = c.ElectLeader();
    c.Stabilize();
    const std::set<uint64_t> sent = SentAtOnce(c, leader, "v");
    ASSERT_EQ(sent.size(), 1u);
    eager = *sent.begin();
    lazy = 6 - leader - eager;  // ids are 1, 2 and 3
    ASSERT_TRUE(Applied(c, leader, "v"));
    ASSERT_FALSE(Applied(c, lazy, "v"));
  }

  Cluster c{3, true, true, 256, /*thrifty=*/true};
  uint64_t leader = 0, eager = 0, lazy = 0;
};

TEST_F(ThriftyThree, AnEagerFollowerThatStopsAnsweringIsReplaced) {
  c.Isolate(eager);
  EXPECT_EQ(SentAtOnce(c, leader, "b"), std::set<uint64_t>{eager});
  EXPECT_FALSE(Applied(c, leader, "b"));  // its only eager follower is silent
  c.TickAll(1);  // the heartbeat's appends reach the other follower: committed
  EXPECT_TRUE(Applied(c, leader, "b"));
  c.TickAll(1);  // "b" went unacknowledged by the eager one for a whole tick
  EXPECT_EQ(SentAtOnce(c, leader, "c"), std::set<uint64_t>{lazy});
  EXPECT_TRUE(Applied(c, leader, "c"));  // at once again
  c.Heal();
  c.TickAll(2);
  EXPECT_TRUE(Applied(c, eager, "c"));
}

// A lazy follower's appends travel once a heartbeat: one that is lost is
// found and sent again with the following heartbeats, new entries or not.
TEST_F(ThriftyThree, ALazyFollowerGetsLostAppendsAgain) {
  c.Isolate(lazy);
  c.TickAll(1);  // the heartbeat's append with "v" is lost
  c.Heal();
  EXPECT_FALSE(Applied(c, lazy, "v"));
  c.TickAll(3);
  EXPECT_TRUE(Applied(c, lazy, "v"));
}

// A commit needs no message of its own: the eager follower learns it with
// the next append, the others with the next heartbeat.
TEST_F(ThriftyThree, FollowersLearnACommitWithTheNextAppendOrHeartbeat) {
  c.sent_.clear();
  c.Stabilize();
  EXPECT_TRUE(c.sent_.empty());
  EXPECT_FALSE(Applied(c, eager, "v"));
  EXPECT_EQ(SentAtOnce(c, leader, "w"), std::set<uint64_t>{eager});
  EXPECT_TRUE(Applied(c, eager, "v"));  // "w"'s append carried the commit
  EXPECT_FALSE(Applied(c, eager, "w"));
  c.TickAll(1);
  for (uint64_t id : {eager, lazy}) EXPECT_TRUE(Applied(c, id, "w")) << "node " << id;
}

// Once writes pause the driver announces the commit: the eager follower,
// which holds every entry, is told; the lazy one still gets "v" with the
// heartbeat, not now.
TEST_F(ThriftyThree, AnnounceCommitTellsFollowersHoldingEveryEntry) {
  c.node(leader).AnnounceCommit();
  c.Stabilize();
  EXPECT_TRUE(Applied(c, eager, "v"));
  EXPECT_FALSE(Applied(c, lazy, "v"));
  // Told once: nothing more to send, and nothing on a follower.
  c.sent_.clear();
  c.node(leader).AnnounceCommit();
  c.node(eager).AnnounceCommit();
  c.Stabilize();
  EXPECT_TRUE(c.sent_.empty());
  c.TickAll(1);
  EXPECT_TRUE(Applied(c, lazy, "v"));
}

TEST_F(ThriftyThree, SendEntriesNowCatchesUpALazyFollower) {
  c.node(leader).SendEntriesNow(lazy);
  c.Stabilize();
  EXPECT_TRUE(Applied(c, lazy, "v"));
  // The eager follower holds "v" but has not been told it is committed.
  EXPECT_FALSE(Applied(c, eager, "v"));
  c.node(leader).SendEntriesNow(eager);
  c.Stabilize();
  EXPECT_TRUE(Applied(c, eager, "v"));
  // A follower that lacks nothing, or a call on a follower, sends nothing.
  c.sent_.clear();
  c.node(leader).SendEntriesNow(eager);
  c.node(leader).SendEntriesNow(lazy);
  c.node(lazy).SendEntriesNow(leader);
  c.Stabilize();
  EXPECT_TRUE(c.sent_.empty());
}

TEST_F(ThriftyThree, TransferToALazyFollowerCatchesItUpFirst) {
  ASSERT_TRUE(c.node(leader).TransferLeadership(lazy).ok());
  c.Stabilize();
  EXPECT_EQ(c.node(lazy).Status().role, Role::kLeader);
  EXPECT_TRUE(Applied(c, lazy, "v"));
}

// Figure 2, "persistent state ... updated on stable storage before
// responding to RPCs": a vote grant leaves only after the vote is persisted.
TEST(Election, VoteGrantIsSentOnlyAfterTheVoteIsPersisted) {
  MemoryStorage storage(ThreeVoters());
  auto node = NodeOne(storage);
  ASSERT_TRUE(node.ok());
  Message m = FromTwoToOne();
  auto* req = m.mutable_vote_request();
  req->set_term(5);
  req->set_candidate_id(2);
  ASSERT_TRUE((*node)->Step(m).ok());
  Ready rd = (*node)->GetReady();
  EXPECT_TRUE(rd.messages_send_now.empty());
  ASSERT_EQ(rd.messages_after_persist.size(), 1u);
  EXPECT_TRUE(rd.messages_after_persist[0].vote_response().granted());
  ASSERT_TRUE(rd.hard_state.has_value());
  EXPECT_EQ(rd.hard_state->term(), 5u);
  EXPECT_EQ(rd.hard_state->vote(), 2u);
}

// §5.4.1: a voter denies its vote to a candidate whose log is less up to date.
TEST(Election, VoterRejectsCandidateWithStaleLog) {
  MemoryStorage storage(ThreeVoters());
  Entry e;
  e.set_index(1);
  e.set_term(3);
  ASSERT_TRUE(storage.Append({e}).ok());
  HardState hs;
  hs.set_term(3);
  storage.SetHardState(hs);
  auto node = NodeOne(storage);
  ASSERT_TRUE(node.ok());
  Message m = FromTwoToOne();
  auto* req = m.mutable_vote_request();
  req->set_term(4);
  req->set_candidate_id(2);
  req->set_last_log_index(5);
  req->set_last_log_term(2);  // longer log, older last term: less up to date
  ASSERT_TRUE((*node)->Step(m).ok());
  Ready rd = (*node)->GetReady();
  ASSERT_EQ(rd.messages_after_persist.size(), 1u);
  EXPECT_FALSE(rd.messages_after_persist[0].vote_response().granted());
}

// Thesis §9.6: with PreVote, a node cut off from the cluster does not inflate
// its term, so on rejoining it does not depose the leader.
TEST(PreVote, IsolatedNodeKeepsItsTermAndDoesNotDisruptLeader) {
  Cluster c(3);
  const uint64_t leader = c.ElectLeader();
  const uint64_t term = c.node(leader).Status().term;
  const uint64_t isolated = leader % 3 + 1;
  c.Isolate(isolated);
  c.TickAll(100);
  EXPECT_EQ(c.node(isolated).Status().term, term);
  c.Heal();
  c.TickAll(30);
  EXPECT_EQ(c.Leader(), leader);
  EXPECT_EQ(c.node(leader).Status().term, term);
}

// §8: a new leader appends a no-op entry of its own term.
TEST(Replication, NewLeaderAppendsNoopOfItsTerm) {
  Cluster c(3);
  const uint64_t leader = c.ElectLeader();
  c.Stabilize();
  ASSERT_FALSE(c.applied(leader).empty());
  EXPECT_EQ(c.applied(leader).back().type(), v1::ENTRY_NOOP);
  EXPECT_EQ(c.applied(leader).back().term(), c.node(leader).Status().term);
}

// Proposals that arrive together travel together: one AppendEntries per
// follower carries them all.
TEST(Replication, ProposalsBetweenReadiesShareOneMessagePerFollower) {
  Cluster c(3);
  const uint64_t leader = c.ElectLeader();
  c.Stabilize();
  c.sent_.clear();
  for (int i = 0; i < 10; ++i) c.node(leader).Propose("v" + std::to_string(i));
  c.Stabilize();
  int with_entries = 0;
  for (const auto& m : c.sent_) {
    if (m.from() == leader && m.has_append_request() && m.append_request().entries_size() > 0) {
      ++with_entries;
      EXPECT_EQ(m.append_request().entries_size(), 10);
    }
  }
  EXPECT_EQ(with_entries, 2);
}

// A put's commit reaches the followers in an append that carries nothing
// else; its success would teach the leader nothing, so it goes unanswered:
// one round of answers per put, not two.
TEST(Replication, CommitOnlyAppendsAreNotAnswered) {
  Cluster c(3);
  const uint64_t leader = c.ElectLeader();
  c.Stabilize();
  c.sent_.clear();
  c.node(leader).Propose("v");
  c.Stabilize();
  int carrying = 0, commit_only = 0, answers = 0;
  for (const auto& m : c.sent_) {
    if (m.from() == leader && m.has_append_request()) {
      const auto& req = m.append_request();
      if (req.entries_size() > 0) {
        ++carrying;
        EXPECT_FALSE(req.commit_only());
      } else {
        ++commit_only;
        EXPECT_TRUE(req.commit_only());
        EXPECT_EQ(req.leader_commit(), c.node(leader).Status().commit);
      }
    }
    if (m.to() == leader && m.has_append_response()) ++answers;
  }
  EXPECT_EQ(carrying, 2);
  EXPECT_EQ(commit_only, 2);
  EXPECT_EQ(answers, 2);  // the entry's acknowledgements only
  for (uint64_t id = 1; id <= 3; ++id) {
    EXPECT_EQ(c.node(id).Status().commit, c.node(leader).Status().commit) << "node " << id;
    ASSERT_FALSE(c.applied(id).empty());
    EXPECT_EQ(c.applied(id).back().data(), "v");
  }
}

// A commit-only append that does not fit the follower's log is answered,
// like any rejection, so the leader can back up.
TEST(Replication, RejectedCommitOnlyAppendIsAnswered) {
  MemoryStorage storage(ThreeVoters());
  auto node = NodeOne(storage);
  ASSERT_TRUE(node.ok());
  Message m = AppendFromTwo(1);
  auto* req = m.mutable_append_request();
  req->set_prev_log_index(5);  // beyond this node's empty log
  req->set_prev_log_term(1);
  req->set_leader_commit(5);
  req->set_commit_only(true);
  ASSERT_TRUE((*node)->Step(m).ok());
  Ready rd = (*node)->GetReady();
  ASSERT_EQ(rd.messages_after_persist.size(), 1u);
  const Message& answer = rd.messages_after_persist[0];
  ASSERT_TRUE(answer.has_append_response());
  EXPECT_FALSE(answer.append_response().success());
  EXPECT_EQ(answer.append_response().conflict_index(), 1u);
}

// An append that repeats entries the follower already holds (a retry, or
// two appends in flight that overlap) adds only the new ones, each with the
// data the leader sent. Stepped as rvalues, as the driver does: the core
// moves the entries out of the message.
TEST(Replication, OverlappingAppendAddsOnlyTheNewEntries) {
  MemoryStorage storage(ThreeVoters());
  auto node = NodeOne(storage);
  ASSERT_TRUE(node.ok());
  auto append = [](uint64_t first, uint64_t last) {
    Message m = AppendFromTwo(1);
    auto* req = m.mutable_append_request();
    req->set_prev_log_index(first - 1);
    req->set_prev_log_term(first == 1 ? 0 : 1);
    for (uint64_t i = first; i <= last; ++i) {
      Entry* e = req->add_entries();
      e->set_index(i);
      e->set_term(1);
      e->set_data(absl::StrCat("v", i));
    }
    return m;
  };
  // Persists the Ready's entries into `saved`; checks the acknowledgement.
  auto persist = [&](uint64_t want_match, std::vector<Entry>* saved) {
    Ready rd = (*node)->GetReady();
    ASSERT_TRUE(storage.Append(rd.entries).ok());
    if (rd.hard_state) storage.SetHardState(*rd.hard_state);
    ASSERT_EQ(rd.messages_after_persist.size(), 1u);
    EXPECT_TRUE(rd.messages_after_persist[0].append_response().success());
    EXPECT_EQ(rd.messages_after_persist[0].append_response().match_index(), want_match);
    *saved = rd.entries;
    (*node)->Advance();
  };
  ASSERT_TRUE((*node)->Step(append(1, 2)).ok());
  std::vector<Entry> first;
  ASSERT_NO_FATAL_FAILURE(persist(2, &first));
  ASSERT_EQ(first.size(), 2u);
  ASSERT_TRUE((*node)->Step(append(1, 4)).ok());
  std::vector<Entry> second;
  ASSERT_NO_FATAL_FAILURE(persist(4, &second));
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(second[0].index(), 3u);
  EXPECT_EQ(second[1].index(), 4u);
  auto stored = storage.Entries(1, 5, UINT64_MAX);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(NormalData(*stored), (std::vector<std::string>{"v1", "v2", "v3", "v4"}));
  EXPECT_TRUE((*node)->CheckInvariants().ok());
}

// Pipelining is bounded: at most max_inflight_appends unacknowledged
// AppendEntries go to a follower that does not answer.
TEST(Replication, InflightWindowBoundsUnacknowledgedAppends) {
  Cluster c(3, true, true, /*max_inflight=*/2);
  const uint64_t leader = c.ElectLeader();
  c.Stabilize();
  const uint64_t silent = leader % 3 + 1;
  c.Isolate(silent);
  c.sent_.clear();
  for (int i = 0; i < 6; ++i) {
    c.node(leader).Propose("v" + std::to_string(i));
    c.Stabilize();
  }
  int to_silent = 0;
  for (const auto& m : c.sent_) {
    if (m.to() == silent && m.has_append_request() && m.append_request().entries_size() > 0) {
      ++to_silent;
    }
  }
  EXPECT_EQ(to_silent, 2);
}

// Only entries, a snapshot or a new term/vote need an fsync; a Ready that
// merely advances the commit index does not (commit is re-learned).
TEST(Ready, CommitOnlyReadyNeedsNoSync) {
  MemoryStorage storage(ThreeVoters());
  auto node = NodeOne(storage);
  ASSERT_TRUE(node.ok());
  Message m = AppendFromTwo(1);
  Entry* e = m.mutable_append_request()->add_entries();
  e->set_term(1);
  e->set_index(1);
  ASSERT_TRUE((*node)->Step(m).ok());
  Ready rd = (*node)->GetReady();
  EXPECT_TRUE(rd.must_sync);  // new term and a new entry
  ASSERT_TRUE(storage.Append(rd.entries).ok());
  storage.SetHardState(*rd.hard_state);
  (*node)->Advance();

  Message hb = AppendFromTwo(1);
  hb.mutable_append_request()->set_heartbeat(true);
  hb.mutable_append_request()->set_leader_commit(1);
  ASSERT_TRUE((*node)->Step(hb).ok());
  rd = (*node)->GetReady();
  ASSERT_TRUE(rd.hard_state.has_value());
  EXPECT_EQ(rd.hard_state->commit(), 1u);
  EXPECT_FALSE(rd.must_sync);
  EXPECT_TRUE(rd.MustPersist());
}

TEST(Step, RejectsMalformedMessages) {
  Cluster c(3);
  Message m;
  m.set_from(2);
  m.set_to(1);
  EXPECT_FALSE(c.node(1).Step(m).ok());  // no body
  m.mutable_timeout_now()->set_term(1);
  m.set_to(3);
  EXPECT_FALSE(c.node(1).Step(m).ok());  // wrong recipient
}

TEST(Step, LeavesDriverMessagesToTheDriver) {
  Cluster c(3);
  const NodeStatus before = c.node(1).Status();
  Message m;
  m.set_from(2);
  m.set_to(1);
  m.mutable_forward_request()->set_id(1);
  EXPECT_TRUE(absl::IsInvalidArgument(c.node(1).Step(m)));
  m.mutable_forward_response()->set_id(1);
  EXPECT_TRUE(absl::IsInvalidArgument(c.node(1).Step(m)));
  m.mutable_forward_read_request()->set_id(1);
  EXPECT_TRUE(absl::IsInvalidArgument(c.node(1).Step(m)));
  m.mutable_forward_read_response()->set_id(1);
  EXPECT_TRUE(absl::IsInvalidArgument(c.node(1).Step(m)));
  const NodeStatus after = c.node(1).Status();
  EXPECT_EQ(before.term, after.term);
  EXPECT_EQ(before.role, after.role);
  EXPECT_FALSE(c.node(1).HasReady());
}

}  // namespace
}  // namespace raftkv::raft
