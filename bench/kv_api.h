// KvApi and KvCaller: the seam between the load generator and the service it
// drives (raftkv.v1.KV or etcdserverpb.KV), so that both get exactly the same
// load from the same engine.
//
// A KvApi is a factory, immutable after construction; any thread may use it.
// A KvCaller belongs to one logical client and has at most one call
// outstanding: it owns the stub, the request and response messages (reused
// from call to call) and the ClientContext (fresh per call, as gRPC needs).
// Calls run on gRPC's CompletionQueue API: Start() posts the call's completion
// to the given queue with the given tag, and status() is valid once that tag
// has come out of the queue. Start() may be called from any thread, but only
// after the previous call's tag has come out of its queue (and with a
// happens-before edge from that thread to this one).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/options.h"

namespace raftkv::bench {

enum class OpKind { kPut, kGet };

class KvCaller {
 public:
  virtual ~KvCaller() = default;
  // Starts a Put of the caller's fixed value, or a Get (serializable or not,
  // as fixed at construction), of `key`, failing with DEADLINE_EXCEEDED at
  // `deadline`. Exactly one event with `tag` comes out of `cq` when the call
  // has finished. REQUIRES: `cq` is not shut down.
  virtual void Start(OpKind op, const std::string& key, absl::Time deadline,
                     grpc::CompletionQueue* cq, void* tag) = 0;
  // The outcome of the last call, once its tag has come out of the queue.
  virtual const grpc::Status& status() const = 0;
};

class KvApi {
 public:
  virtual ~KvApi() = default;
  virtual std::unique_ptr<KvCaller> NewCaller(std::shared_ptr<grpc::Channel> channel,
                                              const std::string& value,
                                              bool serializable) const = 0;
  // The endpoint (one of `endpoints`) that currently leads, waiting up to
  // `wait` for a cluster that is still electing one.
  virtual absl::StatusOr<std::string> FindLeader(const std::vector<std::string>& endpoints,
                                                 absl::Duration wait) const = 0;
};

std::unique_ptr<KvApi> NewRaftkvApi();
std::unique_ptr<KvApi> NewEtcdApi();
std::unique_ptr<KvApi> NewApi(Api api);

// A channel of its own (its own subchannel pool and a distinguishing channel
// argument), so that N channels to one endpoint are N TCP connections.
std::shared_ptr<grpc::Channel> NewBenchChannel(const std::string& endpoint, int index);

}  // namespace raftkv::bench
