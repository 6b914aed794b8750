// LoadGenerator: drives a service with many concurrent logical clients over a
// fixed set of gRPC channels, and measures what comes back.
//
// It owns the channels, the clients and `threads` worker threads
// ("bench-cq-N"), each polling its own grpc::CompletionQueue. Each client
// belongs to one worker and has at most one call in flight, posted to that
// worker's queue; when the call completes the worker records it and starts
// the client's next call itself (or, with a target rate, hands the client
// back to the pacer), so thousands of clients need no thread each and a
// completion never hops to another thread. gRPC's callback API would run the
// same work on its own global pool and hand it between threads per call.
//
// Run() is called from one thread at a time (the bench's main thread) and
// blocks until every call of the phase has finished. Workers touch only the
// phase state below: their own results under their own mutex, the shared
// counters through atomics, and in_flight_/idle_ under mu_. Every phase is
// bounded by a call count and a wall-clock deadline; calls carry their own
// deadline too, so Run() always returns and the destructor's join ends.
//
// gRPC's C++ transport writes every call with a sendmsg of its own, a TCP
// segment each; with coalesced sends (the default) a worker corks a
// channel's socket (TCP_CORK) while it starts the calls of one burst of
// completions and uncorks it at the burst's end, so those calls share
// segments, as grpc-go's transport batches the frames queued while it
// writes. On loopback every segment costs the sender the receiver's TCP
// processing too: at 1,000 clients this took the load generator's CPU per
// call down by a quarter (docs/benchmarks.md).
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "bench/histogram.h"
#include "bench/kv_api.h"
#include "bench/options.h"

namespace raftkv::bench {

// What one phase (warm-up, prefill or measurement) does and when it stops.
struct Phase {
  Workload workload = Workload::kPut;
  KeySpace key_space = KeySpace::kRandom;
  uint64_t max_calls = 0;   // > 0
  absl::Duration max_time;  // > 0
  double rate = 0;          // calls per second; 0 = as fast as the clients go
};

struct ErrorCount {
  uint64_t count = 0;
  std::string first_message;
};

struct PhaseResult {
  uint64_t ok = 0;
  std::map<grpc::StatusCode, ErrorCount> errors;
  Histogram latency_ns;    // successful calls only
  absl::Duration elapsed;  // first call started to last call finished

  uint64_t error_count() const;
};

// Live numbers for the progress line.
struct Progress {
  absl::Duration elapsed;
  uint64_t ok = 0;
  uint64_t failed = 0;
};

class LoadGenerator {
 public:
  // Opens `options.conns` channels over `targets` (channel i goes to
  // targets[i % size]), waits up to `connect_wait` for each to connect, and
  // starts min(options.threads, options.clients) workers; client i uses
  // channel i % conns and worker i % threads.
  static absl::StatusOr<std::unique_ptr<LoadGenerator>> Create(
      const Options& options, const KvApi& api, const std::vector<std::string>& targets,
      absl::Duration connect_wait);

  // Shuts the completion queues down and joins the workers.
  ~LoadGenerator();
  LoadGenerator(const LoadGenerator&) = delete;
  LoadGenerator& operator=(const LoadGenerator&) = delete;

  // Runs one phase to completion. `on_progress`, when set, is called about
  // once a second from this thread.
  PhaseResult Run(const Phase& phase, const std::function<void(const Progress&)>& on_progress);

  // The number of worker threads.
  int threads() const { return static_cast<int>(workers_.size()); }
  // The socket found under each channel for coalesced sends (-1: none).
  const std::vector<int>& channel_sockets() const { return channel_sockets_; }

 private:
  class Client;
  struct Worker;

  explicit LoadGenerator(const Options& options);

  // A worker thread's loop: handles its queue's completions until the queue
  // is shut down and drained.
  void Poll(Worker* worker);
  // On the worker's thread: corks `channel`'s socket until the end of the
  // worker's current burst.
  void HoldChannel(Worker* worker, size_t channel);
  // Completions handled in one burst at most.
  static constexpr int kMaxBurst = 256;
  // Reserves the right to start one more call in this phase.
  bool Claim(absl::Time now);
  // Starts the client's next call; `now` is its start time.
  void StartCall(Client* client, absl::Time now);
  // On the client's worker thread, once its call's tag came out of the queue.
  void OnCallDone(Client* client);

  const Options options_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  // The socket under each channel, found when it connected; -1 if unknown.
  std::vector<int> channel_sockets_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::unique_ptr<Client>> clients_;

  // Phase state. Set by Run() before any call starts, read by the workers.
  Phase phase_;
  absl::Time deadline_;
  std::atomic<uint64_t> claimed_{0};
  std::atomic<uint64_t> sequence_{0};

  absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // clients with a call in flight or about to start
  std::vector<Client*> idle_ ABSL_GUARDED_BY(mu_);  // rate mode: clients waiting for the pacer
};

// Writes key number n as exactly `size` bytes: decimal digits, zero-padded
// on the left (n is taken modulo 10^size when it has more digits).
void FormatKey(uint64_t n, int size, std::string* out);

// "OK", "UNAVAILABLE", ... for a status code.
std::string StatusCodeName(grpc::StatusCode code);

}  // namespace raftkv::bench
