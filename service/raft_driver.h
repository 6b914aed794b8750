// RaftDriver: the Raft thread. It is the only owner of the core (raft::Node)
// and of the log store, and drives them in the order node.h documents.
//
// The thread sleeps on one inbox (peer messages, proposals, reads, status
// queries) until something arrives or the next tick is due, drains everything
// queued, steps it into the core (all proposals of one wake-up end up in one
// Ready: one synced write however many clients), then handles Readys: send
// what may leave now, persist in one synced batch, send what depended on it,
// hand committed entries and read states to the apply thread, Advance().
// Linearizable reads that arrive in one wake-up share one ReadIndex round.
//
// Thread safety: the public input methods and the published-state getters may
// be called from any thread and never wait on the Raft thread's work (they
// take the inbox mutex only to append). Start()/Stop() from main() once.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "raft/node.h"
#include "service/applier.h"
#include "service/backend.h"
#include "service/requests.h"
#include "service/transport.h"

namespace raftkv::service {

struct DriverOptions {
  uint64_t id = 0;
  int tick_ms = 100;        // one core tick = one heartbeat interval
  int election_ticks = 10;  // election timeout in ticks
};

class RaftDriver {
 public:
  // `log`, `applier` and `transport` must outlive the driver.
  static absl::StatusOr<std::unique_ptr<RaftDriver>> Create(const DriverOptions& options,
                                                            LogBackend* log, Applier* applier,
                                                            Transport* transport);
  ~RaftDriver();
  RaftDriver(const RaftDriver&) = delete;
  RaftDriver& operator=(const RaftDriver&) = delete;

  void Start();
  // Joins the Raft thread; inputs still queued are failed with UNAVAILABLE.
  void Stop();

  // Inputs, from any thread.
  void DeliverPeerMessages(std::vector<raft::Message> messages);
  // `data` is a serialized Command. The waiter learns the outcome.
  void Propose(std::string data, std::shared_ptr<WriteWaiter> waiter);
  // A linearizable read through ReadIndex on this node (which must lead).
  void Read(std::shared_ptr<ReadWaiter> waiter);
  // `done` runs on the Raft thread with the core's status; it must not block.
  void QueryStatus(std::function<void(const raft::NodeStatus&)> done);

  // Published after every wake-up of the Raft thread; may lag by one wake-up.
  bool IsLeader() const { return is_leader_.load(std::memory_order_acquire); }
  uint64_t leader() const { return leader_.load(std::memory_order_acquire); }
  uint64_t term() const { return term_.load(std::memory_order_acquire); }
  uint64_t commit_index() const { return commit_.load(std::memory_order_acquire); }

 private:
  struct ProposeEvent {
    std::string data;
    std::shared_ptr<WriteWaiter> waiter;
  };
  struct ReadEvent {
    std::shared_ptr<ReadWaiter> waiter;
  };
  struct StatusEvent {
    std::function<void(const raft::NodeStatus&)> done;
  };
  using Event = std::variant<std::vector<raft::Message>, ProposeEvent, ReadEvent, StatusEvent>;

  RaftDriver(const DriverOptions& options, std::unique_ptr<raft::Node> node, LogBackend* log,
             Applier* applier, Transport* transport);
  void Push(Event event);
  void Run();
  void HandleEvents(std::vector<Event>& events);
  void HandleReadies();
  void Publish();
  static void FailEvent(Event& event, const absl::Status& status);

  const DriverOptions options_;
  LogBackend* const log_;
  Applier* const applier_;
  Transport* const transport_;
  std::thread thread_;

  std::atomic<bool> is_leader_{false};
  std::atomic<uint64_t> leader_{0};
  std::atomic<uint64_t> term_{0};
  std::atomic<uint64_t> commit_{0};

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<Event> inbox_ ABSL_GUARDED_BY(mu_);

  // Raft thread only.
  std::unique_ptr<raft::Node> node_;
  bool was_leader_ = false;
  raft::Role last_role_ = raft::Role::kFollower;
  uint64_t next_read_id_ = 0;
  std::map<std::string, std::vector<std::shared_ptr<ReadWaiter>>> reads_;  // by ReadIndex context
};

}  // namespace raftkv::service
