#include "service/kv_service.h"

#include <pthread.h>

#include <chrono>
#include <functional>
#include <optional>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "service/cq_tag.h"
#include "service/queue_poll.h"
#include "spdlog/spdlog.h"

namespace raftkv::service {
namespace {

// Set when a call settles on this thread, cleared when the thread next
// waits on its queue: the KV thread then polls for a while before sleeping,
// since that call's client is likely to send its next request at once
// (--kv_poll_us). Only the settling thread reads or writes its own copy;
// with --kv_threads=0 that is the Raft thread, which sets it and never reads it.
thread_local bool t_call_settled = false;

constexpr char kLeaderMetadata[] = "raftkv-leader";
constexpr char kForwardedMetadata[] = "raftkv-forwarded";
// etcd's limit: refuse new writes when apply lags commit by this much.
constexpr uint64_t kMaxApplyLag = 5000;
constexpr int64_t kMaxRangeLimit = 10000;

grpc::Status Invalid(const std::string& msg) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, msg);
}

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

bool IsForwarded(const grpc::ServerContextBase& ctx) {
  return ctx.client_metadata().count(kForwardedMetadata) > 0;
}

// The smallest key greater than every key starting with `prefix` ("" = none).
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    unsigned char c = static_cast<unsigned char>(prefix.back());
    if (c != 0xff) {
      prefix.back() = static_cast<char>(c + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return "";
}

// Context every handler shares: leader hints and error conversion.
struct Hints {
  const NodeConfig& config;
  const RaftDriver* driver;

  std::string LeaderAddr() const {
    uint64_t leader = driver->leader();
    auto it = config.members.find(leader);
    return leader == 0 || it == config.members.end() ? "" : it->second.client_addr;
  }
  // UNAVAILABLE gets the leader's client address in the message and, through
  // *leader_addr, in the trailing metadata; other codes pass unchanged.
  grpc::Status Decorate(const grpc::Status& s, std::string* leader_addr) const {
    leader_addr->clear();
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return s;
    uint64_t leader = driver->leader();
    auto it = config.members.find(leader);
    std::string addr = leader == 0 || it == config.members.end() ? "" : it->second.client_addr;
    std::string msg = s.error_message();
    if (leader != 0 && leader != config.id && !addr.empty()) {
      absl::StrAppend(&msg, " (leader: node ", leader, " at ", addr, ")");
    } else if (leader == 0) {
      absl::StrAppend(&msg, " (no leader is known; the cluster may have lost its quorum)");
    }
    *leader_addr = leader != config.id ? addr : config.self().client_addr;
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, msg);
  }
};

grpc::Status CheckKey(const std::string& key, const NodeConfig& config) {
  if (key.empty()) return Invalid("key is empty");
  if (key.size() > config.max_key_bytes) {
    return Invalid(
        absl::StrCat("key is ", key.size(), " bytes; the limit is ", config.max_key_bytes));
  }
  return grpc::Status::OK;
}

grpc::Status CheckValue(const std::string& value, const NodeConfig& config) {
  if (value.size() > config.max_value_bytes) {
    return Invalid(
        absl::StrCat("value is ", value.size(), " bytes; the limit is ", config.max_value_bytes));
  }
  return grpc::Status::OK;
}

grpc::Status CheckSession(uint64_t client_id, uint64_t sequence) {
  if (client_id != 0 && sequence == 0) {
    return Invalid("a write with a client_id needs a sequence >= 1");
  }
  return grpc::Status::OK;
}

// Turns an applied CommandResult into a status; OK results are filled by `fill`.
grpc::Status ResultStatus(const v1::CommandResult& r) {
  switch (r.code()) {
    case v1::CommandResult::OK:
    case v1::CommandResult::NOT_FOUND:
      return grpc::Status::OK;
    case v1::CommandResult::COMPARE_FAILED: {
      std::string msg = "compare failed";
      if (r.has_prev_kv()) {
        absl::StrAppend(&msg, ": current mod_revision is ", r.prev_kv().mod_revision());
      } else {
        absl::StrAppend(&msg, ": the key does not exist");
      }
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, msg);
    }
    case v1::CommandResult::INVALID:
    default:
      return Invalid(r.error().empty() ? "invalid command" : r.error());
  }
}

}  // namespace

// ---- raftkv.v1.KV, raftkv.v1.Cluster and grpc.health.v1.Health on
// completion queues (see kv_service.h) ----

// An open Watch stream: told when the serving status changes.
class HealthWatcher {
 public:
  virtual ~HealthWatcher() = default;
  // Under State::health_mu.
  virtual void StatusChanged() = 0;
};

struct KvService::State {
  State(const NodeConfig& config, RaftDriver* driver, Applier* applier)
      : config(config), driver(driver), applier(applier) {}

