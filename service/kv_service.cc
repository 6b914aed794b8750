#include "service/kv_service.h"

#include <chrono>
#include <functional>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace raftkv::service {
namespace {

constexpr char kLeaderMetadata[] = "raftkv-leader";
constexpr char kForwardedMetadata[] = "raftkv-forwarded";
// etcd's limit: refuse new writes when apply lags commit by this much.
constexpr uint64_t kMaxApplyLag = 5000;
constexpr int64_t kMaxRangeLimit = 10000;
constexpr auto kForwardTimeCap = std::chrono::seconds(10);
constexpr auto kReadIndexTimeout = std::chrono::seconds(3);

// Shared by a call's reactor and every thread that may finish it: whoever
// claims it first finishes it, everyone else does nothing.
class CallState {
 public:
  bool Claim() { return !claimed_.exchange(true, std::memory_order_acq_rel); }
  grpc::ServerUnaryReactor* reactor = nullptr;  // valid until finished
  grpc::CallbackServerContext* ctx = nullptr;   // likewise

 private:
  std::atomic<bool> claimed_{false};
};

class Reactor final : public grpc::ServerUnaryReactor {
 public:
  Reactor(std::shared_ptr<CallState> state, std::atomic<int>* pending)
      : state_(std::move(state)), pending_(pending) {}
  // The client went away or its deadline passed: finish now so that the
  // call's resources go, whatever the Raft or apply thread still holds.
  void OnCancel() override {
    if (state_->Claim()) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled or deadline exceeded"));
    }
  }
  void OnDone() override {
    pending_->fetch_sub(1, std::memory_order_relaxed);
    delete this;
  }

 private:
  std::shared_ptr<CallState> state_;
  std::atomic<int>* pending_;
};

// A cheap, copyable handle on one unary call.
template <typename Resp>
class Call {
 public:
  Call(grpc::CallbackServerContext* ctx, Resp* resp, std::atomic<int>* pending)
      : state_(std::make_shared<CallState>()), resp_(resp) {
    pending->fetch_add(1, std::memory_order_relaxed);
    state_->reactor = new Reactor(state_, pending);
    state_->ctx = ctx;
  }
  grpc::ServerUnaryReactor* reactor() const { return state_->reactor; }

  // Runs fill(resp) and finishes with the status it returns, unless someone
  // else finished the call already.
  template <typename F>
  void Complete(F&& fill) const {
    if (!state_->Claim()) return;
    grpc::Status status = fill(resp_);
    state_->reactor->Finish(status);
  }
  void Fail(const grpc::Status& status, const std::string& leader_addr = "") const {
    if (!state_->Claim()) return;
    if (!leader_addr.empty()) state_->ctx->AddTrailingMetadata(kLeaderMetadata, leader_addr);
    state_->reactor->Finish(status);
  }

 private:
  std::shared_ptr<CallState> state_;
  Resp* resp_;
};

class FnWriteWaiter final : public WriteWaiter {
 public:
  using AppliedFn = std::function<void(const v1::CommandResult&, uint64_t)>;
  using FailedFn = std::function<void(const absl::Status&)>;
  FnWriteWaiter(AppliedFn applied, FailedFn failed)
      : applied_(std::move(applied)), failed_(std::move(failed)) {}
  void Applied(const v1::CommandResult& r, uint64_t term) override { applied_(r, term); }
  void Failed(const absl::Status& s) override { failed_(s); }

 private:
  AppliedFn applied_;
  FailedFn failed_;
};

class FnReadWaiter final : public ReadWaiter {
 public:
  using ServeFn = std::function<void(uint64_t, uint64_t, const KvStore*)>;
  using FailedFn = std::function<void(const absl::Status&)>;
  FnReadWaiter(bool needs_apply, ServeFn serve, FailedFn failed)
      : needs_apply_(needs_apply), serve_(std::move(serve)), failed_(std::move(failed)) {}
  bool NeedsApply() const override { return needs_apply_; }
  void Serve(uint64_t index, uint64_t term, const KvStore* store) override {
    serve_(index, term, store);
  }
  void Failed(const absl::Status& s) override { failed_(s); }

 private:
  bool needs_apply_;
  ServeFn serve_;
  FailedFn failed_;
};

