#include "service/raft_driver.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "service/queue_poll.h"
#include "spdlog/spdlog.h"

namespace raftkv::service {

absl::StatusOr<std::unique_ptr<RaftDriver>> RaftDriver::Create(const DriverOptions& options,
                                                               LogBackend* log, Applier* applier,
                                                               Transport* transport,
                                                               grpc::ServerCompletionQueue* cq) {
  raft::Config config;
  config.id = options.id;
  config.election_ticks = options.election_ticks;
  config.heartbeat_ticks = 1;
  config.thrifty_replication = options.thrifty_replication;
  config.applied = applier->applied_index();
  config.random_seed =
      options.id * 0x9E3779B97F4A7C15ull ^ static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  absl::StatusOr<std::unique_ptr<raft::Node>> node = raft::Node::Create(config, log->view());
  if (!node.ok()) return node.status();
  return std::unique_ptr<RaftDriver>(
      new RaftDriver(options, std::move(*node), log, applier, transport, cq));
}

RaftDriver::RaftDriver(const DriverOptions& options, std::unique_ptr<raft::Node> node,
                       LogBackend* log, Applier* applier, Transport* transport,
                       grpc::ServerCompletionQueue* cq)
    : options_(options),
      log_(log),
      applier_(applier),
      transport_(transport),
      cq_(cq),
      node_(std::move(node)) {
  Publish();
}

RaftDriver::~RaftDriver() { Stop(); }

void RaftDriver::Start() {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "raftkv-raft");
    Run();
  });
}

void RaftDriver::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
    if (thread_.joinable()) Wake();
  }
  if (thread_.joinable()) {
    thread_.join();
  } else {
    ShutdownQueue();
  }
  std::vector<Event> rest;
  {
    absl::MutexLock lock(&mu_);
    rest.swap(inbox_);
  }
  absl::Status down = absl::UnavailableError("node is shutting down");
  for (Event& e : rest) FailEvent(e, down);
  for (auto& [ctx, waiters] : reads_) {
    for (auto& w : waiters) w->Failed(down);
  }
  reads_.clear();
  for (Applier::WriteRegistration& w : proposed_) w.waiter->Failed(down);
  proposed_.clear();
  for (auto& [id, f] : forwarded_) f.waiter->Failed(down);
  forwarded_.clear();
  for (auto& [id, f] : forwarded_reads_) {
    for (auto& w : f.waiters) w->Failed(down);
  }
  forwarded_reads_.clear();
}

void RaftDriver::FailEvent(Event& event, const absl::Status& status) {
  if (auto* p = std::get_if<ProposeEvent>(&event)) p->waiter->Failed(status);
  if (auto* f = std::get_if<ForwardEvent>(&event)) f->waiter->Failed(status);
  if (auto* r = std::get_if<ReadEvent>(&event)) r->waiter->Failed(status);
}

void RaftDriver::Push(Event event) {
  absl::MutexLock lock(&mu_);
  if (stop_) {
    FailEvent(event, absl::UnavailableError("node is shutting down"));
    return;
  }
  inbox_.push_back(std::move(event));
  Wake();
}

void RaftDriver::Wake() {
  if (wake_pending_) return;
  wake_pending_ = true;
  // An alarm already due completes at once and kicks the thread polling the
  // queue out of its wait. Set under mu_: once Run() has seen stop_, no alarm
  // can be set on the queue it is about to shut down.
  wake_alarm_.Set(cq_, gpr_inf_past(GPR_CLOCK_MONOTONIC), &wake_tag_);
}

void RaftDriver::WakeTag::OnComplete(bool) {
  // The inbox is swapped by Run() after the completions of this wake-up;
  // from here on a new push needs a new alarm.
  absl::MutexLock lock(&driver_->mu_);
  driver_->wake_pending_ = false;
}

void RaftDriver::Propose(std::string data, std::shared_ptr<WriteWaiter> waiter) {
  Push(ProposeEvent{std::move(data), std::move(waiter)});
}

