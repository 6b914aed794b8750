// The real Raft core (raft::Node) driven on LogStore and StateMachine, as the
// service will drive it: three nodes, an in-memory network, restarts that
// reopen the LevelDB databases, a partitioned leader whose uncommitted suffix
// is later replaced, and log compaction. Checks that every Ready the core
// emits is accepted by LogStore's validation and that all state machines end
// identical, holding exactly the committed commands.
#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <memory>
#include <set>

#include "raft/node.h"
#include "storage/log_store.h"
#include "storage/state_machine.h"
#include "tests/storage/test_util.h"

namespace raftkv::storage {
namespace {

using raft::Message;
using raft::Node;

class StorageCluster {
 public:
  explicit StorageCluster(const testing::TempDir& dir) : dir_(dir) {
    raft::ConfState conf;
    for (uint64_t id = 1; id <= 3; ++id) conf.add_voters(id);
    for (uint64_t id = 1; id <= 3; ++id) {
      auto log = LogStore::Open(LogDir(id), {});
      EXPECT_TRUE(log.ok()) << log.status();
      EXPECT_TRUE((*log)->Bootstrap(conf).ok());
    }
    for (uint64_t id = 1; id <= 3; ++id) Start(id);
  }

  std::string LogDir(uint64_t id) const { return dir_.Sub("log" + std::to_string(id)); }
  std::string SmDir(uint64_t id) const { return dir_.Sub("sm" + std::to_string(id)); }

  void Start(uint64_t id) {
    auto log = LogStore::Open(LogDir(id), {});
    ASSERT_TRUE(log.ok()) << log.status();
    auto sm = StateMachine::Open(SmDir(id), {});
    ASSERT_TRUE(sm.ok()) << sm.status();
    raft::Config c;
    c.id = id;
    c.random_seed = 7 * id + restarts_++;
    c.applied = (*sm)->applied_index();
    auto node = Node::Create(c, log->get());
    ASSERT_TRUE(node.ok()) << node.status();
    logs_[id] = std::move(*log);
    sms_[id] = std::move(*sm);
    nodes_[id] = std::move(*node);
  }

  void Stop(uint64_t id) {
    nodes_.erase(id);
    sms_.erase(id);
    logs_.erase(id);
  }

  void Restart(uint64_t id) {
    Stop(id);
    Start(id);
  }

  void Stabilize() {
    for (int round = 0; round < 1000; ++round) {
      bool progress = false;
      for (auto& [id, node] : nodes_) {
        if (!node->HasReady()) continue;
        progress = true;
        raft::Ready rd = node->GetReady();
        Send(rd.messages_send_now);
        ASSERT_FALSE(rd.snapshot.has_value()) << "this test never needs a snapshot";
        absl::Status s = logs_[id]->Save(rd.entries, rd.hard_state);
        ASSERT_TRUE(s.ok()) << "node " << id << ": " << s;
        Send(rd.messages_after_persist);
        auto results = sms_[id]->Apply(rd.committed_entries);
        ASSERT_TRUE(results.ok()) << results.status();
        node->Advance();
        ASSERT_TRUE(node->CheckInvariants().ok()) << node->CheckInvariants();
      }
      while (!inflight_.empty()) {
        progress = true;
        Message m = std::move(inflight_.front());
        inflight_.pop_front();
        auto it = nodes_.find(m.to());
        if (it != nodes_.end()) {
          ASSERT_TRUE(it->second->Step(m).ok());
        }
      }
      if (!progress) return;
    }
    FAIL() << "cluster did not become quiet";
  }

  void Tick(int ticks) {
    for (int t = 0; t < ticks; ++t) {
      for (auto& [id, node] : nodes_) node->Tick();
      Stabilize();
    }
  }

  uint64_t Leader() {
    for (auto& [id, node] : nodes_) {
      if (node->Status().role == raft::Role::kLeader && !isolated_.count(id)) return id;
    }
    return 0;
  }

  uint64_t ElectLeader() {
    for (int t = 0; t < 200 && Leader() == 0; ++t) Tick(1);
    return Leader();
  }

  // Proposes put(key, value) on `leader` with the next sequence of client 100.
  bool Propose(uint64_t leader, const std::string& key) {
    v1::Command c;
    c.set_client_id(100);
    c.set_sequence(++seq_);
    c.mutable_put()->set_key(key);
    c.mutable_put()->set_value("v-" + key);
    if (!sms_[leader]->Validate(c).ok()) return false;
    return nodes_[leader]->Propose(c.SerializeAsString()).outcome ==
           raft::ProposeOutcome::kAccepted;
  }