  void Run(size_t index);
  void PostAll(grpc::ServerCompletionQueue* cq);
  // A call object will get no more tags from its queue.
  void Released() {
    if (live.fetch_sub(1) == 1 && stopping.load()) {
      absl::MutexLock lock(&mu);  // its release re-evaluates Shutdown()'s condition
    }
  }
  // What a health check answers for `service` ("" = the whole server).
  grpc::health::v1::HealthCheckResponse::ServingStatus HealthOf(const std::string& service) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(health_mu);

  const NodeConfig& config;
  RaftDriver* const driver;
  Applier* const applier;

  // Set up by Register() and Start() before any call arrives; then constant.
  v1::KV::AsyncService kv;
  v1::Cluster::AsyncService cluster;
  grpc::health::v1::Health::AsyncService health;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs;  // one per KV thread
  std::vector<std::thread> threads;
  // With --kv_threads=0: the Raft thread's queue, which its thread polls and
  // on which every call is posted and completed; no KV thread runs.
  grpc::ServerCompletionQueue* raft_cq = nullptr;

  // Calls started (their request arrived) and not yet settled: what
  // --max_pending_requests limits.
  std::atomic<int> pending{0};
  // Call objects their queue may still return a tag for: posted requests and
  // pending calls. Shutdown() waits for zero.
  std::atomic<int> live{0};
  // Set by Shutdown(): requests that arrive are no longer replaced by new ones.
  std::atomic<bool> stopping{false};
  absl::Mutex mu;  // guards nothing; Shutdown() waits on it for `live` to drop to zero

  absl::Mutex health_mu;
  bool serving ABSL_GUARDED_BY(health_mu) = false;
  // Set by SetServing(false) at shutdown: open watches end, new ones are refused.
  bool health_closed ABSL_GUARDED_BY(health_mu) = false;
  std::set<HealthWatcher*> watches ABSL_GUARDED_BY(health_mu);
};

namespace {

// What a call's queue tag stands for.
enum Event { kRequest = 0, kDone = 1, kFinish = 2, kWrite = 3 };
// Requests of each method kept posted on each queue, so that calls arriving
// together are matched at once rather than queued inside gRPC.
constexpr int kPostedPerMethod = 8;

// What the queue threads see of a call. Everything but Claim() and what a
// claimant uses runs on the queue's thread only.
class CallBase {
 public:
  CallBase(KvService::State* state, grpc::ServerCompletionQueue* cq) : state_(state), cq_(cq) {}
  virtual ~CallBase() = default;
  CallBase(const CallBase&) = delete;
  CallBase& operator=(const CallBase&) = delete;

  // Posts the request for this call's method with the kRequest tag; the
  // object keeps itself alive (`self`) until its queue is done with it.
  void Post(std::shared_ptr<CallBase> self) {
    self_ = std::move(self);
    state_->live.fetch_add(1);
    Request();
  }
  virtual void OnEvent(Event event, bool ok) = 0;

 protected:
  virtual void Request() = 0;
  // A CqTag, so that the Raft thread can complete a call's events too when
  // it polls the calls' queue (--kv_threads=0).
  void* Tag(Event event) { return &tags_[event]; }
  // The queue is done with this object: drops its own reference, which may
  // destroy it (a waiter may still hold the shell).
  void Release() {
    KvService::State* state = state_;
    std::shared_ptr<CallBase> self = std::move(self_);
    self.reset();
    state->Released();
  }

  KvService::State* const state_;
  grpc::ServerCompletionQueue* const cq_;
  std::shared_ptr<CallBase> self_;  // set while the queue may return a tag

 private:
  class EventTag final : public CqTag {
   public:
    EventTag(CallBase* call, Event event) : call_(call), event_(event) {}
    // The call may be destroyed inside OnEvent: nothing of it is touched after.
    void OnComplete(bool ok) override { call_->OnEvent(event_, ok); }

   private:
    CallBase* const call_;
    const Event event_;
  };
  EventTag tags_[4] = {{this, kRequest}, {this, kDone}, {this, kFinish}, {this, kWrite}};
};

template <typename C>
void PostCall(KvService::State* state, grpc::ServerCompletionQueue* cq) {
  auto call = std::make_shared<C>(state, cq);
  C* raw = call.get();
  raw->Post(std::move(call));
}

// One unary call of method M (see the method traits below): the request, the
// response, the ServerContext and responder, and an optional forward to the
// leader, in one object.
template <typename M>
class UnaryCall : public CallBase {
 public:
  using Req = typename M::Req;
  using Resp = typename M::Resp;

  UnaryCall(KvService::State* state, grpc::ServerCompletionQueue* cq) : CallBase(state, cq) {
    grpc_.emplace();
  }

  void OnEvent(Event event, bool ok) final {
    switch (event) {
      case kRequest:
        if (!ok) {  // never matched: the server is shutting down
          Release();
          return;
        }
        state_->pending.fetch_add(1, std::memory_order_relaxed);
        outstanding_ = 2;  // kDone and kFinish
        if (!state_->stopping.load(std::memory_order_relaxed)) PostAnother();
        Handle();
        return;
      case kDone:
        --outstanding_;
        // The client went away or its deadline passed: finish now so that the
        // call's resources go, whatever the Raft or apply thread still holds.
        if (grpc_->ctx.IsCancelled()) {
          Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled or deadline exceeded"));
        }
        break;
      case kFinish:
        --outstanding_;
        break;
      case kWrite:  // unary calls write only with Finish
        break;
    }
    if (outstanding_ == 0) Settle();
  }