void RaftDriver::Forward(std::string data, std::shared_ptr<WriteWaiter> waiter,
                         bool want_prev_kv) {
  Push(ForwardEvent{std::move(data), std::move(waiter), want_prev_kv});
}

void RaftDriver::Read(std::shared_ptr<ReadWaiter> waiter) { Push(ReadEvent{std::move(waiter)}); }

// Any thread may answer (the apply or Raft thread); the answer is queued for
// the Raft thread, which alone may write to the peer streams.
class RaftDriver::ForwardedAnswer {
 public:
  ForwardedAnswer(RaftDriver* driver, uint64_t follower, uint64_t id)
      : driver_(driver), follower_(follower), id_(id) {}

 protected:
  // Sends a message to the follower whose answer `fill` writes; `mutable_r`
  // picks the response body (ForwardResponse or ForwardReadResponse), which
  // gets the request's id.
  template <typename Response, typename Fill>
  void Answer(Response* (raft::Message::*mutable_r)(), Fill fill) const {
    raft::Message m = driver_->MessageTo(follower_);
    Response* r = (m.*mutable_r)();
    r->set_id(id_);
    fill(r);
    driver_->Push(SendEvent{std::move(m)});
  }
  template <typename Response>
  void AnswerError(Response* (raft::Message::*mutable_r)(), const absl::Status& status) const {
    Answer(mutable_r, [&](Response* r) {
      r->set_error_code(static_cast<int32_t>(status.code()));
      r->set_error_message(std::string(status.message()));
    });
  }

 private:
  RaftDriver* const driver_;
  const uint64_t follower_;
  const uint64_t id_;
};

// Answers a forwarded write once it is applied here or failed.
class RaftDriver::ForwardedWriteWaiter final : public WriteWaiter, ForwardedAnswer {
 public:
  ForwardedWriteWaiter(RaftDriver* driver, uint64_t follower, uint64_t id, bool omit_prev_kv)
      : ForwardedAnswer(driver, follower, id), omit_prev_kv_(omit_prev_kv) {}

  void Applied(const v1::CommandResult& result, uint64_t term) override {
    Answer(&raft::Message::mutable_forward_response, [&](v1::ForwardResponse* r) {
      r->set_applied(true);
      r->set_term(term);
      if (omit_prev_kv_ && result.has_prev_kv()) {
        v1::CommandResult without = result;
        without.clear_prev_kv();
        without.SerializeToString(r->mutable_result());
      } else {
        result.SerializeToString(r->mutable_result());
      }
    });
  }
  void Failed(const absl::Status& status) override {
    AnswerError(&raft::Message::mutable_forward_response, status);
  }
  bool WantsPrevKv() const override { return !omit_prev_kv_; }

 private:
  const bool omit_prev_kv_;
};

// Answers a follower's read-index request once this leader has confirmed
// the index (Serve, from the apply thread, without waiting for the apply) or
// cannot (Failed).
class RaftDriver::ForwardedReadWaiter final : public ReadWaiter, ForwardedAnswer {
 public:
  using ForwardedAnswer::ForwardedAnswer;

  bool NeedsApply() const override { return false; }
  void Serve(uint64_t index, uint64_t term, const KvStore*) override {
    Answer(&raft::Message::mutable_forward_read_response, [&](v1::ForwardReadResponse* r) {
      r->set_ok(true);
      r->set_index(index);
      r->set_term(term);
    });
  }
  void Failed(const absl::Status& status) override {
    AnswerError(&raft::Message::mutable_forward_read_response, status);
  }
};

void RaftDriver::QueryStatus(std::function<void(const raft::NodeStatus&)> done) {
  Push(StatusEvent{std::move(done)});
}

