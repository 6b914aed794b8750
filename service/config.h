// NodeConfig: everything raftd needs to know at start-up, parsed and checked
// once in main() from flags (each with an environment-variable equivalent) and
// then passed by const reference. Immutable after start-up; any thread may read.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace raftkv::service {

struct PeerAddress {
  std::string peer_addr;    // host:port other nodes reach for Raft traffic
  std::string client_addr;  // host:port clients (and forwarding nodes) reach
};

struct NodeConfig {
  uint64_t id = 0;
  uint64_t cluster_id = 0;
  std::string client_listen;  // host:port to bind for clients
  std::string peer_listen;    // host:port to bind for peers
  std::string http_listen;    // host:port for /metrics (later issue), may be empty
  std::string data_dir;
  std::map<uint64_t, PeerAddress> members;  // from --initial_cluster, self included
  int heartbeat_ms = 100;
  int election_ms = 1000;
  bool thrifty_replication = true;  // raft::Config::thrifty_replication
  uint64_t max_value_bytes = 1 << 20;
  uint64_t max_key_bytes = 4096;
  int max_pending_requests = 10000;
  // Threads (each with its own completion queue) that serve the client port;
  // --kv_threads, in [0, 64]. One by default: on 2 cores shared by three
  // nodes a second thread only adds wake-ups (raftkv-bench, with gRPC's epoll
  // engine: +15-50% throughput with one). 0: the Raft thread serves clients
  // itself (no hand-off per request, but no client call is read while it
  // syncs the log; docs/benchmarks.md).
  int kv_threads = 1;
  // --kv_poll_us, in [0, 10000]: once a call has ended on a KV thread, how
  // long that thread polls its queue (yielding between polls) before it
  // sleeps, so that the client's next request needs no wake-up (queue_poll.h).
  int kv_poll_us = 100;
  // --raft_poll_us, in [0, 10000]: once the Raft thread of a leader has
  // committed writes, while writes wait for acknowledgements, or while a lone
  // read waits for its heartbeat round, how long it polls its queue
  // (yielding between polls) before it sleeps, so that the next request or
  // acknowledgement needs no wake-up. 200: a lone client's next write
  // comes 110-150 µs after the commit on a VM whose wake-ups take 20-30 µs.
  int raft_poll_us = 200;
  // --cork_client_answers: a batch of answers leaves on each client
  // connection together (client_cork.h).
  bool cork_client_answers = true;

  std::vector<uint64_t> voter_ids() const;
  const PeerAddress& self() const { return members.at(id); }
};

// Parses "1=127.0.0.1:7101/127.0.0.1:7001,2=..." (id=peer_addr/client_addr).
absl::StatusOr<std::map<uint64_t, PeerAddress>> ParseInitialCluster(const std::string& spec);

// Checks the fields against each other (id listed in members, timeouts sane).
absl::Status ValidateConfig(const NodeConfig& config);

}  // namespace raftkv::service