 protected:
  // The request arrived; runs on the queue's thread and must not block.
  virtual void Handle() = 0;
  // Posts a fresh call object of the same type on the same queue.
  virtual void PostAnother() = 0;

  // Whoever gets true finishes the call; everyone else must leave it alone.
  bool Claim() { return !claimed_.exchange(true, std::memory_order_acq_rel); }

  // Claims and finishes; `leader_addr` (if any) goes into trailing metadata.
  // Nothing of the call may be touched after this returns, except by the
  // queue's thread: the call may settle at once.
  void Finish(const grpc::Status& status, const std::string& leader_addr = "") {
    if (!Claim()) return;
    FinishClaimed(status, leader_addr);
  }
  // Like Finish(), with the leader hints UNAVAILABLE gets.
  void FinishWithHints(const grpc::Status& status) {
    if (!Claim()) return;
    std::string addr;
    grpc::Status decorated = Hints{state_->config, state_->driver}.Decorate(status, &addr);
    FinishClaimed(decorated, addr);
  }
  // REQUIRES: this thread won Claim().
  void FinishClaimed(const grpc::Status& status, const std::string& leader_addr = "") {
    Grpc& g = *grpc_;
    if (!leader_addr.empty()) g.ctx.AddTrailingMetadata(kLeaderMetadata, leader_addr);
    if (status.ok()) {
      g.responder.Finish(resp_, status, Tag(kFinish));
    } else {
      g.responder.FinishWithError(status, Tag(kFinish));
    }
  }

  const grpc::ServerContext& grpc_ctx() const { return grpc_->ctx; }

  Req req_;
  Resp resp_;

 private:
  struct Grpc {
    grpc::ServerContext ctx;
    grpc::ServerAsyncResponseWriter<Resp> responder{&ctx};
  };

  void Request() final {
    Grpc& g = *grpc_;
    g.ctx.AsyncNotifyWhenDone(Tag(kDone));
    M::Request(state_, &g.ctx, &req_, &g.responder, cq_, Tag(kRequest));
  }

  // Every tag is back: gRPC is done with the call. A waiter may still hold
  // the object; it keeps an empty shell whose Claim() fails.
  void Settle() {
    t_call_settled = true;
    state_->pending.fetch_sub(1, std::memory_order_relaxed);
    grpc_.reset();
    Release();
  }

  std::optional<Grpc> grpc_;  // reset when the call settles
  std::atomic<bool> claimed_{false};
  int outstanding_ = 0;  // tags still to come once started; queue thread only
};

// Writes: validated, turned into a Command and proposed on the leader, or
// forwarded once to the leader from a follower.
template <typename M>
class WriteCall final : public UnaryCall<M>, public WriteWaiter {
 public:
  using UnaryCall<M>::UnaryCall;

  void Applied(const v1::CommandResult& r, uint64_t term) override {
    if (!this->Claim()) return;
    grpc::Status s = ResultStatus(r);
    if (s.ok()) {
      v1::ResponseHeader* h = this->resp_.mutable_header();
      h->set_node_id(this->state_->config.id);
      h->set_term(term);
      h->set_revision(r.revision());
      if (M::WantsPrevKv(this->req_) && r.has_prev_kv()) {
        *this->resp_.mutable_prev_kv() = r.prev_kv();
      }
      M::Fill(r, &this->resp_);
    }
    this->FinishClaimed(s);
  }
  void Failed(const absl::Status& s) override { this->FinishWithHints(ToGrpc(s)); }
  // Read on the apply thread, after the hand-off to the Raft thread; the
  // queue thread no longer changes the request by then (Build moved only
  // its key and value, before proposing).
  bool WantsPrevKv() const override { return M::WantsPrevKv(this->req_); }

 private:
  void PostAnother() override { PostCall<WriteCall>(this->state_, this->cq_); }

