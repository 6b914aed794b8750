#include "tests/sim/test_cluster.h"

#include "absl/strings/str_cat.h"

namespace raftkv::sim {

TestCluster::TestCluster(int nodes, const std::function<void(raft::Config&)>& tweak)
    : nodes_(nodes), checker_(nodes) {
  raftkv::v1::ConfState conf;
  for (int i = 1; i <= nodes; ++i) conf.add_voters(i);
  for (int i = 0; i < nodes; ++i) {
    TestNode& n = nodes_[i];
    n.id = i + 1;
    n.storage = raft::MemoryStorage(conf);
    n.config.id = n.id;
    n.config.random_seed = 1000 + n.id;
    if (tweak) tweak(n.config);
    n.config.id = n.id;
  }
  for (TestNode& n : nodes_) {
    n.node = nullptr;
    Restart(n.id);
  }
}

void TestCluster::Record(absl::Status s) {
  if (error_.ok() && !s.ok()) error_ = std::move(s);
}

absl::Status TestCluster::Violation() const {
  if (!error_.ok()) return error_;
  return checker_.first_violation();
}

raft::NodeStatus TestCluster::Status(uint64_t id) const {
  const TestNode& n = N(id);
  if (n.node == nullptr) {
    raft::NodeStatus s;
    s.id = id;
    return s;
  }
  return n.node->Status();
}

void TestCluster::HandleReady(TestNode& n) {
  while (n.node != nullptr && n.node->HasReady()) {
    raft::Ready rd = n.node->GetReady();
    for (raft::Message& m : rd.messages_send_now) {
      Record(checker_.OnSend(n.id, m));
      in_flight_.push_back(std::move(m));
    }
    if (rd.snapshot.has_value()) {
      Record(absl::InternalError(absl::StrCat("node ", n.id, " was handed a snapshot at index ",
                                              rd.snapshot->index(),
                                              " but no log here is ever compacted")));
    }
    if (!rd.entries.empty()) {
      Record(checker_.OnPersistEntries(n.id, n.storage, rd.entries));
      if (auto s = n.storage.Append(rd.entries); !s.ok()) {
        Record(absl::InternalError(absl::StrCat("node ", n.id, " cannot persist: ", s.message())));
      }
    }
    if (rd.hard_state.has_value()) {
      Record(checker_.OnPersistHardState(n.id, n.storage.hard_state(), *rd.hard_state));
      n.storage.SetHardState(*rd.hard_state);
    }
    for (raft::Message& m : rd.messages_after_persist) {
      Record(checker_.OnSend(n.id, m));
      in_flight_.push_back(std::move(m));
    }
    for (const raft::Entry& e : rd.committed_entries) {
      Record(checker_.OnApply(n.id, e));
      n.applied.push_back(e);
    }
    for (const raft::ReadState& rs : rd.read_states) {
      Record(checker_.OnReadState(n.id, rs, n.node->Status().commit));
      n.read_states.push_back(rs);
    }
    for (const std::string& ctx : rd.dropped_reads) {
      Record(checker_.OnReadDropped(n.id, ctx));
      n.dropped_reads.push_back(ctx);
    }
    n.node->Advance();
  }
  if (n.node == nullptr) return;
  if (auto s = n.node->CheckInvariants(); !s.ok()) {
    Record(absl::InternalError(absl::StrCat("node ", n.id, " CheckInvariants: ", s.message())));
  }
  Record(checker_.Observe(n.id, n.node->Status(), n.storage));
}

void TestCluster::Tick(uint64_t id) {
  TestNode& n = N(id);
  if (n.node == nullptr) return;
  n.node->Tick();
  HandleReady(n);
}

raft::ProposeResult TestCluster::Propose(uint64_t id, const std::string& data) {
  TestNode& n = N(id);
  checker_.OnPropose(data);
  if (n.node == nullptr) return raft::ProposeResult{};
  raft::ProposeResult r = n.node->Propose(data);
  HandleReady(n);
  return r;
}

raft::ProposeOutcome TestCluster::ReadIndex(uint64_t id, const std::string& context) {
  TestNode& n = N(id);
  if (n.node == nullptr) return raft::ProposeOutcome::kNotLeader;
  checker_.OnReadIssued(id, context);
  raft::ProposeOutcome o = n.node->ReadIndex(context);
  if (o != raft::ProposeOutcome::kAccepted) Record(checker_.OnReadDropped(id, context));
  HandleReady(n);
  return o;
}

absl::Status TestCluster::TransferLeadership(uint64_t id, uint64_t target) {
  TestNode& n = N(id);
  if (n.node == nullptr) return absl::UnavailableError(absl::StrCat("node ", id, " is down"));
  absl::Status s = n.node->TransferLeadership(target);
  HandleReady(n);
  return s;
}

void TestCluster::Isolate(uint64_t id) {
  for (const TestNode& other : nodes_) {
    if (other.id == id) continue;
    Cut(id, other.id);
    Cut(other.id, id);
  }
}

int TestCluster::Stabilize(int max_messages) {
  int delivered = 0;
  while (!in_flight_.empty() && delivered < max_messages) {
    std::vector<raft::Message> batch;
    batch.swap(in_flight_);
    for (const raft::Message& m : batch) {
      if (delivered >= max_messages) {
        in_flight_.push_back(m);  // keep the rest, in order
        continue;
      }
      if (DeliverOne(m)) ++delivered;
    }
  }
  return delivered;
}

bool TestCluster::DeliverOne(const raft::Message& m) {
  TestNode& to = N(m.to());
  if (to.node == nullptr || cut_.contains({m.from(), m.to()}) || (filter_ && !filter_(m))) {
    return false;
  }
  if (observer_) observer_(m);
  if (auto s = to.node->Step(m); !s.ok()) {
    Record(absl::InternalError(absl::StrCat("node ", m.to(), " rejects a message: ", s.message())));
  }
  HandleReady(to);
  return true;
}

int TestCluster::DeliverIf(const MessagePredicate& pred) {
  std::vector<raft::Message> batch;
  batch.swap(in_flight_);
  std::vector<raft::Message> kept;
  int delivered = 0;
  for (const raft::Message& m : batch) {
    if (!pred(m)) {
      kept.push_back(m);
    } else if (DeliverOne(m)) {
      ++delivered;
    }
  }
  // What the deliveries caused was sent after the messages kept back.
  kept.insert(kept.end(), in_flight_.begin(), in_flight_.end());
  in_flight_.swap(kept);
  return delivered;
}

int TestCluster::DropIf(const MessagePredicate& pred) {
  const size_t before = in_flight_.size();
  std::erase_if(in_flight_, pred);
  return static_cast<int>(before - in_flight_.size());
}

std::vector<uint64_t> TestCluster::All() const {
  std::vector<uint64_t> ids;
  for (const TestNode& n : nodes_) ids.push_back(n.id);
  return ids;
}

int TestCluster::TickUntil(const std::vector<uint64_t>& ids, const std::function<bool()>& done,
                           int max_ticks) {
  for (int t = 0; t < max_ticks; ++t) {
    if (done()) return t;
    for (uint64_t id : ids) Tick(id);
    Stabilize();
  }
  return done() ? max_ticks : -1;
}

bool TestCluster::Campaign(uint64_t id, int max_ticks) {
  return TickUntil(
             {id}, [&] { return Status(id).role == raft::Role::kLeader; }, max_ticks) >= 0;
}

uint64_t TestCluster::Leader() const {
  uint64_t best = 0, best_term = 0;
  for (const TestNode& n : nodes_) {
    if (n.node == nullptr) continue;
    raft::NodeStatus s = n.node->Status();
    if (s.role == raft::Role::kLeader && (best == 0 || s.term > best_term)) {
      best = n.id;
      best_term = s.term;
    }
  }
  return best;
}

void TestCluster::Crash(uint64_t id) {
  TestNode& n = N(id);
  n.node.reset();
  n.applied.clear();
  checker_.OnCrash(id);
}

void TestCluster::Restart(uint64_t id) {
  TestNode& n = N(id);
  if (n.node != nullptr) return;
  n.config.applied = 0;
  auto node = raft::Node::Create(n.config, &n.storage);
  if (!node.ok()) {
    Record(absl::InternalError(
        absl::StrCat("node ", id, " cannot restart: ", node.status().message())));
    return;
  }
  n.node = std::move(*node);
  checker_.OnRestart(id);
  HandleReady(n);
}

}  // namespace raftkv::sim
