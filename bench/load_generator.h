// LoadGenerator: drives a service with many concurrent logical clients over a
// fixed set of gRPC channels, and measures what comes back.
//
// It owns the channels and the clients. Each client has at most one call in
// flight; when a call finishes its gRPC callback records the latency and
// starts the client's next call at once (or, with a target rate, hands the
// client back to the pacer), so thousands of clients need no thread each.
//
// Run() is called from one thread at a time (the bench's main thread) and
// blocks until every call of the phase has finished. The clients' callbacks
// run on gRPC's threads and touch only the phase state below, under mu_ or
// through atomics. Every phase is bounded by a call count and a wall-clock
// deadline; calls carry their own deadline too, so Run() always returns.
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
  // targets[i % size]) and waits up to `connect_wait` for each to connect.
  static absl::StatusOr<std::unique_ptr<LoadGenerator>> Create(
      const Options& options, const KvApi& api, const std::vector<std::string>& targets,
      absl::Duration connect_wait);

  ~LoadGenerator();
  LoadGenerator(const LoadGenerator&) = delete;
  LoadGenerator& operator=(const LoadGenerator&) = delete;

  // Runs one phase to completion. `on_progress`, when set, is called about
  // once a second from this thread.
  PhaseResult Run(const Phase& phase, const std::function<void(const Progress&)>& on_progress);

 private:
  class Client;

  explicit LoadGenerator(const Options& options);

  // Reserves the right to start one more call in this phase.
  bool Claim();
  void StartCall(Client* client);
  void OnCallDone(Client* client, const grpc::Status& status);

  const Options options_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<Client>> clients_;

  // Phase state. Set by Run() before any call starts, read by callbacks.
  Phase phase_;
  absl::Time deadline_;
  std::atomic<uint64_t> claimed_{0};
  std::atomic<uint64_t> sequence_{0};
  std::atomic<uint64_t> done_ok_{0};
  std::atomic<uint64_t> done_failed_{0};

  absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Client*> idle_ ABSL_GUARDED_BY(mu_);  // rate mode: clients waiting for the pacer
  PhaseResult result_ ABSL_GUARDED_BY(mu_);
  absl::Time last_done_ ABSL_GUARDED_BY(mu_);
};

// Writes key number n as exactly `size` bytes: decimal digits, zero-padded
// on the left (n is taken modulo 10^size when it has more digits).
void FormatKey(uint64_t n, int size, std::string* out);

// "OK", "UNAVAILABLE", ... for a status code.
std::string StatusCodeName(grpc::StatusCode code);

}  // namespace raftkv::bench