  void Handle() override {
    KvService::State* st = this->state_;
    const NodeConfig& config = st->config;
    if (grpc::Status s = M::Check(this->req_, config); !s.ok()) {
      this->Finish(s);
      return;
    }
    if (st->pending.load(std::memory_order_relaxed) > config.max_pending_requests) {
      this->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                absl::StrCat("too many pending requests (limit ",
                                             config.max_pending_requests, "); retry later")));
      return;
    }
    RaftDriver* driver = st->driver;
    std::shared_ptr<WriteWaiter> waiter(this->self_, static_cast<WriteWaiter*>(this));
    if (driver->IsLeader()) {
      if (driver->commit_index() > st->applier->applied_index() + kMaxApplyLag) {
        this->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                  "applying lags too far behind commit; retry later"));
        return;
      }
      v1::Command command;
      M::Build(&this->req_, &command);
      driver->Propose(command.SerializeAsString(), std::move(waiter));
      return;
    }
    // A call another node forwarded (raftd before forwarding over the peer
    // stream) is not forwarded again.
    if (IsForwarded(this->grpc_ctx())) {
      this->FinishWithHints(grpc::Status(
          grpc::StatusCode::UNAVAILABLE,
          "this node is not the leader (request was already forwarded)"));
      return;
    }
    if (driver->leader() == 0 || driver->leader() == config.id) {
      this->FinishWithHints(grpc::Status(grpc::StatusCode::UNAVAILABLE, "no leader"));
      return;
    }
    // A follower carries the write to the leader over the peer stream and
    // answers once the leader says it is applied.
    v1::Command command;
    M::Build(&this->req_, &command);
    driver->Forward(command.SerializeAsString(), std::move(waiter), M::WantsPrevKv(this->req_));
  }
};

// Reads: serializable ones at once on this thread, linearizable ones
// through ReadIndex on the leader or the leader's read index on a follower.
template <typename M>
class ReadCall final : public UnaryCall<M>, public ReadWaiter {
 public:
  using UnaryCall<M>::UnaryCall;

  bool NeedsApply() const override { return true; }
  void Serve(uint64_t, uint64_t, const KvStore* store) override {
    if (!this->Claim()) return;
    grpc::Status s = M::Serve(this->req_, *store, &this->resp_);
    if (s.ok()) {
      v1::ResponseHeader* h = this->resp_.mutable_header();
      h->set_node_id(this->state_->config.id);
      h->set_term(this->state_->driver->term());
      h->set_revision(store->revision());
    }
    this->FinishClaimed(s);
  }
  void Failed(const absl::Status& s) override { this->FinishWithHints(ToGrpc(s)); }

 private:
  void PostAnother() override { PostCall<ReadCall>(this->state_, this->cq_); }

  void Handle() override {
    KvService::State* st = this->state_;
    if (grpc::Status s = M::Check(&this->req_, st->config); !s.ok()) {
      this->Finish(s);
      return;
    }
    std::shared_ptr<ReadWaiter> waiter(this->self_, static_cast<ReadWaiter*>(this));
    if (this->req_.serializable()) {
      st->applier->AddReads(0, 0, {std::move(waiter)});
    } else {
      st->driver->Read(std::move(waiter));
    }
  }
};

// Method traits: the generated async entry points, validation, and how a
// request becomes a Command (writes) or an answer (reads). A write's answer
// gets the header and, when WantsPrevKv, the key as it was from
// WriteCall::Applied; Fill adds what is the method's own.
template <typename Q, typename R>
struct MethodTypes {
  using Req = Q;
  using Resp = R;
  using Writer = grpc::ServerAsyncResponseWriter<R>;
};

struct PutMethod : MethodTypes<v1::PutRequest, v1::PutResponse> {
  static void Request(KvService::State* st, grpc::ServerContext* c, Req* q, Writer* w,
                      grpc::ServerCompletionQueue* cq, void* tag) {
    st->kv.RequestPut(c, q, w, cq, cq, tag);
  }
  static grpc::Status Check(const Req& q, const NodeConfig& config) {
    grpc::Status s = CheckKey(q.key(), config);
    if (s.ok()) s = CheckValue(q.value(), config);
    if (s.ok()) s = CheckSession(q.client_id(), q.sequence());
    return s;
  }
  // Moves the key and value: only the request's flags are used again.
  static void Build(Req* q, v1::Command* c) {
    c->set_client_id(q->client_id());
    c->set_sequence(q->sequence());
    v1::PutCommand* put = c->mutable_put();
    put->set_key(std::move(*q->mutable_key()));
    put->set_value(std::move(*q->mutable_value()));
  }
  // The old value goes back only when asked for: a reply carrying it is as
  // big as the value, to serialize, send and parse on every put.
  static bool WantsPrevKv(const Req& q) { return q.prev_kv(); }
  static void Fill(const v1::CommandResult&, Resp*) {}
};

struct DeleteMethod : MethodTypes<v1::DeleteRequest, v1::DeleteResponse> {
  static void Request(KvService::State* st, grpc::ServerContext* c, Req* q, Writer* w,
                      grpc::ServerCompletionQueue* cq, void* tag) {
    st->kv.RequestDelete(c, q, w, cq, cq, tag);
  }
  static grpc::Status Check(const Req& q, const NodeConfig& config) {
    grpc::Status s = CheckKey(q.key(), config);
    if (s.ok()) s = CheckSession(q.client_id(), q.sequence());
    return s;
  }
  static void Build(Req* q, v1::Command* c) {
    c->set_client_id(q->client_id());
    c->set_sequence(q->sequence());
    c->mutable_delete_()->set_key(std::move(*q->mutable_key()));
  }
  static bool WantsPrevKv(const Req& q) { return q.prev_kv(); }
  static void Fill(const v1::CommandResult& r, Resp* out) {
    out->set_deleted(r.code() == v1::CommandResult::OK);
  }
};

