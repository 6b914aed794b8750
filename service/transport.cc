#include "service/transport.h"

#include <pthread.h>

#include <atomic>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "spdlog/spdlog.h"

namespace raftkv::service {

grpc::ChannelArguments PeerChannelArguments() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  // Distinct channels per peer: forwarding and replication must not share
  // one TCP connection's head-of-line blocking.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return args;
}

class Transport::PeerSender {
 public:
  PeerSender(uint64_t self_id, uint64_t cluster_id, uint64_t peer_id, const std::string& addr,
             const TransportOptions& options)
      : self_id_(self_id),
        cluster_id_(cluster_id),
        peer_id_(peer_id),
        addr_(addr),
        options_(options),
        stub_(v1::Raft::NewStub(grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(),
                                                          PeerChannelArguments()))) {}

  void Start() {
    thread_ = std::thread([this] {
      // Linux thread names are at most 15 characters.
      pthread_setname_np(pthread_self(), absl::StrCat("raftkv-send-", peer_id_ % 1000).c_str());
      Run();
    });
  }

  void Enqueue(raft::Message msg) {
    absl::MutexLock lock(&mu_);
    if (stop_ || queue_.size() >= options_.max_queued_messages) {
      ++dropped_;
      return;
    }
    queue_.push_back(std::move(msg));
  }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
      if (active_ != nullptr) active_->TryCancel();
    }
    if (thread_.joinable()) thread_.join();
  }

  uint64_t dropped() const {
    absl::MutexLock lock(&mu_);
    return dropped_;
  }

 private:
  // The sender thread: (re)opens the stream and writes batches until stopped.
  void Run() {
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](PeerSender* s)
                 ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) { return s->stop_ || !s->queue_.empty(); },
            this));
        if (stop_) return;
      }
      grpc::ClientContext ctx;
      ctx.AddMetadata("raftkv-cluster-id", absl::StrCat(cluster_id_));
      ctx.AddMetadata("raftkv-from", absl::StrCat(self_id_));
      {
        absl::MutexLock lock(&mu_);
        if (stop_) return;
        active_ = &ctx;
      }
      v1::StreamSummary summary;
      std::unique_ptr<grpc::ClientWriter<v1::MessageBatch>> writer = stub_->Stream(&ctx, &summary);
      uint64_t sent = 0;
      while (true) {
        v1::MessageBatch batch;
        {
          absl::MutexLock lock(&mu_);
          mu_.Await(absl::Condition(
              +[](PeerSender* s)
                   ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) { return s->stop_ || !s->queue_.empty(); },
              this));
          if (stop_) break;
          size_t bytes = 0;
          while (!queue_.empty() &&
                 (batch.messages_size() == 0 || bytes < options_.max_batch_bytes)) {
            bytes += queue_.front().ByteSizeLong();
            *batch.add_messages() = std::move(queue_.front());
            queue_.pop_front();
          }
        }
        if (!writer->Write(batch)) {
          absl::MutexLock lock(&mu_);
          dropped_ += batch.messages_size();
          break;
        }
        ++sent;
      }
      ctx.TryCancel();
      grpc::Status status = writer->Finish();
      bool stopping;
      {
        absl::MutexLock lock(&mu_);
        active_ = nullptr;
        stopping = stop_;
        // What was queued for a broken stream is stale by the time a new one
        // is up; the core retransmits what matters.
        dropped_ += queue_.size();
        queue_.clear();
      }
      if (stopping) return;
      if (sent > 0 || !status.ok()) {
        spdlog::debug("stream to peer {} ({}) ended after {} batches: {}", peer_id_, addr_, sent,
                      status.error_message());
      }
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stop_),
                           absl::Milliseconds(options_.reconnect_backoff_ms));
      if (stop_) return;
    }
  }

  const uint64_t self_id_;
  const uint64_t cluster_id_;
  const uint64_t peer_id_;
  const std::string addr_;
  const TransportOptions options_;
  const std::unique_ptr<v1::Raft::Stub> stub_;  // thread-safe
  std::thread thread_;

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<raft::Message> queue_ ABSL_GUARDED_BY(mu_);
  grpc::ClientContext* active_ ABSL_GUARDED_BY(mu_) = nullptr;  // open stream, to cancel
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

