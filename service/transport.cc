#include "service/transport.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "service/cq_tag.h"
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

// One outbound stream to one peer. At most one operation (start, write,
// finish, backoff alarm or channel watch) is in flight at a time, so `state_`
// alone says which one a completion belongs to.
class Transport::PeerStream final : public CqTag {
 public:
  PeerStream(Transport* transport, uint64_t peer_id, std::string addr)
      : transport_(transport),
        peer_id_(peer_id),
        addr_(std::move(addr)),
        channel_(grpc::CreateCustomChannel(addr_, grpc::InsecureChannelCredentials(),
                                           PeerChannelArguments())),
        stub_(v1::Raft::NewStub(channel_)) {}

  void Send(raft::Message msg) {
    if (state_ == State::kDown || state_ == State::kFinishing || state_ == State::kBackoff ||
        state_ == State::kAwaitingChannel ||
        queue_.size() >= transport_->options_.max_queued_messages) {
      // A broken stream's messages would be stale by the time a new one is
      // up; the core retransmits what matters.
      Drop(1);
      return;
    }
    queue_.push_back(std::move(msg));
    if (state_ == State::kIdle) {
      Connect();
    } else if (state_ == State::kOpen) {
      WriteQueued();
    }
  }

  bool Writing() const { return state_ == State::kWriting; }
  bool Queued() const { return !queue_.empty(); }

  void Shutdown() {
    Drop(queue_.size());
    queue_.clear();
    switch (state_) {
      case State::kStarting:
      case State::kWriting:
      case State::kFinishing:
        context_->TryCancel();  // the operation in flight comes back, then kDown
        break;
      case State::kBackoff:
        backoff_.Cancel();
        break;
      case State::kAwaitingChannel:
        // A connectivity watch cannot be cancelled: it comes back by its
        // deadline (kChannelWatchSlice) at the latest, then kDown.
        break;
      case State::kOpen:
      case State::kIdle:
        Reset();
        state_ = State::kDown;
        break;
      case State::kDown:
        break;
    }
  }

  bool OnlySends() const override { return true; }

  void OnComplete(bool ok) override {
    const bool stopping = transport_->shutting_down_;
    switch (state_) {
      case State::kStarting:
      case State::kWriting:
        if (state_ == State::kWriting) {
          if (!ok) Drop(in_flight_);
          in_flight_ = 0;
        }
        if (stopping) {
          // Dropping the context cancels the call; nothing new is started.
          Reset();
          state_ = State::kDown;
        } else if (!ok) {
          // The status says why; Finish is the only way to get it.
          state_ = State::kFinishing;
          writer_->Finish(&status_, this);
        } else {
          state_ = State::kOpen;
          WriteQueued();
        }
        return;
      case State::kFinishing:
        if (batches_ > 0 || !status_.ok()) {
          spdlog::debug("stream to peer {} ({}) ended after {} batches: {}", peer_id_, addr_,
                        batches_, status_.error_message());
        }
        if (!status_.ok()) transport_->failed_streams_.fetch_add(1, std::memory_order_relaxed);
        Reset();
        Drop(queue_.size());
        queue_.clear();
        if (stopping) {
          state_ = State::kDown;
        } else {
          state_ = State::kBackoff;
          backoff_.Set(transport_->cq_,
                       absl::ToChronoTime(absl::Now() + absl::Milliseconds(
                                                           transport_->options_.reconnect_backoff_ms)),
                       this);
        }
        return;
      case State::kBackoff:
      case State::kAwaitingChannel:
        if (stopping) {
          state_ = State::kDown;
        } else {
          AwaitChannel();
        }
        return;
      case State::kOpen:
      case State::kIdle:
      case State::kDown:
        spdlog::critical("peer stream to {} completed an operation in state {}", peer_id_,
                         static_cast<int>(state_));
        std::abort();
    }
  }

 private:
  enum class State {
    kIdle,
    kStarting,
    kOpen,
    kWriting,
    kFinishing,
    kBackoff,
    kAwaitingChannel,
    kDown
  };

  // How long one connectivity watch lasts: it bounds how long Shutdown()
  // waits for a watch in flight.
  static constexpr absl::Duration kChannelWatchSlice = absl::Milliseconds(100);