grpc::Status Invalid(const std::string& msg) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, msg);
}

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

bool IsForwarded(grpc::CallbackServerContext* ctx) {
  return ctx->client_metadata().count(kForwardedMetadata) > 0;
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

std::chrono::system_clock::time_point ForwardDeadline(grpc::CallbackServerContext* ctx,
                                                      std::chrono::seconds cap) {
  auto capped = std::chrono::system_clock::now() + cap;
  return std::min(ctx->deadline(), capped);
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
  // UNAVAILABLE gets the leader's client address in message and metadata.
  template <typename Resp>
  void Fail(const Call<Resp>& call, const grpc::Status& s) const {
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) {
      call.Fail(s);
      return;
    }
    std::string addr = LeaderAddr();
    uint64_t leader = driver->leader();
    std::string msg = s.error_message();
    if (leader != 0 && leader != config.id && !addr.empty()) {
      absl::StrAppend(&msg, " (leader: node ", leader, " at ", addr, ")");
    } else if (leader == 0) {
      absl::StrAppend(&msg, " (no leader is known; the cluster may have lost its quorum)");
    }
    call.Fail(grpc::Status(grpc::StatusCode::UNAVAILABLE, msg),
              leader != config.id ? addr : config.self().client_addr);
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

// Everything a write handler does after building its Command.
template <typename Req, typename Resp, typename Fill, typename AsyncCall>
void SubmitWrite(const NodeConfig& config, RaftDriver* driver, Applier* applier,
                 const PeerClients* peers, std::atomic<int>* pending,
                 grpc::CallbackServerContext* ctx, const Req* req, Call<Resp> call,
                 const v1::Command& command, Fill fill, AsyncCall async_call) {
  Hints hints{config, driver};
  if (pending->load(std::memory_order_relaxed) > config.max_pending_requests) {
    call.Fail(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                           absl::StrCat("too many pending requests (limit ",
                                        config.max_pending_requests, "); retry later")));
    return;
  }
  if (driver->IsLeader()) {
    if (driver->commit_index() > applier->applied_index() + kMaxApplyLag) {
      call.Fail(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                             "applying lags too far behind commit; retry later"));
      return;
    }
    auto waiter = std::make_shared<FnWriteWaiter>(
        [call, fill, id = config.id](const v1::CommandResult& r, uint64_t term) {
          call.Complete([&](Resp* out) {
            grpc::Status s = ResultStatus(r);
            if (!s.ok()) return s;
            out->mutable_header()->set_node_id(id);
            out->mutable_header()->set_term(term);
            out->mutable_header()->set_revision(r.revision());
            fill(r, out);
            return s;
          });
        },
        [call, hints](const absl::Status& s) { hints.Fail(call, ToGrpc(s)); });
    driver->Propose(command.SerializeAsString(), std::move(waiter));
    return;
  }
  // A follower forwards to the leader, once.
  if (IsForwarded(ctx)) {
    hints.Fail(call, grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                  "this node is not the leader (request was already forwarded)"));
    return;
  }
  uint64_t leader = driver->leader();
  v1::KV::Stub* stub = peers->kv(leader);
  if (leader == 0 || leader == config.id || stub == nullptr) {
    hints.Fail(call, grpc::Status(grpc::StatusCode::UNAVAILABLE, "no leader"));
    return;
  }
  struct Forward {
    grpc::ClientContext client;
    Req req;
    Resp resp;
  };
  auto fwd = std::make_shared<Forward>();
  fwd->req = *req;
  fwd->client.set_deadline(ForwardDeadline(ctx, kForwardTimeCap));
  fwd->client.AddMetadata(kForwardedMetadata, absl::StrCat(config.id));
  // The callback may run after this node began shutting down, so it uses only
  // what it owns: the leader hint is taken now.
  std::string leader_addr = hints.LeaderAddr();
  async_call(stub->async(), &fwd->client, &fwd->req, &fwd->resp,
             [fwd, call, leader, leader_addr](grpc::Status s) {
               if (s.ok()) {
                 call.Complete([&](Resp* out) {
                   *out = std::move(fwd->resp);
                   return grpc::Status::OK;
                 });
               } else if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
                 call.Fail(grpc::Status(
                               grpc::StatusCode::UNAVAILABLE,
                               absl::StrCat("forwarding to the leader failed: ", s.error_message(),
                                            " (leader: node ", leader, " at ", leader_addr, ")")),
                           leader_addr);
               } else {
                 call.Fail(s);
               }
             });
}

}  // namespace

