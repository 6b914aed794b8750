// The client-facing gRPC services of raftd: raftkv.v1.KV and raftkv.v1.Cluster.
//
// Handlers run on gRPC's callback threads. They validate the request, then
// either hand it to the Raft thread (writes and linearizable reads on the
// leader), to the apply thread (serializable reads), or forward it
// asynchronously (writes and read-index requests on a follower), and return at
// once; the call is finished later by whichever thread completes it (a Call's
// Claim() makes sure exactly one does). No handler waits on another thread.
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

// Stubs to the other nodes' client addresses, for forwarding. Constant after
// construction; stubs are thread-safe.
class PeerClients {
 public:
  explicit PeerClients(const NodeConfig& config);
  v1::KV::Stub* kv(uint64_t id) const;            // null for unknown ids
  v1::Cluster::Stub* cluster(uint64_t id) const;  // null for unknown ids

 private:
  struct Clients {
    std::unique_ptr<v1::KV::Stub> kv;
    std::unique_ptr<v1::Cluster::Stub> cluster;
  };
  std::map<uint64_t, Clients> clients_;
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

class KvService final : public v1::KV::CallbackService {
 public:
  KvService(const NodeConfig& config, RaftDriver* driver, Applier* applier,
            const PeerClients* peers, ReadIndexForwarder* reads);

  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const v1::PutRequest* req,
                                v1::PutResponse* resp) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const v1::GetRequest* req,
                                v1::GetResponse* resp) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx, const v1::DeleteRequest* req,
                                   v1::DeleteResponse* resp) override;
  grpc::ServerUnaryReactor* Range(grpc::CallbackServerContext* ctx, const v1::RangeRequest* req,
                                  v1::RangeResponse* resp) override;
  grpc::ServerUnaryReactor* CompareAndSwap(grpc::CallbackServerContext* ctx,
                                           const v1::CompareAndSwapRequest* req,
                                           v1::CompareAndSwapResponse* resp) override;

 private:
  const NodeConfig& config_;
  RaftDriver* const driver_;
  Applier* const applier_;
  const PeerClients* const peers_;
  ReadIndexForwarder* const reads_;
  std::atomic<int> pending_{0};  // calls started and not yet finished
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