struct CompareAndSwapMethod
    : MethodTypes<v1::CompareAndSwapRequest, v1::CompareAndSwapResponse> {
  static void Request(KvService::State* st, grpc::ServerContext* c, Req* q, Writer* w,
                      grpc::ServerCompletionQueue* cq, void* tag) {
    st->kv.RequestCompareAndSwap(c, q, w, cq, cq, tag);
  }
  static grpc::Status Check(const Req& q, const NodeConfig& config) {
    grpc::Status s = CheckKey(q.key(), config);
    if (s.ok()) s = CheckValue(q.new_value(), config);
    if (s.ok()) s = CheckSession(q.client_id(), q.sequence());
    if (s.ok() && q.expected_case() == Req::EXPECTED_NOT_SET) {
      s = Invalid(
          "compare-and-swap needs one of expected_value, expected_mod_revision, "
          "expect_absent");
    }
    if (s.ok() && q.expected_case() == Req::kExpectAbsent && !q.expect_absent()) {
      s = Invalid("expect_absent, when set, must be true");
    }
    return s;
  }
  static void Build(Req* q, v1::Command* c) {
    c->set_client_id(q->client_id());
    c->set_sequence(q->sequence());
    v1::CompareAndSwapCommand* cas = c->mutable_compare_and_swap();
    cas->set_key(std::move(*q->mutable_key()));
    cas->set_new_value(std::move(*q->mutable_new_value()));
    switch (q->expected_case()) {
      case Req::kExpectedValue:
        cas->set_expected_value(std::move(*q->mutable_expected_value()));
        break;
      case Req::kExpectedModRevision:
        cas->set_expected_mod_revision(q->expected_mod_revision());
        break;
      default:
        cas->set_expect_absent(true);
    }
  }
  // The key as it was: what a failed comparison is told it did not match.
  static bool WantsPrevKv(const Req&) { return true; }
  static void Fill(const v1::CommandResult&, Resp*) {}
};

struct GetMethod : MethodTypes<v1::GetRequest, v1::GetResponse> {
  static void Request(KvService::State* st, grpc::ServerContext* c, Req* q, Writer* w,
                      grpc::ServerCompletionQueue* cq, void* tag) {
    st->kv.RequestGet(c, q, w, cq, cq, tag);
  }
  static grpc::Status Check(Req* q, const NodeConfig& config) { return CheckKey(q->key(), config); }
  static grpc::Status Serve(const Req& q, const KvStore& store, Resp* out) {
    absl::StatusOr<std::optional<v1::KeyValue>> kv = store.Get(q.key());
    if (!kv.ok()) return ToGrpc(kv.status());
    out->set_found(kv->has_value());
    if (kv->has_value()) *out->mutable_kv() = std::move(**kv);
    return grpc::Status::OK;
  }
};

struct RangeMethod : MethodTypes<v1::RangeRequest, v1::RangeResponse> {
  static void Request(KvService::State* st, grpc::ServerContext* c, Req* q, Writer* w,
                      grpc::ServerCompletionQueue* cq, void* tag) {
    st->kv.RequestRange(c, q, w, cq, cq, tag);
  }
  // Leaves the request in normal form for Serve(): [key, range_end) (empty
  // range_end: to the end of the key space) and a limit in (0, kMaxRangeLimit].
  static grpc::Status Check(Req* q, const NodeConfig& config) {
    const std::string& start = q->key();
    std::string end;
    grpc::Status s;
    if (q->limit() < 0) s = Invalid("limit must not be negative");
    if (q->prefix()) {
      end = PrefixEnd(start);
    } else if (q->range_end().empty()) {
      if (start.empty()) s = Invalid("key is empty (set prefix to list every key)");
      end = start + '\0';  // the single key `start`
    } else {
      end = q->range_end();
      if (end <= start) s = Invalid("range_end must be greater than key");
    }
    if (s.ok() && start.size() > config.max_key_bytes) s = CheckKey(start, config);
    if (!s.ok()) return s;
    q->set_range_end(std::move(end));
    q->set_limit(q->limit() == 0 ? kMaxRangeLimit : std::min(q->limit(), kMaxRangeLimit));
    return s;
  }
  static grpc::Status Serve(const Req& q, const KvStore& store, Resp* out) {
    std::vector<v1::KeyValue> kvs;
    bool more = false;
    if (absl::Status st = store.Range(q.key(), q.range_end(), q.limit(), &kvs, &more); !st.ok()) {
      return ToGrpc(st);
    }
    for (v1::KeyValue& kv : kvs) *out->add_kvs() = std::move(kv);
    out->set_more(more);
    return grpc::Status::OK;
  }
};

// ---- raftkv.v1.Cluster ----

