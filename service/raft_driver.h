// RaftDriver: the Raft thread. It is the only owner of the core (raft::Node)
// and of the log store, and drives them in the order node.h documents.
//
// The thread sleeps on the peer server's completion queue, which carries
// everything it reacts to: peer streams (the Transport runs on this thread),
// client calls too with --kv_threads=0 (KvService posts them there and their
// handlers run on this thread, pushing into the inbox like any other thread),
// a wake-up alarm that other threads fire after queueing work in the inbox
// (proposals, reads, status queries), the tick deadline, and, on a leader
// whose commit index has stood still for 2 ms, the moment to announce it to
// the followers (thrifty replication sends none on its own). Woken, it handles
// every completion already queued, drains the inbox and steps it all into the
// core (all proposals of one wake-up end up in one Ready: one synced write
// however many clients), then handles Readys: send what may leave now (a
// leader answers the clients of a commit-only Ready first),
// persist in one synced batch, send what depended on it, hand committed
// entries and read states to the Applier in one hand-off (it applies them
// on this thread when its own thread is idle), Advance(). Linearizable reads
// that arrive in one wake-up share one ReadIndex round (on a follower, one
// read-index request to the leader). Peer messages are
// stepped and answered on this thread, with no hand-off to another one.
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
#include "absl/time/time.h"
#include "grpcpp/alarm.h"
#include "grpcpp/grpcpp.h"
#include "raft/node.h"
#include "service/applier.h"
#include "service/backend.h"
#include "service/client_cork.h"
#include "service/cq_tag.h"
#include "service/requests.h"
#include "service/transport.h"

namespace raftkv::service {

struct DriverOptions {
  uint64_t id = 0;
  int tick_ms = 100;        // one core tick = one heartbeat interval
  int election_ticks = 10;  // election timeout in ticks
  bool thrifty_replication = true;  // raft::Config::thrifty_replication
  // After a turn in which this node, as leader, committed entries, while
  // its entries wait for acknowledgements, or while a lone read waits for its
  // heartbeat round, how long the Raft thread polls its queue (yielding
  // between polls) before it sleeps: the next writes or the acknowledgements
  // tend to come within tens of microseconds (--raft_poll_us; queue_poll.h).
  absl::Duration leader_poll = absl::Microseconds(200);
};

class RaftDriver {
 public:
  // `log`, `applier`, `transport` and `cq` must outlive the driver. `cq` is
  // the peer server's completion queue (that server has `transport`'s
  // service registered); the driver polls it, and shuts it down and drains
  // it in Stop().
  static absl::StatusOr<std::unique_ptr<RaftDriver>> Create(const DriverOptions& options,
                                                            LogBackend* log, Applier* applier,
                                                            Transport* transport,
                                                            grpc::ServerCompletionQueue* cq);
  ~RaftDriver();
  RaftDriver(const RaftDriver&) = delete;
  RaftDriver& operator=(const RaftDriver&) = delete;

  // Answers to the writes this node forwarded go out through `cork` (see
  // client_cork.h), held for each turn's batch of them. Before Start();
  // `cork` must outlive the driver.
  void set_client_cork(ClientCork* cork) { cork_ = cork; }
  void Start();
  // Joins the Raft thread; inputs still queued are failed with UNAVAILABLE.
  // REQUIRES: the peer server has been shut down (its calls use the queue).
  void Stop();

  // Inputs, from any thread.
  // `data` is a serialized Command. The waiter learns the outcome.
  void Propose(std::string data, std::shared_ptr<WriteWaiter> waiter);
  // Like Propose(), from any node: a follower carries the write to the
  // leader over the peer stream (ForwardRequest) and the waiter learns the
  // leader's answer; it fails UNAVAILABLE (outcome unknown) when the leader
  // changes first or no answer comes within kForwardTimeout. Unless
  // `want_prev_kv`, the leader's result comes back without the key's
  // previous value (less to send and parse; the client did not ask for it).
  void Forward(std::string data, std::shared_ptr<WriteWaiter> waiter, bool want_prev_kv);
  // A linearizable read, from any node. The leader confirms its leadership
  // (ReadIndex); a follower asks the leader for a read index over the peer
  // stream (ForwardReadRequest) and hands the answer to the applier. Reads
  // that arrive in one wake-up share one round either way. On a follower the
  // waiter fails UNAVAILABLE when the leader changes first or does not answer
  // within kForwardReadTimeout.
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
  struct ForwardEvent {
    std::string data;
    std::shared_ptr<WriteWaiter> waiter;
    bool want_prev_kv;
  };
  // A message produced off the Raft thread (an answer to a follower's
  // forwarded write or read-index request).
  struct SendEvent {
    raft::Message message;
  };
  using Event = std::variant<ProposeEvent, ReadEvent, StatusEvent, ForwardEvent, SendEvent>;

