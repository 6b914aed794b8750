// The client-facing gRPC services of raftd: raftkv.v1.KV (CompletionQueue
// API, its own threads) and raftkv.v1.Cluster (callback API).
//
// Handlers validate the request, then either answer it at once on their own
// thread (serializable reads), hand it to the Raft thread (writes anywhere: a
// follower's go to the leader in the peer stream; linearizable reads on the
// leader), or ask the leader for a read index (linearizable reads on a
// follower), and return; the call is finished later by
// whichever thread completes it (a call's Claim() makes sure exactly one
// does). No handler waits on another thread.
//
// Owned by main(); the driver, applier and config it points to outlive it.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "raftkv/v1/cluster.grpc.pb.h"
#include "raftkv/v1/kv.grpc.pb.h"
#include "service/applier.h"
#include "service/config.h"
#include "service/raft_driver.h"

namespace raftkv::service {

// Stubs to the other nodes' client addresses, for read-index requests (writes
// travel in the peer streams: RaftDriver::Forward). Constant after
// construction; stubs are thread-safe.
class PeerClients {
 public:
  explicit PeerClients(const NodeConfig& config);
  v1::Cluster::Stub* cluster(uint64_t id) const;  // null for unknown ids

 private:
  std::map<uint64_t, std::unique_ptr<v1::Cluster::Stub>> clients_;
};

// On a follower: gets read indexes from the leader for linearizable reads.
// One ReadIndex call in flight at a time; reads arriving meanwhile wait for the
// next call (whose index is then taken after they arrived, as linearizability
// requires), so many reads share one round trip.
class ReadIndexForwarder {
 public:
  ReadIndexForwarder(const NodeConfig& config, const RaftDriver* driver, Applier* applier,
                     const PeerClients* peers);
  void Add(std::shared_ptr<ReadWaiter> waiter);
  // At shutdown, once no new reads can arrive: waits until no ReadIndex call
  // is in flight, so that none calls back into a destroyed forwarder.
  bool WaitIdle(absl::Duration timeout);

 private:
  void StartLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Done(const grpc::Status& status, uint64_t index, uint64_t term,
            std::vector<std::shared_ptr<ReadWaiter>> batch);

  const NodeConfig& config_;
  const RaftDriver* const driver_;
  Applier* const applier_;
  const PeerClients* const peers_;

  absl::Mutex mu_;
  bool in_flight_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::shared_ptr<ReadWaiter>> waiting_ ABSL_GUARDED_BY(mu_);
};

// raftkv.v1.KV on gRPC's CompletionQueue API.
//
// Threads: config.kv_threads threads ("raftkv-kv-N"), each owning one server
// completion queue. A thread that takes a tag off its queue runs the handler
// itself, so a request is parsed, validated and handed to the Raft thread (or
// answered, for a serializable read) without any hand-off between gRPC
// threads.
//
// One heap object per call (a UnaryCall in kv_service.cc, owned through a
// shared_ptr by its queue and by whoever holds its waiter) holds the
// request, the response, the ServerContext and the responder, and is itself
// the call's WriteWaiter or ReadWaiter. Posted on a queue before a request
// arrives, it expects two tags there: its Finish and its AsyncNotifyWhenDone.
// Exactly one thread finishes a call: whoever wins the call's Claim() (the
// Raft or apply thread through the waiter, or a gRPC callback thread when the
// read forwarder fails it; the queue's thread on validation errors, or when
// the done tag says the client cancelled or its deadline passed). Once every expected tag is back the
// queue's thread "settles" the call: it destroys the ServerContext and the
// responder, lowers the pending-call count (--max_pending_requests) and drops
// its own reference; a waiter still held by the Raft or apply thread keeps
// only an empty shell alive, whose Claim() fails.
//
// Shutdown (see raftd_main.cc): server->Shutdown(deadline) first, which
// cancels every call still open when the deadline passes; then Shutdown()
// here, which waits until every posted or started call has settled (each
// cancelled call's done tag makes its thread claim and finish it), then shuts
// the queues down, drains them and joins the threads. After that no call can
// be claimed any more, so a waiter completed later (the driver and applier
// fail theirs when they stop, the driver may hold reads until it is
// destroyed) touches nothing but its own shell: never a queue, a
// ServerContext or this service.
//
// The same server also runs callback services (Cluster, health, reflection):
// gRPC 1.51 allows mixing them with async ones. Its callback threads
// ("nexting_thread") still take turns polling the process's sockets, so part
// of the network reading still happens there.
//
// Owned by main(); the driver, applier, peers, forwarder and config it points
// to outlive it. Register(), Start() and Shutdown() are called from main()'s
// thread, in that order, once each.
class KvService {
 public:
  KvService(const NodeConfig& config, RaftDriver* driver, Applier* applier,
            const PeerClients* peers, ReadIndexForwarder* reads);
  // REQUIRES: Shutdown() returned, or Start() was never called.
  ~KvService();
  KvService(const KvService&) = delete;
  KvService& operator=(const KvService&) = delete;

  // Before builder->BuildAndStart(): registers the service and adds one
  // completion queue per thread.
  void Register(grpc::ServerBuilder* builder);
  // After BuildAndStart(): posts the first requests and starts the threads.
  void Start();
  // REQUIRES: the server's Shutdown() returned. Returns false if calls were
  // still unsettled after `timeout`; the queues and threads are then left
  // running (leaked) rather than risk a Finish on a shut-down queue.
  bool Shutdown(absl::Duration timeout);

  struct State;  // everything the calls share; defined in kv_service.cc

 private:
  std::unique_ptr<State> state_;
};

class ClusterService final : public v1::Cluster::CallbackService {
 public:
  ClusterService(const NodeConfig& config, RaftDriver* driver, Applier* applier);

  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* ctx, const v1::StatusRequest* req,
                                   v1::StatusResponse* resp) override;
  grpc::ServerUnaryReactor* MemberList(grpc::CallbackServerContext* ctx,
                                       const v1::MemberListRequest* req,
                                       v1::MemberListResponse* resp) override;
  grpc::ServerUnaryReactor* ReadIndex(grpc::CallbackServerContext* ctx,
                                      const v1::ReadIndexRequest* req,
                                      v1::ReadIndexResponse* resp) override;

 private:
  const NodeConfig& config_;
  RaftDriver* const driver_;
  Applier* const applier_;
  std::atomic<int> pending_{0};
};

}  // namespace raftkv::service