void RaftDriver::Run() {
  transport_->Start(cq_, [this](raft::Message& m) { Receive(m); });
  const absl::Duration tick = absl::Milliseconds(options_.tick_ms);
  absl::Time next_tick = absl::Now() + tick;
  std::vector<Event> events;
  // Completions handled per wake-up before the core's output is handled:
  // enough to batch a burst, few enough to keep latency bounded.
  constexpr int kMaxCompletionsPerWake = 256;
  const gpr_timespec no_wait = gpr_inf_past(GPR_CLOCK_MONOTONIC);
  bool reads_resumed = false;
  // Thrifty replication leaves a commit index unannounced until the next
  // append or heartbeat. Once it has stood still for kAnnounceCommitAfter,
  // the followers are told (AnnounceCommit), so that when writes pause their
  // state machines do not wait a heartbeat for the last ones. Back-to-back
  // writes move it sooner than that, and their appends carry it.
  constexpr absl::Duration kAnnounceCommitAfter = absl::Milliseconds(2);
  uint64_t commit_seen = 0;
  absl::Time announce_at = absl::InfiniteFuture();
  // How long the next wait on the queue polls before it sleeps.
  absl::Duration poll = absl::ZeroDuration();
  while (true) {
    void* tag;
    bool ok;
    // A leader holds the next read of each peer stream it read in this turn
    // until the turn's answers (to clients, and appends) are out, since
    // posting a read sends a window update first (transport.h). A turn after
    // reads were re-posted drains what was already buffered on those streams
    // into one Ready, re-posting at once, so a backlog still batches. A
    // follower re-posts at once: its window update, sent after its answer,
    // would reach the leader after the leader went back to sleep and wake it
    // for nothing (docs/benchmarks.md: measured on every node, no clear gain).
    transport_->set_defer_reads(!reads_resumed && was_leader_);
    // Completions set aside during the last Ready come first; the queue is
    // then only checked, not waited on, since they may have produced work.
    const bool had_deferred = CompleteDeferred() || reads_resumed;
    grpc::CompletionQueue::NextStatus next;
    if (had_deferred) {
      next = cq_->AsyncNext(&tag, &ok, no_wait);
    } else {
      next = PollThenWaitUntil(cq_, &tag, &ok, poll, std::min(next_tick, announce_at));
      poll = absl::ZeroDuration();
    }
    for (int n = 0; next == grpc::CompletionQueue::GOT_EVENT; ++n) {
      static_cast<CqTag*>(tag)->OnComplete(ok);
      if (n + 1 == kMaxCompletionsPerWake) break;
      next = cq_->AsyncNext(&tag, &ok, no_wait);
    }
    AnswerForwardedWrites();
    {
      absl::MutexLock lock(&mu_);
      if (stop_) break;
      events.swap(inbox_);
    }
    absl::Time now = absl::Now();
    if (now >= announce_at) {
      node_->AnnounceCommit();
      announce_at = absl::InfiniteFuture();
    }
    if (now >= next_tick) {
      if (!forwarded_.empty() || !forwarded_reads_.empty()) {
        FailForwarded(node_->Summary().leader, now);
      }
      node_->Tick();
      next_tick += tick;
      // After a stall (a paused process, an overloaded machine) do not fire a
      // burst of ticks: that would time out elections nobody missed.
      if (next_tick <= now) next_tick = now + tick;
    }
    HandleEvents(events);
    events.clear();
    HandleReadies();
    reads_resumed = transport_->ResumeReads();
    Publish();
    const uint64_t commit = commit_.load(std::memory_order_relaxed);
    // A leader expects its next event within tens of microseconds after a
    // turn that committed entries (the clients just answered send their next
    // writes at once), while entries wait for acknowledgements (a follower's
    // fsync away), and while a lone read waits for its heartbeat round (a
    // follower's round trip away; the follower's window update comes first
    // and, to a sleeping thread, is a wake-up of its own). Polling for it
    // saves this thread a wake-up, which on a VM whose idle vCPUs halt is a
    // trip through the host: 1 client's puts +13%, linearizable reads +50%
    // (docs/benchmarks.md). A thread that is busy anyway (under load) rarely
    // finds its queue empty, so this costs it little. A round of several
    // reads does not poll: many clients' reads gather into fewer rounds
    // while the thread sleeps.
    const bool lone_read_waits = reads_.size() == 1 && reads_.begin()->second.size() == 1;
    if (was_leader_ &&
        (commit != commit_seen || log_->view()->LastIndex() > commit || lone_read_waits)) {
      poll = options_.leader_poll;
    }
    if (commit != commit_seen) {
      commit_seen = commit;
      // Without thrifty replication commits are announced at once: no timer.
      announce_at = was_leader_ && options_.thrifty_replication ? now + kAnnounceCommitAfter
                                                                : absl::InfiniteFuture();
    }
  }
  ShutdownQueue();
}