PeerClients::PeerClients(const NodeConfig& config) {
  for (const auto& [id, addr] : config.members) {
    if (id == config.id) continue;
    auto channel = grpc::CreateCustomChannel(addr.client_addr, grpc::InsecureChannelCredentials(),
                                             PeerChannelArguments());
    clients_[id] = Clients{v1::KV::NewStub(channel), v1::Cluster::NewStub(channel)};
  }
}

v1::KV::Stub* PeerClients::kv(uint64_t id) const {
  auto it = clients_.find(id);
  return it == clients_.end() ? nullptr : it->second.kv.get();
}

v1::Cluster::Stub* PeerClients::cluster(uint64_t id) const {
  auto it = clients_.find(id);
  return it == clients_.end() ? nullptr : it->second.cluster.get();
}

ReadIndexForwarder::ReadIndexForwarder(const NodeConfig& config, const RaftDriver* driver,
                                       Applier* applier, const PeerClients* peers)
    : config_(config), driver_(driver), applier_(applier), peers_(peers) {}

void ReadIndexForwarder::Add(std::shared_ptr<ReadWaiter> waiter) {
  std::vector<std::shared_ptr<ReadWaiter>> batch;
  {
    absl::MutexLock lock(&mu_);
    waiting_.push_back(std::move(waiter));
    if (in_flight_) return;
    in_flight_ = true;
    batch.swap(waiting_);
  }
  // Started without mu_ held: a callback may run inline.
  while (!batch.empty()) {
    uint64_t leader = driver_->leader();
    v1::Cluster::Stub* stub = peers_->cluster(leader);
    if (leader != 0 && leader != config_.id && stub != nullptr) {
      struct Rpc {
        grpc::ClientContext client;
        v1::ReadIndexRequest req;
        v1::ReadIndexResponse resp;
      };
      auto rpc = std::make_shared<Rpc>();
      rpc->req.set_from_node(config_.id);
      rpc->req.set_cluster_id(config_.cluster_id);
      rpc->client.set_deadline(std::chrono::system_clock::now() + kReadIndexTimeout);
      stub->async()->ReadIndex(&rpc->client, &rpc->req, &rpc->resp,
                               [this, rpc, b = std::move(batch)](grpc::Status s) mutable {
                                 Done(s, rpc->resp.index(), rpc->resp.term(), std::move(b));
                               });
      return;
    }
    for (auto& w : batch) {
      w->Failed(absl::UnavailableError("no leader to get a read index from"));
    }
    batch.clear();
    absl::MutexLock lock(&mu_);
    if (waiting_.empty()) {
      in_flight_ = false;
      return;
    }
    batch.swap(waiting_);
  }
}

bool ReadIndexForwarder::WaitIdle(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(
                                  +[](ReadIndexForwarder* f) ABSL_EXCLUSIVE_LOCKS_REQUIRED(f->mu_) {
                                    return !f->in_flight_ && f->waiting_.empty();
                                  },
                                  this),
                              timeout);
}

void ReadIndexForwarder::Done(const grpc::Status& status, uint64_t index, uint64_t term,
                              std::vector<std::shared_ptr<ReadWaiter>> batch) {
  if (status.ok()) {
    applier_->AddReads(index, term, std::move(batch));
  } else {
    absl::Status s(static_cast<absl::StatusCode>(status.error_code()),
                   "getting a read index from the leader failed: " + status.error_message());
    if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      s = absl::UnavailableError("the leader did not confirm a read index in time");
    }
    for (auto& w : batch) w->Failed(s);
  }
  std::shared_ptr<ReadWaiter> next;
  {
    absl::MutexLock lock(&mu_);
    in_flight_ = false;
    if (waiting_.empty()) return;
    next = std::move(waiting_.back());
    waiting_.pop_back();
  }
  Add(std::move(next));
}

KvService::KvService(const NodeConfig& config, RaftDriver* driver, Applier* applier,
                     const PeerClients* peers, ReadIndexForwarder* reads)
    : config_(config), driver_(driver), applier_(applier), peers_(peers), reads_(reads) {}