void FillMembers(const NodeConfig& config, google::protobuf::RepeatedPtrField<v1::Member>* out) {
  for (const auto& [id, addr] : config.members) {
    v1::Member* m = out->Add();
    m->set_id(id);
    m->set_peer_addr(addr.peer_addr);
    m->set_client_addr(addr.client_addr);
  }
}

// Unary calls of raftkv.v1.Cluster and grpc.health.v1.Health: M names the
// entry point (Request) and answers (Handle), at once or later through the
// call's Complete().
template <typename M>
class AdminCall final : public UnaryCall<M> {
 public:
  using UnaryCall<M>::UnaryCall;

  // Fills the response with `fill` (which returns the status) and finishes,
  // unless the call was finished already (cancelled). Any thread.
  template <typename F>
  void Complete(F&& fill) {
    if (!this->Claim()) return;
    grpc::Status s = fill(&this->resp_);
    this->FinishClaimed(s);
  }
  void Fail(const grpc::Status& s) { this->FinishWithHints(s); }
  // Keeps the call object alive for a completion from another thread.
  std::shared_ptr<AdminCall> Hold() {
    return std::shared_ptr<AdminCall>(this->self_, this);
  }
  KvService::State* state() const { return this->state_; }
  const typename M::Req& req() const { return this->req_; }

 private:
  void PostAnother() override { PostCall<AdminCall>(this->state_, this->cq_); }
  void Handle() override { M::Handle(this); }
};

struct StatusMethod : MethodTypes<v1::StatusRequest, v1::StatusResponse> {
  static void Request(KvService::State* st, grpc::ServerContext* c, Req* q, Writer* w,
                      grpc::ServerCompletionQueue* cq, void* tag) {
    st->cluster.RequestStatus(c, q, w, cq, cq, tag);
  }
  static void Handle(AdminCall<StatusMethod>* call) {
    KvService::State* st = call->state();
    st->driver->QueryStatus([st, c = call->Hold()](const raft::NodeStatus& ns) {
      c->Complete([&](v1::StatusResponse* out) {
        const NodeConfig& config = st->config;
        out->set_node_id(config.id);
        out->set_cluster_id(config.cluster_id);
        out->set_client_addr(config.self().client_addr);
        out->set_role(raft::RoleName(ns.role));
        out->set_term(ns.term);
        out->set_leader_id(ns.leader);
        auto it = config.members.find(ns.leader);
        if (it != config.members.end()) out->set_leader_client_addr(it->second.client_addr);
        out->set_commit_index(ns.commit);
        out->set_applied_index(st->applier->applied_index());
        out->set_last_index(ns.last_index);
        out->set_first_index(ns.first_index);
        out->set_snapshot_index(ns.first_index > 0 ? ns.first_index - 1 : 0);
        FillMembers(config, out->mutable_members());
        if (ns.role == raft::Role::kLeader) {
          for (const auto& [id, p] : ns.peers) {
            if (id == config.id) continue;
            v1::FollowerStatus* f = out->add_followers();
            f->set_id(id);
            f->set_match_index(p.match);
            f->set_next_index(p.next);
            f->set_state(raft::ProgressStateName(p.state));
            f->set_ms_since_last_contact(p.ticks_since_contact * config.heartbeat_ms);
          }
        }
        return grpc::Status::OK;
      });
    });
  }
};

struct MemberListMethod : MethodTypes<v1::MemberListRequest, v1::MemberListResponse> {
  static void Request(KvService::State* st, grpc::ServerContext* c, Req* q, Writer* w,
                      grpc::ServerCompletionQueue* cq, void* tag) {
    st->cluster.RequestMemberList(c, q, w, cq, cq, tag);
  }
  static void Handle(AdminCall<MemberListMethod>* call) {
    KvService::State* st = call->state();
    call->Complete([st](v1::MemberListResponse* out) {
      out->set_leader_id(st->driver->leader());
      FillMembers(st->config, out->mutable_members());
      return grpc::Status::OK;
    });
  }
};

// The leader confirms a read index for another node. raftd itself now asks
// over the peer stream (RaftDriver::Read); the RPC stays for other callers.
struct ReadIndexMethod : MethodTypes<v1::ReadIndexRequest, v1::ReadIndexResponse> {
  static void Request(KvService::State* st, grpc::ServerContext* c, Req* q, Writer* w,
                      grpc::ServerCompletionQueue* cq, void* tag) {
    st->cluster.RequestReadIndex(c, q, w, cq, cq, tag);
  }
  // Answers as soon as the index is confirmed, without waiting for the apply.
  class Waiter final : public ReadWaiter {
   public:
    explicit Waiter(std::shared_ptr<AdminCall<ReadIndexMethod>> call) : call_(std::move(call)) {}
    bool NeedsApply() const override { return false; }
    void Serve(uint64_t index, uint64_t term, const KvStore*) override {
      call_->Complete([&](v1::ReadIndexResponse* out) {
        out->set_index(index);
        out->set_term(term);
        return grpc::Status::OK;
      });
    }
    void Failed(const absl::Status& s) override { call_->Fail(ToGrpc(s)); }