  // After a failed stream: reopen lazily (the next message for this peer
  // opens a stream) once the channel is connected, and drop messages until
  // then. Watching the channel is what gets it connected. raftd runs gRPC's
  // "poll" engine, which polls a connection attempt's socket only from the
  // queues of calls and watches waiting on that channel. A stream started
  // while the channel is in TRANSIENT_FAILURE fails at once and waits on
  // nothing, so without a watch every attempt to reach a restarted peer went
  // unpolled until its deadline, and the peer stayed cut off for seconds
  // after it was back. The watch keeps the Raft thread's queue polling the
  // attempt.
  void AwaitChannel() {
    const grpc_connectivity_state channel_state = channel_->GetState(/*try_to_connect=*/true);
    if (channel_state == GRPC_CHANNEL_READY) {
      state_ = State::kIdle;
      return;
    }
    state_ = State::kAwaitingChannel;
    channel_->NotifyOnStateChange(channel_state,
                                  absl::ToChronoTime(absl::Now() + kChannelWatchSlice),
                                  transport_->cq_, this);
  }

  void Connect() {
    context_ = std::make_unique<grpc::ClientContext>();
    context_->AddMetadata("raftkv-cluster-id", absl::StrCat(transport_->cluster_id_));
    context_->AddMetadata("raftkv-from", absl::StrCat(transport_->self_id_));
    batches_ = 0;
    writer_ = stub_->PrepareAsyncStream(context_.get(), &summary_, transport_->cq_);
    state_ = State::kStarting;
    writer_->StartCall(this);
  }

  // REQUIRES: state_ == kOpen.
  void WriteQueued() {
    if (queue_.empty()) return;
    size_t bytes = 0, n = 0;
    while (n < queue_.size() &&
           (n == 0 || bytes < transport_->options_.max_batch_bytes)) {
      bytes += queue_[n].ByteSizeLong();
      *batch_.add_messages() = std::move(queue_[n]);
      ++n;
    }
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    in_flight_ = n;
    ++batches_;
    state_ = State::kWriting;
    // Write serialises the batch before it returns.
    writer_->Write(batch_, this);
    batch_.Clear();
  }

  void Reset() {
    writer_.reset();
    context_.reset();
    status_ = grpc::Status();
  }

  void Drop(size_t n) {
    if (n > 0) transport_->dropped_.fetch_add(n, std::memory_order_relaxed);
  }

  Transport* const transport_;
  const uint64_t peer_id_;
  const std::string addr_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::Raft::Stub> stub_;

  State state_ = State::kIdle;
  std::vector<raft::Message> queue_;  // not yet written
  size_t in_flight_ = 0;              // messages in the write in flight
  v1::MessageBatch batch_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientAsyncWriter<v1::MessageBatch>> writer_;
  v1::StreamSummary summary_;
  grpc::Status status_;
  grpc::Alarm backoff_;
  uint64_t batches_ = 0;
};