namespace {

// Routes a read: serializable -> apply thread; linearizable -> ReadIndex on the
// leader, or via the leader's read index on a follower.
void RouteRead(bool serializable, RaftDriver* driver, Applier* applier,
               ReadIndexForwarder* forwarder, std::shared_ptr<ReadWaiter> waiter) {
  if (serializable) {
    applier->AddReads(0, 0, {std::move(waiter)});
  } else if (driver->IsLeader()) {
    driver->Read(std::move(waiter));
  } else {
    forwarder->Add(std::move(waiter));
  }
}

}  // namespace

grpc::ServerUnaryReactor* KvService::Put(grpc::CallbackServerContext* ctx,
                                         const v1::PutRequest* req, v1::PutResponse* resp) {
  Call<v1::PutResponse> call(ctx, resp, &pending_);
  grpc::Status s = CheckKey(req->key(), config_);
  if (s.ok()) s = CheckValue(req->value(), config_);
  if (s.ok()) s = CheckSession(req->client_id(), req->sequence());
  if (!s.ok()) {
    call.Fail(s);
    return call.reactor();
  }
  v1::Command cmd;
  cmd.set_client_id(req->client_id());
  cmd.set_sequence(req->sequence());
  cmd.mutable_put()->set_key(req->key());
  cmd.mutable_put()->set_value(req->value());
  SubmitWrite(
      config_, driver_, applier_, peers_, &pending_, ctx, req, call, cmd,
      [](const v1::CommandResult& r, v1::PutResponse* out) {
        if (r.has_prev_kv()) *out->mutable_prev_kv() = r.prev_kv();
      },
      [](auto* async, auto* c, auto* q, auto* p, auto cb) { async->Put(c, q, p, std::move(cb)); });
  return call.reactor();
}

grpc::ServerUnaryReactor* KvService::Delete(grpc::CallbackServerContext* ctx,
                                            const v1::DeleteRequest* req,
                                            v1::DeleteResponse* resp) {
  Call<v1::DeleteResponse> call(ctx, resp, &pending_);
  grpc::Status s = CheckKey(req->key(), config_);
  if (s.ok()) s = CheckSession(req->client_id(), req->sequence());
  if (!s.ok()) {
    call.Fail(s);
    return call.reactor();
  }
  v1::Command cmd;
  cmd.set_client_id(req->client_id());
  cmd.set_sequence(req->sequence());
  cmd.mutable_delete_()->set_key(req->key());
  SubmitWrite(
      config_, driver_, applier_, peers_, &pending_, ctx, req, call, cmd,
      [](const v1::CommandResult& r, v1::DeleteResponse* out) {
        out->set_deleted(r.code() == v1::CommandResult::OK);
        if (r.has_prev_kv()) *out->mutable_prev_kv() = r.prev_kv();
      },
      [](auto* async, auto* c, auto* q, auto* p, auto cb) {
        async->Delete(c, q, p, std::move(cb));
      });
  return call.reactor();
}

grpc::ServerUnaryReactor* KvService::CompareAndSwap(grpc::CallbackServerContext* ctx,
                                                    const v1::CompareAndSwapRequest* req,
                                                    v1::CompareAndSwapResponse* resp) {
  Call<v1::CompareAndSwapResponse> call(ctx, resp, &pending_);
  grpc::Status s = CheckKey(req->key(), config_);
  if (s.ok()) s = CheckValue(req->new_value(), config_);
  if (s.ok()) s = CheckSession(req->client_id(), req->sequence());
  if (s.ok() && req->expected_case() == v1::CompareAndSwapRequest::EXPECTED_NOT_SET) {
    s = Invalid(
        "compare-and-swap needs one of expected_value, expected_mod_revision, "
        "expect_absent");
  }
  if (s.ok() && req->expected_case() == v1::CompareAndSwapRequest::kExpectAbsent &&
      !req->expect_absent()) {
    s = Invalid("expect_absent, when set, must be true");
  }
  if (!s.ok()) {
    call.Fail(s);
    return call.reactor();
  }
  v1::Command cmd;
  cmd.set_client_id(req->client_id());
  cmd.set_sequence(req->sequence());
  v1::CompareAndSwapCommand* cas = cmd.mutable_compare_and_swap();
  cas->set_key(req->key());
  cas->set_new_value(req->new_value());
  switch (req->expected_case()) {
    case v1::CompareAndSwapRequest::kExpectedValue:
      cas->set_expected_value(req->expected_value());
      break;
    case v1::CompareAndSwapRequest::kExpectedModRevision:
      cas->set_expected_mod_revision(req->expected_mod_revision());
      break;
    default:
      cas->set_expect_absent(true);
  }
  SubmitWrite(
      config_, driver_, applier_, peers_, &pending_, ctx, req, call, cmd,
      [](const v1::CommandResult& r, v1::CompareAndSwapResponse* out) {
        if (r.has_prev_kv()) *out->mutable_prev_kv() = r.prev_kv();
      },
      [](auto* async, auto* c, auto* q, auto* p, auto cb) {
        async->CompareAndSwap(c, q, p, std::move(cb));
      });
  return call.reactor();
}