void RaftDriver::CompleteSends() {
  void* tag;
  bool ok;
  const gpr_timespec no_wait = gpr_inf_past(GPR_CLOCK_MONOTONIC);
  // Bounded like Run()'s own drain: a flood of inbound traffic must not
  // hold the Ready open.
  for (int n = 0; n < 256 && cq_->AsyncNext(&tag, &ok, no_wait) == grpc::CompletionQueue::GOT_EVENT;
       ++n) {
    auto* t = static_cast<CqTag*>(tag);
    if (t->OnlySends()) {
      t->OnComplete(ok);
    } else {
      deferred_.emplace_back(t, ok);
    }
  }
}

bool RaftDriver::CompleteDeferred() {
  if (deferred_.empty()) return false;
  std::vector<std::pair<CqTag*, bool>> deferred;
  deferred.swap(deferred_);
  for (auto [t, ok] : deferred) t->OnComplete(ok);
  return true;
}

void RaftDriver::ShutdownQueue() {
  CompleteDeferred();
  transport_->Shutdown();
  cq_->Shutdown();
  void* tag;
  bool ok;
  while (cq_->Next(&tag, &ok)) static_cast<CqTag*>(tag)->OnComplete(ok);
  AnswerForwardedWrites();
}

void RaftDriver::Propose(ProposeEvent& p) {
  raft::ProposeResult r = node_->Propose(std::move(p.data));
  switch (r.outcome) {
    case raft::ProposeOutcome::kAccepted:
      proposed_.push_back({r.index, r.term, std::move(p.waiter)});
      break;
    case raft::ProposeOutcome::kNotLeader:
      p.waiter->Failed(absl::UnavailableError("this node is not the leader"));
      break;
    case raft::ProposeOutcome::kTransferring:
      p.waiter->Failed(absl::UnavailableError("leadership transfer in progress; retry"));
      break;
  }
}

void RaftDriver::Forward(ForwardEvent& f) {
  const raft::NodeSummary st = node_->Summary();
  if (st.role == raft::Role::kLeader) {
    ProposeEvent p{std::move(f.data), std::move(f.waiter)};
    Propose(p);
    return;
  }
  if (st.leader == 0 || st.leader == options_.id) {
    f.waiter->Failed(absl::UnavailableError("no leader to forward the write to"));
    return;
  }
  const uint64_t id = ++next_forward_id_;
  forwarded_[id] = ForwardedWrite{st.leader, absl::Now() + kForwardTimeout, std::move(f.waiter)};
  raft::Message m = MessageTo(st.leader);
  v1::ForwardRequest* req = m.mutable_forward_request();
  req->set_id(id);
  req->set_command(std::move(f.data));
  req->set_omit_prev_kv(!f.want_prev_kv);
  SendOne(std::move(m));
}

raft::Message RaftDriver::MessageTo(uint64_t peer) const {
  raft::Message m;
  m.set_from(options_.id);
  m.set_to(peer);
  return m;
}

void RaftDriver::SendOne(raft::Message m) {
  std::vector<raft::Message> out;
  out.push_back(std::move(m));
  transport_->Send(std::move(out));
}