  // What the leader's answers to a follower's forwarded requests share: the
  // message to that follower, queued for the Raft thread.
  class ForwardedAnswer;
  // The leader's side of a forwarded write: answers the follower.
  class ForwardedWriteWaiter;
  // A write this follower forwarded, waiting for the leader's answer.
  struct ForwardedWrite {
    uint64_t leader;
    absl::Time expires;
    std::shared_ptr<WriteWaiter> waiter;
  };
  static constexpr absl::Duration kForwardTimeout = absl::Seconds(10);
  // The leader's side of a follower's read-index request: answers it.
  class ForwardedReadWaiter;
  // Reads this follower asked the leader a read index for.
  struct ForwardedReads {
    uint64_t leader;
    absl::Time expires;
    std::vector<std::shared_ptr<ReadWaiter>> waiters;
  };
  static constexpr absl::Duration kForwardReadTimeout = absl::Seconds(3);

  // Fired by Push() when the inbox turns non-empty; completes on the queue.
  class WakeTag final : public CqTag {
   public:
    explicit WakeTag(RaftDriver* driver) : driver_(driver) {}
    void OnComplete(bool ok) override;

   private:
    RaftDriver* const driver_;
  };

  RaftDriver(const DriverOptions& options, std::unique_ptr<raft::Node> node, LogBackend* log,
             Applier* applier, Transport* transport, grpc::ServerCompletionQueue* cq);
  void Push(Event event);
  void Wake() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run();
  // Cancels the peer streams, shuts the queue down and handles what is left
  // on it. Raft thread, or Stop() when that thread never ran.
  void ShutdownQueue();
  void HandleEvents(std::vector<Event>& events);
  // A message from a peer, which it may take apart: forwarded writes here,
  // everything else to the core.
  void Receive(raft::Message& m);
  void Propose(ProposeEvent& p);
  void Forward(ForwardEvent& f);
  // Reads of one wake-up: a ReadIndex round here, or one request to the leader.
  void Read(std::vector<std::shared_ptr<ReadWaiter>> reads);
  // Starts a ReadIndex round for `reads` (moved into reads_); false, leaving
  // them, when this node cannot (it does not lead).
  bool StartReadRound(std::vector<std::shared_ptr<ReadWaiter>>& reads);
  // A message from this node to `peer`, body unset.
  raft::Message MessageTo(uint64_t peer) const;
  void SendOne(raft::Message m);
  // The leader's answer to a follower's ForwardReadRequest.
  void AnswerForwardedRead(const raft::Message& request);
  void ForwardedReadAnswered(const v1::ForwardReadResponse& r);
  // Hands the leader's answers received this turn (forward_answers_) to
  // the waiting calls, with the client connections corked meanwhile.
  void AnswerForwardedWrites();
  // Fails forwarded writes and reads whose leader is no longer `leader`, or
  // (expired) that waited past their deadline.
  void FailForwarded(uint64_t leader, absl::Time now);
  void HandleReadies();
  // Completes the outbound writes already done, so that what queued behind
  // them goes out now rather than after a synced write; other completions
  // wait in deferred_ for the next turn of the loop.
  void CompleteSends();
  // Handles what CompleteSends() set aside; false if there was nothing.
  bool CompleteDeferred();
  void Publish();
  static void FailEvent(Event& event, const absl::Status& status);

  const DriverOptions options_;
  LogBackend* const log_;
  Applier* const applier_;
  Transport* const transport_;
  grpc::ServerCompletionQueue* const cq_;
  std::thread thread_;

  std::atomic<bool> is_leader_{false};
  std::atomic<uint64_t> leader_{0};
  std::atomic<uint64_t> term_{0};
  std::atomic<uint64_t> commit_{0};

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<Event> inbox_ ABSL_GUARDED_BY(mu_);
  // True from the moment a pusher fires wake_alarm_ until the Raft thread
  // takes the wake-up: at most one alarm is ever pending.
  bool wake_pending_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Alarm wake_alarm_;  // Set() only by whoever turned wake_pending_ true
  WakeTag wake_tag_{this};

  // Raft thread only.
  std::unique_ptr<raft::Node> node_;
  bool was_leader_ = false;
  raft::Role last_role_ = raft::Role::kFollower;
  uint64_t next_read_id_ = 0;
  std::map<std::string, std::vector<std::shared_ptr<ReadWaiter>>> reads_;  // by ReadIndex context
  // Accepted proposals not yet handed to the apply thread. They go with the
  // next hand-off that carries committed entries or reads (always ahead of
  // those), or ahead of the news that leadership was lost.
  std::vector<Applier::WriteRegistration> proposed_;
  uint64_t next_forward_id_ = 0;
  std::map<uint64_t, ForwardedWrite> forwarded_;  // by id; ids grow with time
  std::map<uint64_t, ForwardedReads> forwarded_reads_;  // by id, from next_forward_id_ too
  std::vector<v1::ForwardResponse> forward_answers_;  // see AnswerForwardedWrites()
  ClientCork* cork_ = nullptr;
  // Completions CompleteSends() took off the queue but may not handle while
  // a Ready is open; Run() handles them first thing on its next turn.
  std::vector<std::pair<CqTag*, bool>> deferred_;
};

}  // namespace raftkv::service
