// Options of `raftctl bench` / `raftkv-bench`: the parsed and checked command
// line. ParseOptions() is a pure function (no I/O; it only asks how many
// cores there are, for the default of --threads), so any thread may call it;
// an Options value is immutable once parsed.
//
// Invariants of a parsed Options: every endpoint is host:port on a loopback
// address unless allow_remote is set; conns <= clients; the run is bounded in
// both count (total, at most kMaxTotal) and time (duration, or max_duration
// when only a count was given).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace raftkv::bench {

enum class Workload { kPut, kGet, kMixed };
enum class KeySpace { kOne, kSequential, kRandom };
enum class Api { kRaftkv, kEtcd };
enum class Target { kLeader, kAll };

struct Options {
  static constexpr uint64_t kMaxTotal = 1'000'000'000;
  static constexpr int kMaxClients = 100'000;
  static constexpr int kMaxConns = 10'000;
  static constexpr int kMaxThreads = 256;

  bool help = false;  // --help: print Usage() and do nothing else
  Workload workload = Workload::kPut;
  Api api = Api::kRaftkv;
  std::vector<std::string> endpoints;  // host:port
  Target target = Target::kLeader;
  int conns = 1;                // gRPC channels, each its own TCP connection
  int clients = 1;              // concurrent logical clients, each one call at a time
  int threads = 1;              // completion-queue threads (default: one per core)
  uint64_t total = 0;           // stop after this many calls (0: no count limit)
  absl::Duration duration;      // stop after this long (0: no time limit)
  absl::Duration max_duration;  // the time bound when only total is given
  absl::Duration warmup;        // unrecorded load before measuring
  double rate = 0;              // target calls per second over all clients (0: as fast as possible)
  int key_size = 8;
  KeySpace key_space = KeySpace::kRandom;
  uint64_t keys = 100'000;  // size of the key space (sequential, random)
  int val_size = 256;
  bool serializable = false;   // --consistency s
  double read_fraction = 0.5;  // mixed: share of reads
  bool prefill = false;        // write every key once before a get/mixed run
  absl::Duration timeout;      // per-call deadline
  bool json = false;           // -w json
  bool allow_remote = false;   // permit non-loopback endpoints
  bool coalesce_sends = true;  // a worker's burst of calls shares TCP segments
};

// Parses argv as `bench <workload> [flags]`: argv[0] is the command name
// ("bench" or the program path) and is ignored; argv[1] is put|get|mixed (or
// --help). Flags take `--name=value` or `--name value`. Returns
// InvalidArgument with a message naming the bad flag.
absl::StatusOr<Options> ParseOptions(int argc, const char* const* argv);

// The --help text.
std::string Usage();

// An endpoint's host and port.
struct HostPort {
  std::string host;
  int port = 0;
};

// Splits "host:port" (also "[v6]:port"; an optional "http://" prefix is
// dropped); InvalidArgument unless the port is 1-65535.
absl::StatusOr<HostPort> SplitEndpoint(const std::string& endpoint);

// SplitEndpoint, then whether the host is a loopback address: 127.0.0.0/8,
// localhost or ::1.
absl::StatusOr<bool> IsLoopbackEndpoint(const std::string& endpoint);

}  // namespace raftkv::bench