void RaftDriver::Receive(raft::Message& m) {
  if (m.has_forward_request()) {
    // The follower's answer goes back whatever happens: it waits for it.
    auto waiter = std::make_shared<ForwardedWriteWaiter>(this, m.from(), m.forward_request().id(),
                                                         m.forward_request().omit_prev_kv());
    ProposeEvent p{std::move(*m.mutable_forward_request()->mutable_command()), waiter};
    Propose(p);
    return;
  }
  if (m.has_forward_response()) {
    forward_answers_.push_back(std::move(*m.mutable_forward_response()));
    return;
  }
  if (m.has_forward_read_request()) {
    AnswerForwardedRead(m);
    return;
  }
  if (m.has_forward_read_response()) {
    ForwardedReadAnswered(m.forward_read_response());
    return;
  }
  const uint64_t from = m.from();
  if (absl::Status s = node_->Step(std::move(m)); !s.ok()) {
    spdlog::warn("dropped a malformed message from node {}: {}", from, s.ToString());
  }
}

void RaftDriver::AnswerForwardedWrites() {
  if (forward_answers_.empty()) return;
  // Answered one by one, each answer would leave in a segment of its own
  // (client_cork.h); the leader answers a follower's writes in batches.
  if (cork_ != nullptr) cork_->Hold(forward_answers_.size());
  for (const v1::ForwardResponse& r : forward_answers_) {
    auto it = forwarded_.find(r.id());
    if (it == forwarded_.end()) continue;  // failed here already (timeout, new leader)
    std::shared_ptr<WriteWaiter> waiter = std::move(it->second.waiter);
    forwarded_.erase(it);
    v1::CommandResult result;
    if (r.applied() && result.ParseFromString(r.result())) {
      waiter->Applied(result, r.term());
    } else if (r.applied()) {
      waiter->Failed(absl::InternalError("the leader's answer to a forwarded write is malformed"));
    } else {
      const auto code = static_cast<absl::StatusCode>(r.error_code());
      waiter->Failed(absl::Status(code == absl::StatusCode::kOk ? absl::StatusCode::kUnknown : code,
                                  r.error_message()));
    }
  }
  forward_answers_.clear();
  if (cork_ != nullptr) cork_->Release();
}

bool RaftDriver::StartReadRound(std::vector<std::shared_ptr<ReadWaiter>>& reads) {
  std::string ctx = absl::StrCat(++next_read_id_);
  if (node_->ReadIndex(ctx) != raft::ProposeOutcome::kAccepted) return false;
  reads_[ctx] = std::move(reads);
  return true;
}

void RaftDriver::Read(std::vector<std::shared_ptr<ReadWaiter>> reads) {
  const raft::NodeSummary st = node_->Summary();
  if (st.role == raft::Role::kLeader) {
    if (!StartReadRound(reads)) {
      for (auto& w : reads) w->Failed(absl::UnavailableError("this node is not the leader"));
    }
    return;
  }
  if (st.leader == 0 || st.leader == options_.id) {
    for (auto& w : reads) w->Failed(absl::UnavailableError("no leader to get a read index from"));
    return;
  }
  const uint64_t id = ++next_forward_id_;
  forwarded_reads_[id] =
      ForwardedReads{st.leader, absl::Now() + kForwardReadTimeout, std::move(reads)};
  raft::Message m = MessageTo(st.leader);
  m.mutable_forward_read_request()->set_id(id);
  SendOne(std::move(m));
}

void RaftDriver::AnswerForwardedRead(const raft::Message& request) {
  // Not re-forwarded when this node does not lead: the follower asks again.
  std::vector<std::shared_ptr<ReadWaiter>> reads{std::make_shared<ForwardedReadWaiter>(
      this, request.from(), request.forward_read_request().id())};
  if (!StartReadRound(reads)) {
    reads[0]->Failed(absl::UnavailableError("this node is not the leader"));
    return;
  }
  // The follower serves the read once it has applied up to the read index:
  // a follower that gets entries only with heartbeats gets them now.
  node_->SendEntriesNow(request.from());
}