   private:
    std::shared_ptr<AdminCall<ReadIndexMethod>> call_;
  };
  static void Handle(AdminCall<ReadIndexMethod>* call) {
    KvService::State* st = call->state();
    if (call->req().cluster_id() != st->config.cluster_id) {
      call->Complete([&](v1::ReadIndexResponse*) {
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                            absl::StrCat("cluster id mismatch: this is cluster ",
                                         st->config.cluster_id, ", the caller belongs to ",
                                         call->req().cluster_id()));
      });
      return;
    }
    if (!st->driver->IsLeader()) {
      call->Fail(grpc::Status(grpc::StatusCode::UNAVAILABLE, "this node is not the leader"));
      return;
    }
    st->driver->Read(std::make_shared<Waiter>(call->Hold()));
  }
};

// ---- grpc.health.v1.Health ----

using HealthResponse = grpc::health::v1::HealthCheckResponse;

struct HealthCheckMethod : MethodTypes<grpc::health::v1::HealthCheckRequest, HealthResponse> {
  static void Request(KvService::State* st, grpc::ServerContext* c, Req* q, Writer* w,
                      grpc::ServerCompletionQueue* cq, void* tag) {
    st->health.RequestCheck(c, q, w, cq, cq, tag);
  }
  static void Handle(AdminCall<HealthCheckMethod>* call) {
    KvService::State* st = call->state();
    HealthResponse::ServingStatus status;
    {
      absl::MutexLock lock(&st->health_mu);
      status = st->HealthOf(call->req().service());
    }
    call->Complete([&](HealthResponse* out) {
      // Like gRPC's own health service: an unknown service is an error for
      // Check (Watch reports SERVICE_UNKNOWN instead).
      if (status == HealthResponse::SERVICE_UNKNOWN) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            "unknown service \"" + call->req().service() + "\"");
      }
      out->set_status(status);
      return grpc::Status::OK;
    });
  }
};

// One Watch stream: writes the status at once and again whenever it changes,
// and ends when the client goes away or the server starts shutting down.
// Tags: kRequest, kWrite (one write in flight at a time), kDone, kFinish.
// The queue's thread and SetServing() (main thread) both start writes, under
// State::health_mu.
class HealthWatch final : public CallBase, public HealthWatcher {
 public:
  HealthWatch(KvService::State* state, grpc::ServerCompletionQueue* cq)
      : CallBase(state, cq), writer_(&ctx_) {}

  void OnEvent(Event event, bool ok) override {
    KvService::State* st = state_;
    switch (event) {
      case kRequest: {
        if (!ok) {
          Release();
          return;
        }
        st->pending.fetch_add(1, std::memory_order_relaxed);
        if (!st->stopping.load(std::memory_order_relaxed)) PostCall<HealthWatch>(st, cq_);
        absl::MutexLock lock(&st->health_mu);
        started_ = true;
        st->watches.insert(this);
        StatusChanged();
        return;
      }
      case kWrite: {
        absl::MutexLock lock(&st->health_mu);
        writing_ = false;
        if (!ok) ended_ = true;  // the stream is broken: no more writes
        StatusChanged();
        return;
      }
      case kDone: {
        absl::MutexLock lock(&st->health_mu);
        done_ = true;
        ended_ = true;
        MaybeFinishLocked();
        break;
      }
      case kFinish:
        finished_ = true;
        break;
    }
    // Both tags back (in either order: a stream finished here sees kDone
    // after kFinish): gRPC is done with the call.
    if (done_ && finished_) {
      st->pending.fetch_sub(1, std::memory_order_relaxed);
      Release();
    }
  }

  // Writes the current status if it is not what the client saw last, or
  // finishes the stream once it has ended. Under health_mu.
  void StatusChanged() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_->health_mu) {
    if (!started_ || writing_ || finishing_) return;
    if (!ended_) {
      HealthResponse::ServingStatus status = state_->HealthOf(req_.service());
      if (status != sent_) {
        sent_ = status;
        response_.set_status(status);
        writing_ = true;
        writer_.Write(response_, Tag(kWrite));
        return;
      }
      // The client has seen the final NOT_SERVING: end the stream.
      if (state_->health_closed) ended_ = true;
    }
    MaybeFinishLocked();
  }

 private:
  void Request() override {
    ctx_.AsyncNotifyWhenDone(Tag(kDone));
    state_->health.RequestWatch(&ctx_, &req_, &writer_, cq_, cq_, Tag(kRequest));
  }

  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_->health_mu) {
    if (!ended_ || writing_ || finishing_) return;
    finishing_ = true;
    state_->watches.erase(this);
    writer_.Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down"),
                   Tag(kFinish));
  }

  grpc::ServerContext ctx_;
  grpc::health::v1::HealthCheckRequest req_;
  HealthResponse response_;
  grpc::ServerAsyncWriter<HealthResponse> writer_;
  // Under health_mu:
  bool started_ = false;
  bool writing_ = false;
  bool ended_ = false;      // no more writes: client gone, stream broken, or shutdown
  bool finishing_ = false;  // Finish() called
  HealthResponse::ServingStatus sent_ = HealthResponse::UNKNOWN;
  // Queue thread only:
  bool done_ = false;
  bool finished_ = false;
};

}  // namespace

