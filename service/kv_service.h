// The client-facing gRPC services of raftd, all on gRPC's CompletionQueue
// API and the same threads: raftkv.v1.KV, raftkv.v1.Cluster and
// grpc.health.v1.Health. (Reflection, a synchronous service, is added by
// gRPC's plugin; its threads wait on a queue that polls no socket.)
//
// Handlers validate the request, then either answer it at once on their own
// thread (serializable reads, membership, health), or hand it to the Raft
// thread (writes and linearizable reads anywhere: a follower's go to the
// leader in the peer stream; status queries), and return; the call is
// finished later by whichever thread completes it (a call's Claim() makes
// sure exactly one does). No handler waits on another thread.
//
// No callback-API service or stub runs in raftd: gRPC would start its
// callback threads ("nexting_thread"), which take turns polling every socket
// of the process and hand what they read to the thread that owns it.
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
#include "grpc/health/v1/health.grpc.pb.h"
#include "raftkv/v1/cluster.grpc.pb.h"
#include "raftkv/v1/kv.grpc.pb.h"
#include "service/applier.h"
#include "service/config.h"
#include "service/raft_driver.h"

namespace raftkv::service {

// raftkv.v1.KV, raftkv.v1.Cluster and grpc.health.v1.Health on gRPC's
// CompletionQueue API.
//
// Threads: config.kv_threads threads ("raftkv-kv-N"), each owning one server
// completion queue. A thread that takes a tag off its queue runs the handler
// itself, so a request is parsed, validated and handed to the Raft thread (or
// answered, for a serializable read) without any hand-off between gRPC
// threads. Once a call has ended on a KV thread, the thread polls its queue
// for up to config.kv_poll_us before it sleeps (queue_poll.h), so that the
// client's next request finds it awake. With kv_threads == 0 there is no KV
// thread: the calls live on the Raft thread's queue (Register()), and "the
// queue's thread" below is the Raft thread, which then also runs every
// handler (they never block).
//
// One heap object per call (a UnaryCall in kv_service.cc, owned through a
// shared_ptr by its queue and by whoever holds its waiter) holds the
// request, the response, the ServerContext and the responder, and is itself
// the call's WriteWaiter or ReadWaiter. Posted on a queue before a request
// arrives, it expects two tags there: its Finish and its AsyncNotifyWhenDone.
// Exactly one thread finishes a call: whoever wins the call's Claim() (the
// Raft or apply thread through the waiter; the queue's thread on validation
// errors, or when the done tag says the client cancelled or its deadline
// passed). Once every expected tag is back the queue's thread "settles" the
// call: it destroys the ServerContext and the responder, lowers the
// pending-call count (--max_pending_requests) and drops its own reference; a
// waiter still held by the Raft or apply thread keeps only an empty shell
// alive, whose Claim() fails. A health Watch stream is one object too
// (HealthWatch), with one write in flight at a time.
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
// Owned by main(); the driver, applier and config it points to outlive it.
// Register(), Start(), SetServing() and Shutdown() are called from main()'s
// thread, in that order (SetServing() twice: true once started, false at
// shutdown).
class KvService {
 public:
  KvService(const NodeConfig& config, RaftDriver* driver, Applier* applier);
  // REQUIRES: Shutdown() returned, or Start() was never called.
  ~KvService();
  KvService(const KvService&) = delete;
  KvService& operator=(const KvService&) = delete;

  // Before builder->BuildAndStart(): registers the services and adds one
  // completion queue per KV thread. With config.kv_threads == 0, `builder`
  // is the peer server's and the calls go on `raft_cq`, its queue, which the
  // Raft thread polls: that thread then runs the handlers and completes the
  // calls itself, and no KV thread starts.
  void Register(grpc::ServerBuilder* builder, grpc::ServerCompletionQueue* raft_cq);
  // After BuildAndStart(): posts the first requests and starts the threads.
  void Start();
  // What health checks answer: SERVING or NOT_SERVING (until the first call,
  // NOT_SERVING). false is final: the server is shutting down; open Watch
  // streams get NOT_SERVING and then end, so the server's Shutdown() need not
  // wait for them.
  void SetServing(bool serving);
  // REQUIRES: the server's Shutdown() returned. Returns false if calls were
  // still unsettled after `timeout`; the queues and threads are then left
  // running (leaked) rather than risk a Finish on a shut-down queue.
  bool Shutdown(absl::Duration timeout);

  struct State;  // everything the calls share; defined in kv_service.cc

 private:
  std::unique_ptr<State> state_;
};

}  // namespace raftkv::service
