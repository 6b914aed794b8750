// Applier: the apply thread. It owns the state machine's apply step, applies
// committed entries in log order, completes the writes waiting on them and
// serves linearizable reads once the state machine has applied up to their
// read index.
//
// Inputs arrive through one FIFO queue, so their order is the order the Raft
// thread produced them in: a write is always registered before the hand-off
// that commits its entry, and committed entries come before the read states of
// the same Ready. A follower's linearizable reads, once the leader has given
// their read index (AddReads, from the Raft thread), join the same queue. A
// hand-off that finds the thread idle and the queue empty is processed on the
// submitting thread instead, unless it is very big (one thread at a time
// processes, in queue order: busy_ below); so under a steady load the Raft
// thread does most applying itself. Serializable reads (index 0) are served
// on the caller's thread at once.
//
// Thread safety: the public methods may be called from any thread; the state
// under "owned by whichever thread set busy_" is touched by one thread at a
// time.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <thread>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "service/backend.h"
#include "service/client_cork.h"
#include "service/requests.h"

namespace raftkv::service {

class Applier {
 public:
  // `state_machine` must outlive the Applier.
  explicit Applier(StateMachineBackend* state_machine);
  ~Applier();
  Applier(const Applier&) = delete;
  Applier& operator=(const Applier&) = delete;

  // Answers to a batch go out through `cork` (see client_cork.h): held
  // while the batch is answered, then sent together. Optional; call before
  // Start() and before anything is submitted. `cork` must outlive the Applier.
  void set_client_cork(ClientCork* cork) { cork_ = cork; }

  void Start();
  // Joins the thread; waiters still pending are failed with UNAVAILABLE.
  void Stop();

  // The entry proposed at (index, term) belongs to `waiter`.
  struct WriteRegistration {
    uint64_t index, term;
    std::shared_ptr<WriteWaiter> waiter;
  };
  // Serve `waiters` once applied >= index (index 0: at once, serializable).
  struct ReadBatch {
    uint64_t index, term;
    std::vector<std::shared_ptr<ReadWaiter>> waiters;
  };
  // What the Raft thread hands over after a Ready, in one queue operation
  // (one wake-up of the apply thread), taken in this order: writes proposed
  // since the last hand-off (each registered before its entry can commit),
  // newly committed entries, then read states.
  struct Handoff {
    std::vector<WriteRegistration> writes;
    std::vector<raft::Entry> committed;
    std::vector<ReadBatch> reads;
    bool empty() const { return writes.empty() && committed.empty() && reads.empty(); }
  };
  void Submit(Handoff handoff);
  void AddReads(uint64_t index, uint64_t term, std::vector<std::shared_ptr<ReadWaiter>> waiters);
  // This node stopped being leader: writes still waiting may never commit
  // here; they are failed with UNAVAILABLE (outcome unknown, retry with the
  // same client id and sequence).
  void LeadershipLost();

  uint64_t applied_index() const { return applied_.load(std::memory_order_acquire); }

 private:
  struct Lost {};
  using Item = std::variant<Handoff, ReadBatch, Lost>;

  // Bytes of entry data a hand-off may carry and still be processed on the
  // submitting thread when the apply thread is idle. Not a speed setting (any
  // batch is cheaper applied where it is than handed over; see Submit()): it
  // bounds how long the Raft thread may spend away from heartbeats.
  static constexpr size_t kMaxInlineBytes = 4 << 20;

  void Push(Item item);
  static void FailItem(Item& item, const absl::Status& status);
  // Handles `items` in order. REQUIRES: this thread set busy_.
  void Process(std::vector<Item>& items);
  void Run();
  void ApplyEntries(const std::vector<raft::Entry>& entries);
  void ServeReads();
  // About how many calls Process(items) will answer.
  size_t AnswersDue(const std::vector<Item>& items) const;

  StateMachineBackend* const state_machine_;
  // Set before Start(); used (Hold/Release) only by whichever thread set
  // busy_, around Process().
  ClientCork* cork_ = nullptr;
  std::atomic<uint64_t> applied_{0};
  std::thread thread_;

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<Item> queue_ ABSL_GUARDED_BY(mu_);
  // Some thread is processing items. Whoever sets it owns the state below
  // until it clears it; items queued meanwhile wait for it.
  bool busy_ ABSL_GUARDED_BY(mu_) = false;

  // Owned by whichever thread set busy_ (the apply thread, or the Raft thread
  // processing a hand-off inline).
  struct PendingWrite {
    uint64_t term;
    std::shared_ptr<WriteWaiter> waiter;
  };
  std::map<uint64_t, PendingWrite> pending_writes_;  // by log index
  struct PendingRead {
    uint64_t term;
    std::shared_ptr<ReadWaiter> waiter;
  };
  std::multimap<uint64_t, PendingRead> pending_reads_;  // by read index
};

}  // namespace raftkv::service