Transport::Transport(uint64_t self_id, uint64_t cluster_id,
                     const std::map<uint64_t, std::string>& peer_addrs, TransportOptions options) {
  for (const auto& [id, addr] : peer_addrs) {
    if (id == self_id) continue;
    peers_[id] = std::make_unique<PeerSender>(self_id, cluster_id, id, addr, options);
  }
}

Transport::~Transport() { Stop(); }

void Transport::Start() {
  for (auto& [id, p] : peers_) p->Start();
}

void Transport::Send(std::vector<raft::Message> messages) {
  for (raft::Message& m : messages) {
    auto it = peers_.find(m.to());
    if (it != peers_.end()) it->second->Enqueue(std::move(m));
  }
}

void Transport::Stop() {
  for (auto& [id, p] : peers_) p->Stop();
}

uint64_t Transport::dropped() const {
  uint64_t n = 0;
  for (const auto& [id, p] : peers_) n += p->dropped();
  return n;
}

namespace {

class StreamReactor : public grpc::ServerReadReactor<v1::MessageBatch> {
 public:
  StreamReactor(uint64_t self_id, uint64_t from, const RaftPeerService::Sink* sink,
                v1::StreamSummary* summary)
      : self_id_(self_id), from_(from), sink_(sink), summary_(summary) {
    StartRead(&batch_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    std::vector<raft::Message> msgs;
    msgs.reserve(batch_.messages_size());
    for (raft::Message& m : *batch_.mutable_messages()) {
      if (m.to() != self_id_ || m.from() != from_) continue;
      msgs.push_back(std::move(m));
    }
    batch_.Clear();
    summary_->set_batches(summary_->batches() + 1);
    if (!msgs.empty()) (*sink_)(std::move(msgs));
    StartRead(&batch_);
  }

  void OnDone() override { delete this; }

 private:
  const uint64_t self_id_;
  const uint64_t from_;
  const RaftPeerService::Sink* sink_;
  v1::StreamSummary* summary_;
  v1::MessageBatch batch_;
};

class RejectReactor : public grpc::ServerReadReactor<v1::MessageBatch> {
 public:
  explicit RejectReactor(grpc::Status status) { Finish(status); }
  void OnDone() override { delete this; }
};

std::string Metadata(grpc::CallbackServerContext* ctx, const char* key) {
  const auto& md = ctx->client_metadata();
  auto it = md.find(key);
  if (it == md.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

}  // namespace

RaftPeerService::RaftPeerService(uint64_t self_id, uint64_t cluster_id, Sink sink)
    : self_id_(self_id), cluster_id_(cluster_id), sink_(std::move(sink)) {}

grpc::ServerReadReactor<v1::MessageBatch>* RaftPeerService::Stream(
    grpc::CallbackServerContext* context, v1::StreamSummary* summary) {
  uint64_t cluster = 0, from = 0;
  if (!absl::SimpleAtoi(Metadata(context, "raftkv-cluster-id"), &cluster) ||
      !absl::SimpleAtoi(Metadata(context, "raftkv-from"), &from) || from == 0) {
    return new RejectReactor(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                     "peer stream without raftkv-cluster-id/raftkv-from metadata"));
  }
  if (cluster != cluster_id_) {
    spdlog::warn("refused a peer stream from node {} of cluster {} (this is cluster {})", from,
                 cluster, cluster_id_);
    return new RejectReactor(
        grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                     absl::StrCat("cluster id mismatch: this node belongs to cluster ", cluster_id_,
                                  ", the stream comes from cluster ", cluster)));
  }
  return new StreamReactor(self_id_, from, &sink_, summary);
}

}  // namespace raftkv::service
