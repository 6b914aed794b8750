// Transport: raftd's peer-to-peer pipe for core messages (see raft.proto).
//
// Outbound: one PeerSender per peer, each with its own bounded queue and its
// own thread that keeps ONE long-lived client stream (Raft.Stream) open to that
// peer and writes everything queued since its previous write as one batch.
// Send() only appends to a queue and returns: a dead, slow or stopped peer fills
// (and then overflows, dropping messages, which Raft tolerates) its own queue
// and never blocks the Raft thread or the other peers. At most one batch per
// peer is being written at a time; HTTP/2 flow control bounds the bytes in
// flight beyond that. A failed stream drops its queue and is reopened after a
// short backoff.
//
// Inbound: RaftPeerService accepts those streams and hands each batch to a
// sink (the Raft driver's inbox), after checking the cluster id and that each
// message's ends match the stream's.
//
// Thread safety: Send() and Stop() may be called from any thread (Send() is
// called by the Raft thread). Start() and Stop() once each, from main().
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
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
  Transport(uint64_t self_id, uint64_t cluster_id,
            const std::map<uint64_t, std::string>& peer_addrs, TransportOptions options = {});
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  void Start();
  // Queues each message for its `to` peer; messages to unknown peers are dropped.
  void Send(std::vector<raft::Message> messages);
  // Cancels open streams and joins the sender threads. Idempotent.
  void Stop();

  // Messages dropped so far because a peer's queue was full or its stream failed.
  uint64_t dropped() const;

 private:
  class PeerSender;
  std::map<uint64_t, std::unique_ptr<PeerSender>> peers_;  // constant after construction
};

// The server side of Raft.Stream.
class RaftPeerService final : public v1::Raft::CallbackService {
 public:
  using Sink = std::function<void(std::vector<raft::Message>)>;
  RaftPeerService(uint64_t self_id, uint64_t cluster_id, Sink sink);

  grpc::ServerReadReactor<v1::MessageBatch>* Stream(grpc::CallbackServerContext* context,
                                                    v1::StreamSummary* summary) override;

 private:
  const uint64_t self_id_;
  const uint64_t cluster_id_;
  const Sink sink_;
};

}  // namespace raftkv::service