namespace {

std::string Metadata(const grpc::ServerContext& ctx, const char* key) {
  const auto& md = ctx.client_metadata();
  auto it = md.find(key);
  if (it == md.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

}  // namespace

// One accepted (or awaited) inbound stream. Each object first waits for a
// stream to arrive, then posts a successor to wait for the next one, reads
// until the peer closes, finishes the call and deletes itself.
class Transport::InboundStream final : public CqTag {
 public:
  explicit InboundStream(Transport* transport) : transport_(transport), reader_(&context_) {
    transport_->service_.RequestStream(&context_, &reader_, transport_->cq_, transport_->cq_,
                                       this);
  }

  void OnComplete(bool ok) override {
    switch (state_) {
      case State::kAccepting:
        if (!ok || transport_->shutting_down_) {  // the server is shutting down
          delete this;
          return;
        }
        new InboundStream(transport_);
        Accept();
        return;
      case State::kReading:
        if (!ok || transport_->shutting_down_) {
          Finish(grpc::Status::OK);
          return;
        }
        Deliver();
        if (transport_->defer_reads_) {
          transport_->paused_.push_back(this);
        } else {
          reader_.Read(&batch_, this);
        }
        return;
      case State::kFinishing:
        delete this;
        return;
    }
  }

  // Posts the next read of a stream paused by defer_reads_.
  void Resume() { reader_.Read(&batch_, this); }

  // Ends a stream paused by defer_reads_ (no operation in flight) at shutdown.
  void Abandon() { Finish(grpc::Status::OK); }

 private:
  enum class State { kAccepting, kReading, kFinishing };

  void Accept() {
    uint64_t cluster = 0;
    if (!absl::SimpleAtoi(Metadata(context_, "raftkv-cluster-id"), &cluster) ||
        !absl::SimpleAtoi(Metadata(context_, "raftkv-from"), &from_) || from_ == 0) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "peer stream without raftkv-cluster-id/raftkv-from metadata"));
      return;
    }
    if (cluster != transport_->cluster_id_) {
      spdlog::warn("refused a peer stream from node {} of cluster {} (this is cluster {})", from_,
                   cluster, transport_->cluster_id_);
      Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          absl::StrCat("cluster id mismatch: this node belongs to cluster ",
                                       transport_->cluster_id_, ", the stream comes from cluster ",
                                       cluster)));
      return;
    }
    state_ = State::kReading;
    reader_.Read(&batch_, this);
  }

  void Deliver() {
    summary_.set_batches(summary_.batches() + 1);
    for (raft::Message& m : *batch_.mutable_messages()) {
      if (m.to() != transport_->self_id_ || m.from() != from_) continue;
      transport_->sink_(m);
    }
    batch_.Clear();
  }

  void Finish(const grpc::Status& status) {
    if (transport_->shutting_down_) {
      // The server is down and the queue about to be: no new operation.
      // Destroying the context cancels whatever is left of the call.
      delete this;
      return;
    }
    state_ = State::kFinishing;
    if (status.ok()) {
      reader_.Finish(summary_, status, this);
    } else {
      reader_.FinishWithError(status, this);
    }
  }

  Transport* const transport_;
  State state_ = State::kAccepting;
  grpc::ServerContext context_;
  grpc::ServerAsyncReader<v1::StreamSummary, v1::MessageBatch> reader_;
  v1::MessageBatch batch_;
  v1::StreamSummary summary_;
  uint64_t from_ = 0;
};

// Raft.InstallSnapshot is declared for a later version and not served: each
// call is answered UNIMPLEMENTED.
class Transport::SnapshotRejecter final : public CqTag {
 public:
  explicit SnapshotRejecter(Transport* transport) : transport_(transport), reader_(&context_) {
    transport_->service_.RequestInstallSnapshot(&context_, &reader_, transport_->cq_,
                                                transport_->cq_, this);
  }

  void OnComplete(bool ok) override {
    if (!ok || finishing_ || transport_->shutting_down_) {
      delete this;
      return;
    }
    new SnapshotRejecter(transport_);
    finishing_ = true;
    reader_.FinishWithError(
        grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "InstallSnapshot is not served yet"), this);
  }

 private:
  Transport* const transport_;
  grpc::ServerContext context_;
  grpc::ServerAsyncReader<v1::Message, v1::Message> reader_;
  bool finishing_ = false;
};

Transport::Transport(uint64_t self_id, uint64_t cluster_id,
                     const std::map<uint64_t, std::string>& peer_addrs, TransportOptions options)
    : self_id_(self_id), cluster_id_(cluster_id), options_(options) {
  for (const auto& [id, addr] : peer_addrs) {
    if (id == self_id) continue;
    peers_[id] = std::make_unique<PeerStream>(this, id, addr);
  }
}

Transport::~Transport() = default;

void Transport::Start(grpc::ServerCompletionQueue* cq, Sink sink) {
  cq_ = cq;
  sink_ = std::move(sink);
  new InboundStream(this);
  new SnapshotRejecter(this);
}

void Transport::Send(std::vector<raft::Message> messages) {
  for (raft::Message& m : messages) {
    auto it = peers_.find(m.to());
    if (it == peers_.end()) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    it->second->Send(std::move(m));
  }
}

bool Transport::ResumeReads() {
  if (paused_.empty()) return false;
  std::vector<InboundStream*> paused;
  paused.swap(paused_);
  for (InboundStream* stream : paused) stream->Resume();
  return true;
}

bool Transport::WaitingOnWrite(bool queued) const {
  for (const auto& [id, p] : peers_) {
    if (p->Writing() && (!queued || p->Queued())) return true;
  }
  return false;
}

void Transport::Shutdown() {
  shutting_down_ = true;
  for (auto& [id, p] : peers_) p->Shutdown();
  std::vector<InboundStream*> paused;
  paused.swap(paused_);
  for (InboundStream* stream : paused) stream->Abandon();
}

}  // namespace raftkv::service
