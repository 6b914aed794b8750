// TestCluster: a few raft::Node cores on a scripted in-memory network, for
// scenario tests that replay one exact sequence of events (the Raft paper's
// figure 8, a partitioned leader, a rejoining node, ...).
//
// It owns each node's MemoryStorage (its disk), the in-flight messages, the
// set of cut links, and what every node applied, answered and dropped. Every
// input (Tick, Propose, ReadIndex, TransferLeadership, a delivered message) is
// followed by the driver loop of node.h: send messages_send_now, persist,
// send messages_after_persist, apply, Advance. Nothing moves unless the test
// says so: messages sit in flight until Deliver*/Stabilize, and only the nodes
// a test ticks see time pass. A SafetyChecker (safety_checker.h) watches every
// step; Violation() returns the first broken property, core error or failed
// CheckInvariants().
//
// Node ids are 1..N. Not thread-safe: one test, one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "raft/memory_storage.h"
#include "raft/node.h"
#include "tests/sim/safety_checker.h"

namespace raftkv::sim {

class TestCluster {
 public:
  using MessagePredicate = std::function<bool(const raft::Message&)>;

  // `tweak` adjusts every node's Config (ids and random seeds are set first).
  explicit TestCluster(int nodes, const std::function<void(raft::Config&)>& tweak = nullptr);

  TestCluster(const TestCluster&) = delete;
  TestCluster& operator=(const TestCluster&) = delete;

  int size() const { return static_cast<int>(nodes_.size()); }
  raft::NodeStatus Status(uint64_t id) const;
  bool up(uint64_t id) const { return N(id).node != nullptr; }

  // ---- Inputs (each followed by the node's Ready handling) ----
  void Tick(uint64_t id);
  raft::ProposeResult Propose(uint64_t id, const std::string& data);
  raft::ProposeOutcome ReadIndex(uint64_t id, const std::string& context);
  absl::Status TransferLeadership(uint64_t id, uint64_t target);

  // ---- Network ----
  // Links cut here drop messages at delivery.
  void Cut(uint64_t from, uint64_t to) { cut_.insert({from, to}); }
  void Isolate(uint64_t id);
  void HealAll() { cut_.clear(); }
  // Only messages that pass `filter` are delivered; others are dropped at
  // delivery. nullptr allows everything.
  void SetFilter(MessagePredicate filter) { filter_ = std::move(filter); }
  // Called with every message as it is delivered.
  void SetObserver(std::function<void(const raft::Message&)> f) { observer_ = std::move(f); }
  const std::vector<raft::Message>& in_flight() const { return in_flight_; }

  // Delivers what is in flight, and what that causes, in send order until
  // nothing is left or `max_messages` were delivered. Returns the number
  // delivered.
  int Stabilize(int max_messages = 100000);
  // Delivers the in-flight messages matching `pred` once, in order, keeping
  // the others (and whatever the deliveries cause) in flight. Returns the
  // number delivered.
  int DeliverIf(const MessagePredicate& pred);
  // Drops every in-flight message matching `pred`; returns how many.
  int DropIf(const MessagePredicate& pred);

  // Ticks each node in `ids` once, then stabilizes, until `done()` holds or
  // `max_ticks` rounds passed. Returns the rounds used, or -1 on timeout.
  int TickUntil(const std::vector<uint64_t>& ids, const std::function<bool()>& done, int max_ticks);
  std::vector<uint64_t> All() const;
  // Ticks only `id` (stabilizing after each tick) until it is leader.
  bool Campaign(uint64_t id, int max_ticks = 100);
  // The node that is leader in the highest term, 0 if none.
  uint64_t Leader() const;

  // ---- Crashes ----
  // The node loses everything that is not in its MemoryStorage; messages to
  // it are dropped until it restarts.
  void Crash(uint64_t id);
  void Restart(uint64_t id);

  // ---- Observations ----
  const std::vector<raft::Entry>& applied(uint64_t id) const { return N(id).applied; }
  const std::vector<raft::ReadState>& read_states(uint64_t id) const { return N(id).read_states; }
  const std::vector<std::string>& dropped_reads(uint64_t id) const { return N(id).dropped_reads; }
  const raft::MemoryStorage& storage(uint64_t id) const { return N(id).storage; }
  // The first safety violation, core error or CheckInvariants failure.
  absl::Status Violation() const;

 private:
  struct TestNode {
    uint64_t id = 0;
    raft::Config config;
    raft::MemoryStorage storage;
    std::unique_ptr<raft::Node> node;
    std::vector<raft::Entry> applied;  // this incarnation
    std::vector<raft::ReadState> read_states;
    std::vector<std::string> dropped_reads;
  };

  TestNode& N(uint64_t id) { return nodes_[id - 1]; }
  const TestNode& N(uint64_t id) const { return nodes_[id - 1]; }
  void HandleReady(TestNode& n);
  // Delivers `m` unless its link is cut, its receiver is down or the filter
  // refuses it. Returns whether it was delivered.
  bool DeliverOne(const raft::Message& m);
  void Record(absl::Status s);

  std::vector<TestNode> nodes_;
  std::vector<raft::Message> in_flight_;
  std::set<std::pair<uint64_t, uint64_t>> cut_;
  MessagePredicate filter_;
  std::function<void(const raft::Message&)> observer_;
  SafetyChecker checker_;
  absl::Status error_;
};

}  // namespace raftkv::sim