grpc::ServerUnaryReactor* KvService::Get(grpc::CallbackServerContext* ctx,
                                         const v1::GetRequest* req, v1::GetResponse* resp) {
  Call<v1::GetResponse> call(ctx, resp, &pending_);
  if (grpc::Status s = CheckKey(req->key(), config_); !s.ok()) {
    call.Fail(s);
    return call.reactor();
  }
  Hints hints{config_, driver_};
  auto waiter = std::make_shared<FnReadWaiter>(
      true,
      [call, key = req->key(), id = config_.id, driver = driver_](uint64_t, uint64_t,
                                                                  const KvStore* store) {
        call.Complete([&](v1::GetResponse* out) {
          absl::StatusOr<std::optional<v1::KeyValue>> kv = store->Get(key);
          if (!kv.ok()) return ToGrpc(kv.status());
          out->mutable_header()->set_node_id(id);
          out->mutable_header()->set_term(driver->term());
          out->mutable_header()->set_revision(store->revision());
          out->set_found(kv->has_value());
          if (kv->has_value()) *out->mutable_kv() = **kv;
          return grpc::Status::OK;
        });
      },
      [call, hints](const absl::Status& s) { hints.Fail(call, ToGrpc(s)); });
  RouteRead(req->serializable(), driver_, applier_, reads_, std::move(waiter));
  return call.reactor();
}

grpc::ServerUnaryReactor* KvService::Range(grpc::CallbackServerContext* ctx,
                                           const v1::RangeRequest* req, v1::RangeResponse* resp) {
  Call<v1::RangeResponse> call(ctx, resp, &pending_);
  std::string start = req->key(), end;
  grpc::Status s;
  if (req->limit() < 0) s = Invalid("limit must not be negative");
  if (req->prefix()) {
    end = PrefixEnd(start);
  } else if (req->range_end().empty()) {
    if (start.empty()) s = Invalid("key is empty (set prefix to list every key)");
    end = start + '\0';  // the single key `start`
  } else {
    end = req->range_end();
    if (end <= start) s = Invalid("range_end must be greater than key");
  }
  if (s.ok() && start.size() > config_.max_key_bytes) s = CheckKey(start, config_);
  if (!s.ok()) {
    call.Fail(s);
    return call.reactor();
  }
  int64_t limit = req->limit() == 0 ? kMaxRangeLimit : std::min(req->limit(), kMaxRangeLimit);
  Hints hints{config_, driver_};
  auto waiter = std::make_shared<FnReadWaiter>(
      true,
      [call, start, end, limit, id = config_.id, driver = driver_](uint64_t, uint64_t,
                                                                   const KvStore* store) {
        call.Complete([&](v1::RangeResponse* out) {
          std::vector<v1::KeyValue> kvs;
          bool more = false;
          if (absl::Status st = store->Range(start, end, limit, &kvs, &more); !st.ok()) {
            return ToGrpc(st);
          }
          out->mutable_header()->set_node_id(id);
          out->mutable_header()->set_term(driver->term());
          out->mutable_header()->set_revision(store->revision());
          for (v1::KeyValue& kv : kvs) *out->add_kvs() = std::move(kv);
          out->set_more(more);
          return grpc::Status::OK;
        });
      },
      [call, hints](const absl::Status& st) { hints.Fail(call, ToGrpc(st)); });
  RouteRead(req->serializable(), driver_, applier_, reads_, std::move(waiter));
  return call.reactor();
}