void RaftDriver::ForwardedReadAnswered(const v1::ForwardReadResponse& r) {
  auto it = forwarded_reads_.find(r.id());
  if (it == forwarded_reads_.end()) return;  // failed here already (timeout, new leader)
  std::vector<std::shared_ptr<ReadWaiter>> waiters = std::move(it->second.waiters);
  forwarded_reads_.erase(it);
  if (r.ok()) {
    applier_->AddReads(r.index(), r.term(), std::move(waiters));
    return;
  }
  const auto code = static_cast<absl::StatusCode>(r.error_code());
  absl::Status s(code == absl::StatusCode::kOk ? absl::StatusCode::kUnknown : code,
                 "getting a read index from the leader failed: " + r.error_message());
  for (auto& w : waiters) w->Failed(s);
}

void RaftDriver::FailForwarded(uint64_t leader, absl::Time now) {
  for (auto it = forwarded_.begin(); it != forwarded_.end();) {
    if (it->second.leader != leader) {
      it->second.waiter->Failed(absl::UnavailableError(
          "leadership changed while the write was forwarded; it may or may not be applied "
          "(retry with the same client_id and sequence)"));
    } else if (it->second.expires <= now) {
      it->second.waiter->Failed(absl::UnavailableError(
          "the leader did not answer a forwarded write in time; it may or may not be applied "
          "(retry with the same client_id and sequence)"));
    } else {
      ++it;
      continue;
    }
    it = forwarded_.erase(it);
  }
  for (auto it = forwarded_reads_.begin(); it != forwarded_reads_.end();) {
    absl::Status s;
    if (it->second.leader != leader) {
      s = absl::UnavailableError("leadership changed before the leader confirmed a read index");
    } else if (it->second.expires <= now) {
      s = absl::UnavailableError("the leader did not confirm a read index in time");
    } else {
      ++it;
      continue;
    }
    for (auto& w : it->second.waiters) w->Failed(s);
    it = forwarded_reads_.erase(it);
  }
}

void RaftDriver::HandleEvents(std::vector<Event>& events) {
  std::vector<std::shared_ptr<ReadWaiter>> reads;
  for (Event& event : events) {
    if (auto* p = std::get_if<ProposeEvent>(&event)) {
      Propose(*p);
    } else if (auto* f = std::get_if<ForwardEvent>(&event)) {
      Forward(*f);
    } else if (auto* m = std::get_if<SendEvent>(&event)) {
      SendOne(std::move(m->message));
    } else if (auto* r = std::get_if<ReadEvent>(&event)) {
      reads.push_back(std::move(r->waiter));
    } else if (auto* s = std::get_if<StatusEvent>(&event)) {
      s->done(node_->Status());
    }
  }
  if (!reads.empty()) Read(std::move(reads));
}

