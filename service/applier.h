// Applier: the apply thread. It owns the state machine, applies committed
// entries in log order, completes the writes waiting on them and serves reads
// once the state machine has applied up to their read index.
//
// Inputs arrive through one FIFO queue, so their order is the order the Raft
// thread produced them in: a write is always registered before the Ready that
// commits its entry, and committed entries come before the read states of the
// same Ready. Reads forwarded by a follower (AddRead from any thread) join the
// same queue.
//
// Thread safety: the public methods may be called from any thread; everything
// in "apply thread only" below is touched by the apply thread alone.
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
#include "service/requests.h"

namespace raftkv::service {

class Applier {
 public:
  // `state_machine` must outlive the Applier.
  explicit Applier(StateMachineBackend* state_machine);
  ~Applier();
  Applier(const Applier&) = delete;
  Applier& operator=(const Applier&) = delete;

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

  void Push(Item item);
  static void FailItem(Item& item, const absl::Status& status);
  void Run();
  void ApplyEntries(const std::vector<raft::Entry>& entries);
  void ServeReads();

  StateMachineBackend* const state_machine_;
  std::atomic<uint64_t> applied_{0};
  std::thread thread_;

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<Item> queue_ ABSL_GUARDED_BY(mu_);

  // Apply thread only.
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