  void Isolate(uint64_t id) { isolated_.insert(id); }
  void Heal() { isolated_.clear(); }
  LogStore& log(uint64_t id) { return *logs_.at(id); }
  StateMachine& sm(uint64_t id) { return *sms_.at(id); }
  Node& node(uint64_t id) { return *nodes_.at(id); }

 private:
  void Send(const std::vector<Message>& msgs) {
    for (const auto& m : msgs) {
      if (isolated_.count(m.from()) || isolated_.count(m.to())) continue;
      inflight_.push_back(m);
    }
  }

  const testing::TempDir& dir_;
  std::map<uint64_t, std::unique_ptr<LogStore>> logs_;
  std::map<uint64_t, std::unique_ptr<StateMachine>> sms_;
  std::map<uint64_t, std::unique_ptr<Node>> nodes_;
  std::set<uint64_t> isolated_;
  std::deque<Message> inflight_;
  uint64_t seq_ = 0;
  int restarts_ = 0;
};

std::string Dump(StateMachine& sm) {
  auto all = sm.RangePrefix("", 0);
  EXPECT_TRUE(all.ok());
  std::string out;
  if (all.ok()) {
    for (const auto& kv : all->kvs) out += kv.key() + "=" + kv.value() + ";";
  }
  return out + "@" + std::to_string(sm.revision());
}

TEST(RaftOnStorage, ThreeNodesSurviveRestartsPartitionsAndCompaction) {
  testing::TempDir dir;
  StorageCluster c(dir);
  uint64_t leader = c.ElectLeader();
  ASSERT_NE(leader, 0u);
  int committed = 0;
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(c.Propose(leader, "a" + std::to_string(i)));
    ++committed;
    if (i % 8 == 7) c.Stabilize();
  }
  c.Tick(3);

  // The leader is cut off; what it accepts now never commits, and the new
  // leader's entries replace that suffix once it is back (Raft §5.3).
  const uint64_t old_leader = leader;
  c.Isolate(old_leader);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(c.Propose(old_leader, "lost" + std::to_string(i)));
  c.Stabilize();
  const uint64_t old_leader_last = c.log(old_leader).LastIndex();
  const uint64_t lost_term = *c.log(old_leader).Term(old_leader_last);
  leader = 0;
  for (int t = 0; t < 200 && (leader == 0 || leader == old_leader); ++t) {
    c.Tick(1);
    leader = c.Leader();
  }
  ASSERT_NE(leader, 0u);
  ASSERT_NE(leader, old_leader);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(c.Propose(leader, "b" + std::to_string(i)));
    ++committed;
  }
  c.Stabilize();
  c.Heal();
  c.Tick(25);
  leader = c.ElectLeader();
  ASSERT_NE(leader, 0u);
  EXPECT_GT(c.log(old_leader).hard_state().term(), 1u);
  // The unreplicated suffix was replaced on disk by the new leader's entries.
  ASSERT_GE(c.log(old_leader).LastIndex(), old_leader_last);
  EXPECT_GT(*c.log(old_leader).Term(old_leader_last), lost_term);

  // A follower restarts from its databases.
  const uint64_t follower = leader == 1 ? 2 : 1;
  c.Restart(follower);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(c.Propose(leader, "c" + std::to_string(i)));
    ++committed;
  }
  c.Tick(5);

  // Compaction on every node (state machine synced first), then everyone restarts.
  for (uint64_t id = 1; id <= 3; ++id) {
    ASSERT_TRUE(c.sm(id).Sync().ok());
    const uint64_t upto = c.sm(id).applied_index() - 10;
    ASSERT_TRUE(c.log(id).Compact(upto, c.log(id).GetInitialState()->conf_state).ok());
  }
  for (uint64_t id = 1; id <= 3; ++id) c.Restart(id);
  leader = c.ElectLeader();
  ASSERT_NE(leader, 0u);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(c.Propose(leader, "d" + std::to_string(i)));
    ++committed;
  }
  c.Tick(5);

  const std::string want = Dump(c.sm(leader));
  for (uint64_t id = 1; id <= 3; ++id) {
    SCOPED_TRACE(::testing::Message() << "node " << id);
    EXPECT_EQ(c.sm(id).applied_index(), c.node(leader).Status().commit);
    EXPECT_EQ(Dump(c.sm(id)), want);
    EXPECT_EQ(c.sm(id).revision(), committed);
    for (int i = 0; i < 5; ++i) {
      EXPECT_FALSE(c.sm(id).Get("lost" + std::to_string(i))->has_value());
    }
    EXPECT_EQ(c.log(id).LastIndex(), c.log(leader).LastIndex());
    EXPECT_EQ(*c.log(id).Term(c.log(id).LastIndex()),
              *c.log(leader).Term(c.log(leader).LastIndex()));
  }
}

}  // namespace
}  // namespace raftkv::storage