HealthResponse::ServingStatus KvService::State::HealthOf(const std::string& service) const {
  if (!service.empty() && service != v1::KV::service_full_name() &&
      service != v1::Cluster::service_full_name()) {
    return HealthResponse::SERVICE_UNKNOWN;
  }
  return serving ? HealthResponse::SERVING : HealthResponse::NOT_SERVING;
}

void KvService::SetServing(bool serving) {
  State* st = state_.get();
  absl::MutexLock lock(&st->health_mu);
  st->serving = serving;
  if (!serving) st->health_closed = true;
  for (HealthWatcher* w : std::set<HealthWatcher*>(st->watches)) w->StatusChanged();
}


void KvService::State::PostAll(grpc::ServerCompletionQueue* cq) {
  for (int i = 0; i < kPostedPerMethod; ++i) {
    PostCall<WriteCall<PutMethod>>(this, cq);
    PostCall<ReadCall<GetMethod>>(this, cq);
    PostCall<WriteCall<DeleteMethod>>(this, cq);
    PostCall<ReadCall<RangeMethod>>(this, cq);
    PostCall<WriteCall<CompareAndSwapMethod>>(this, cq);
  }
  // Admin and health calls are rare: one posted each; a call that arrives
  // posts its successor.
  PostCall<AdminCall<StatusMethod>>(this, cq);
  PostCall<AdminCall<MemberListMethod>>(this, cq);
  PostCall<AdminCall<ReadIndexMethod>>(this, cq);
  PostCall<AdminCall<HealthCheckMethod>>(this, cq);
  PostCall<HealthWatch>(this, cq);
}

void KvService::State::Run(size_t index) {
  pthread_setname_np(pthread_self(), absl::StrCat("raftkv-kv-", index).c_str());
  grpc::ServerCompletionQueue* cq = cqs[index].get();
  const absl::Duration poll = absl::Microseconds(config.kv_poll_us);
  void* tag = nullptr;
  bool ok = false;
  // Polling right after handing a write or linearizable read to the Raft
  // thread would take the core the Raft thread and a follower need (measured:
  // 64 clients' puts slower); once a call has ended, nothing waits on this
  // thread but the next request.
  while (true) {
    const absl::Duration poll_now = t_call_settled ? poll : absl::ZeroDuration();
    t_call_settled = false;
    if (!PollThenWait(cq, &tag, &ok, poll_now)) break;
    static_cast<CqTag*>(tag)->OnComplete(ok);
  }
}

KvService::KvService(const NodeConfig& config, RaftDriver* driver, Applier* applier)
    : state_(std::make_unique<State>(config, driver, applier)) {}

KvService::~KvService() = default;

void KvService::Register(grpc::ServerBuilder* builder, grpc::ServerCompletionQueue* raft_cq) {
  builder->RegisterService(&state_->kv);
  builder->RegisterService(&state_->cluster);
  builder->RegisterService(&state_->health);
  if (state_->config.kv_threads == 0) {
    state_->raft_cq = raft_cq;
    return;
  }
  for (int i = 0; i < state_->config.kv_threads; ++i) {
    state_->cqs.push_back(builder->AddCompletionQueue());
  }
}

void KvService::Start() {
  State* st = state_.get();
  if (st->raft_cq != nullptr) {
    st->PostAll(st->raft_cq);
    return;
  }
  for (auto& cq : st->cqs) st->PostAll(cq.get());
  for (size_t i = 0; i < st->cqs.size(); ++i) {
    st->threads.emplace_back([st, i] { st->Run(i); });
  }
}

bool KvService::Shutdown(absl::Duration timeout) {
  State* st = state_.get();
  st->stopping.store(true);
  bool settled;
  {
    absl::MutexLock lock(&st->mu);
    settled = st->mu.AwaitWithTimeout(
        absl::Condition(+[](State* s) { return s->live.load() == 0; }, st), timeout);
  }
  if (!settled) {
    // A call not yet finished could still call Finish(), which gRPC refuses
    // on a shut-down queue (it aborts): leave queues and threads running.
    spdlog::error("{} KV calls still unsettled at shutdown; leaving their queues running",
                  st->live.load());
    for (std::thread& t : st->threads) t.detach();
    (void)state_.release();
    return false;
  }
  // The Raft thread's queue (--kv_threads=0) is the driver's to shut down.
  for (auto& cq : st->cqs) cq->Shutdown();
  for (std::thread& t : st->threads) t.join();
  st->threads.clear();
  return true;
}

}  // namespace raftkv::service
