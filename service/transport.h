// Transport: raftd's peer-to-peer pipe for core messages (see raft.proto),
// driven entirely by the Raft thread.
//
// Every operation runs through the completion queue that the Raft thread
// polls (RaftDriver::Run): the thread that steps the core also writes the
// core's messages to the wire and reads peers' messages off it, with no
// hand-off to another thread either way. On a small machine a cross-thread
// wake-up costs as much as the work it hands over, and a put crosses the
// network four times.
//
// Outbound: one PeerStream per peer keeps ONE long-lived client stream
// (Raft.Stream) open to that peer. Send() writes at once when no write to that
// peer is in flight and queues otherwise; when a write completes, everything
// queued meanwhile goes as the next batch. A dead, slow or stopped peer costs
// a bounded queue (overflow drops messages, which Raft tolerates) and never
// blocks the thread or the other peers. A failed stream drops its queue (the
// core retransmits what matters) and is reopened, after a short backoff and
// once its channel is connected again, by the next message for that peer.
//
// Inbound: every accepted Raft.Stream is checked (cluster id, sender id in its
// metadata) and each message read from it that is addressed from that sender
// to this node goes to the sink, on the Raft thread; the stream's next read
// is posted at once, or at ResumeReads() while reads are deferred.
//
// Thread safety: none. Construct and register service() before the peer
// server is built; everything else on the Raft thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "grpcpp/alarm.h"
#include "grpcpp/grpcpp.h"
#include "raft/node.h"
#include "raftkv/v1/raft.grpc.pb.h"

namespace raftkv::service {

struct TransportOptions {
  size_t max_queued_messages = 8192;  // per peer; beyond it new messages are dropped
  size_t max_batch_bytes = 4 << 20;   // per batch written
  int reconnect_backoff_ms = 100;
};

// Channel arguments used for every channel between nodes (peer streams and
// forwarded client calls): no retries, fast reconnects, keepalive so that a
// silently dead peer is noticed.
grpc::ChannelArguments PeerChannelArguments();

class Transport {
 public:
  // Called for each message received, on the Raft thread.
  // It may take the message apart (raft::Node::Step moves an append's entries).
  using Sink = std::function<void(raft::Message&)>;

  Transport(uint64_t self_id, uint64_t cluster_id,
            const std::map<uint64_t, std::string>& peer_addrs, TransportOptions options = {});
  // REQUIRES: Shutdown() was called and `cq` drained (RaftDriver does both).
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // The Raft service to register with the peer server before it is built.
  grpc::Service* service() { return &service_; }

  // Starts accepting peer streams on `cq` (the peer server's queue, polled by
  // the calling thread from now on) and opens outbound streams on demand.
  void Start(grpc::ServerCompletionQueue* cq, Sink sink);
  // Writes or queues each message for its `to` peer; messages to unknown
  // peers are dropped.
  void Send(std::vector<raft::Message> messages);
  // Cancels every stream and stops accepting new ones. Operations still in
  // flight complete (with ok=false) through the queue without starting new
  // ones, so the caller may shut the queue down right after this returns.
  // REQUIRES: the peer server has been shut down.
  void Shutdown();

  // While true, an inbound stream whose read completed is not read again
  // until ResumeReads(). gRPC 1.51 sends a WINDOW_UPDATE, in its own packet,
  // whenever a read is posted over an empty buffer; posting the read after
  // the turn's answers are out keeps that packet off the answers' path.
  void set_defer_reads(bool defer) { defer_reads_ = defer; }
  // Posts the reads deferred so far; false if there were none.
  bool ResumeReads();

  // Whether some peer's messages wait behind a write whose completion has
  // not been handled yet (`queued`), or some write at all is in that state.
  bool WaitingOnWrite(bool queued) const;

  // Messages dropped so far because a peer's queue was full or its stream
  // failed. Any thread.
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  // Outbound streams that ended with an error (could not be opened, or broke).
  // Any thread.
  uint64_t failed_streams() const { return failed_streams_.load(std::memory_order_relaxed); }

 private:
  class PeerStream;
  class InboundStream;
  class SnapshotRejecter;

  const uint64_t self_id_;
  const uint64_t cluster_id_;
  const TransportOptions options_;
  v1::Raft::AsyncService service_;
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> failed_streams_{0};

  // Raft thread only.
  grpc::ServerCompletionQueue* cq_ = nullptr;
  Sink sink_;
  bool shutting_down_ = false;
  bool defer_reads_ = false;
  std::vector<InboundStream*> paused_;  // streams whose next read is deferred
  std::map<uint64_t, std::unique_ptr<PeerStream>> peers_;  // keys constant after construction
};

}  // namespace raftkv::service