void RaftDriver::HandleReadies() {
  while (node_->HasReady()) {
    raft::Ready rd = node_->GetReady();
    // Everything for the apply thread goes in one hand-off, before the write
    // when that write is only a new commit index (no entries, no sync): the
    // committed entries are already durable here, and applying them need not
    // wait for a bookkeeping write.
    // Registrations alone wait for the next hand-off with entries or reads:
    // waking the apply thread only to file them would cost a wake-up per
    // Ready for nothing.
    Applier::Handoff handoff;
    const bool for_applier = !rd.committed_entries.empty() || !rd.read_states.empty();
    if (for_applier) {
      handoff.writes = std::move(proposed_);
      proposed_.clear();
    }
    handoff.committed = std::move(rd.committed_entries);
    const uint64_t term = rd.read_states.empty() ? 0 : node_->Summary().term;
    for (raft::ReadState& rs : rd.read_states) {
      auto it = reads_.find(rs.context);
      if (it == reads_.end()) continue;
      handoff.reads.push_back({rs.index, term, std::move(it->second)});
      reads_.erase(it);
    }
    const bool commit_only = rd.entries.empty() && !rd.snapshot.has_value() && !rd.must_sync;
    // A leader's commit-only Ready, while no read waits for a heartbeat
    // round, sends nothing a client waits for (new commit indexes, plain
    // heartbeats): the answers, applied here unless the apply thread is busy,
    // go out first (one client's puts +15% in raftkv-bench: the woken
    // followers no longer run ahead of them). A follower's may hold the
    // acknowledgements the leader waits for: those go first.
    const bool answer_first = commit_only && !handoff.empty() && reads_.empty() &&
                              node_->Summary().role == raft::Role::kLeader;
    if (answer_first) applier_->Submit(std::move(handoff));
    if (!rd.messages_send_now.empty()) transport_->Send(std::move(rd.messages_send_now));
    if (commit_only && !answer_first) applier_->Submit(std::move(handoff));
    // A message to a peer whose previous write has not been seen to
    // complete waits in its queue: let it go before the thread blocks in a
    // synced write, and let the acknowledgements go as soon as it returns.
    if (rd.must_sync && transport_->WaitingOnWrite(/*queued=*/true)) CompleteSends();
    if (rd.MustPersist()) {
      if (absl::Status s = log_->Save(std::move(rd.entries), rd.hard_state, rd.must_sync);
          !s.ok()) {
        // Acknowledging anything now could lose acknowledged writes.
        spdlog::critical("persisting the Raft log failed: {}", s.ToString());
        std::abort();
      }
    }
    if (!rd.messages_after_persist.empty()) {
      if (rd.must_sync && transport_->WaitingOnWrite(/*queued=*/false)) CompleteSends();
      transport_->Send(std::move(rd.messages_after_persist));
      // The leader these acknowledgements are for may be waiting for this
      // very core: the disk's completion wakes this thread where the
      // leader polls, and a polling thread is runnable, not idle, so the
      // scheduler lets this one preempt it. Without the yield this thread
      // kept the core for the rest of its turn (the apply, a poll) while
      // its acknowledgement sat unread: a median 43 us in the three of four
      // lone puts where the two shared a vCPU (docs/benchmarks.md). Where
      // nothing else waits for the core it is a cheap system call.
      if (rd.must_sync) sched_yield();
    }
    if (!commit_only) applier_->Submit(std::move(handoff));
    for (const std::string& ctx : rd.dropped_reads) {
      auto it = reads_.find(ctx);
      if (it == reads_.end()) continue;
      for (auto& w : it->second) {
        w->Failed(absl::UnavailableError("leadership changed before the read could be served"));
      }
      reads_.erase(it);
    }
    node_->Advance();
  }
}

void RaftDriver::Publish() {
  const raft::NodeSummary st = node_->Summary();
  const bool leader = st.role == raft::Role::kLeader;
  if (was_leader_ && !leader) {
    // The apply thread fails every write it knows of: hand it the rest first.
    Applier::Handoff handoff;
    handoff.writes = std::move(proposed_);
    proposed_.clear();
    applier_->Submit(std::move(handoff));
    applier_->LeadershipLost();
    for (auto& [ctx, waiters] : reads_) {
      for (auto& w : waiters) {
        w->Failed(absl::UnavailableError("leadership changed before the read could be served"));
      }
    }
    reads_.clear();
    spdlog::info("node {} is no longer leader (term {})", options_.id, st.term);
  } else if (!was_leader_ && leader) {
    spdlog::info("node {} became leader in term {}", options_.id, st.term);
  }
  if ((!forwarded_.empty() || !forwarded_reads_.empty()) &&
      st.leader != leader_.load(std::memory_order_relaxed)) {
    FailForwarded(st.leader, absl::InfinitePast());
  }
  if (st.role != last_role_ || st.term != term_.load(std::memory_order_relaxed) ||
      st.leader != leader_.load(std::memory_order_relaxed)) {
    spdlog::info("{} in term {}, leader {}", raft::RoleName(st.role), st.term, st.leader);
    last_role_ = st.role;
  }
  was_leader_ = leader;
  is_leader_.store(leader, std::memory_order_release);
  leader_.store(st.leader, std::memory_order_release);
  term_.store(st.term, std::memory_order_release);
  commit_.store(st.commit, std::memory_order_release);
}

}  // namespace raftkv::service