ClusterService::ClusterService(const NodeConfig& config, RaftDriver* driver, Applier* applier)
    : config_(config), driver_(driver), applier_(applier) {}

namespace {

void FillMembers(const NodeConfig& config, google::protobuf::RepeatedPtrField<v1::Member>* out) {
  for (const auto& [id, addr] : config.members) {
    v1::Member* m = out->Add();
    m->set_id(id);
    m->set_peer_addr(addr.peer_addr);
    m->set_client_addr(addr.client_addr);
  }
}

}  // namespace

grpc::ServerUnaryReactor* ClusterService::Status(grpc::CallbackServerContext* ctx,
                                                 const v1::StatusRequest*,
                                                 v1::StatusResponse* resp) {
  Call<v1::StatusResponse> call(ctx, resp, &pending_);
  driver_->QueryStatus([call, this](const raft::NodeStatus& st) {
    call.Complete([&](v1::StatusResponse* out) {
      out->set_node_id(config_.id);
      out->set_cluster_id(config_.cluster_id);
      out->set_client_addr(config_.self().client_addr);
      out->set_role(raft::RoleName(st.role));
      out->set_term(st.term);
      out->set_leader_id(st.leader);
      auto it = config_.members.find(st.leader);
      if (it != config_.members.end()) out->set_leader_client_addr(it->second.client_addr);
      out->set_commit_index(st.commit);
      out->set_applied_index(applier_->applied_index());
      out->set_last_index(st.last_index);
      out->set_first_index(st.first_index);
      out->set_snapshot_index(st.first_index > 0 ? st.first_index - 1 : 0);
      FillMembers(config_, out->mutable_members());
      if (st.role == raft::Role::kLeader) {
        for (const auto& [id, p] : st.peers) {
          if (id == config_.id) continue;
          v1::FollowerStatus* f = out->add_followers();
          f->set_id(id);
          f->set_match_index(p.match);
          f->set_next_index(p.next);
          f->set_state(raft::ProgressStateName(p.state));
          f->set_ms_since_last_contact(p.ticks_since_contact * config_.heartbeat_ms);
        }
      }
      return grpc::Status::OK;
    });
  });
  return call.reactor();
}

grpc::ServerUnaryReactor* ClusterService::MemberList(grpc::CallbackServerContext* ctx,
                                                     const v1::MemberListRequest*,
                                                     v1::MemberListResponse* resp) {
  Call<v1::MemberListResponse> call(ctx, resp, &pending_);
  call.Complete([&](v1::MemberListResponse* out) {
    out->set_leader_id(driver_->leader());
    FillMembers(config_, out->mutable_members());
    return grpc::Status::OK;
  });
  return call.reactor();
}

grpc::ServerUnaryReactor* ClusterService::ReadIndex(grpc::CallbackServerContext* ctx,
                                                    const v1::ReadIndexRequest* req,
                                                    v1::ReadIndexResponse* resp) {
  Call<v1::ReadIndexResponse> call(ctx, resp, &pending_);
  Hints hints{config_, driver_};
  if (req->cluster_id() != config_.cluster_id) {
    call.Fail(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                           absl::StrCat("cluster id mismatch: this is cluster ", config_.cluster_id,
                                        ", the caller belongs to ", req->cluster_id())));
    return call.reactor();
  }
  if (!driver_->IsLeader()) {
    hints.Fail(call, grpc::Status(grpc::StatusCode::UNAVAILABLE, "this node is not the leader"));
    return call.reactor();
  }
  auto waiter = std::make_shared<FnReadWaiter>(
      false,
      [call](uint64_t index, uint64_t term, const KvStore*) {
        call.Complete([&](v1::ReadIndexResponse* out) {
          out->set_index(index);
          out->set_term(term);
          return grpc::Status::OK;
        });
      },
      [call, hints](const absl::Status& s) { hints.Fail(call, ToGrpc(s)); });
  driver_->Read(std::move(waiter));
  return call.reactor();
}

}  // namespace raftkv::service
