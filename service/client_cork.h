// ClientCork: holds back the TCP segments of a batch of answers on a node's
// client connections, so that the answers a batch sends on one connection
// leave together.
//
// gRPC 1.51 writes each call's answer with a sendmsg of its own, and each
// becomes a segment: on loopback that is one trip through the receiving
// side's TCP stack (run by the sender, in its softirq) and one wake-up of the
// client per answer. A leader answering batches of about 330 writes over
// 100 connections (1,000 clients' puts) sent 2.36 segments per write in
// all; with the connections corked (TCP_CORK) for each batch, 1.45, and
// the three nodes' CPU per write fell by about a tenth
// (docs/benchmarks.md).
//
// gRPC does not expose its sockets (its socket mutator's interface is
// internal), so ClientCork finds them itself: the process's connected TCP
// sockets whose local port is the client port, listed from /proc/self/fd
// at most once a second when a batch wants them (less often when a listing
// takes over 10 ms, so that it stays under 1% of the answering thread's
// time however many descriptors the process has). A connection newer than
// the last listing is simply not corked. A listed descriptor that was closed
// and reused meanwhile is at worst corked for one batch and uncorked at its
// end. Only ClientCorks set TCP_CORK in raftd: the Applier's, and the Raft
// thread's for the answers to writes its node forwarded. When both hold a
// connection, the first Release lets the other's held segments go early;
// nothing is lost or reordered.
//
// Thread safety: not thread-safe; Hold and Release are called by whichever
// thread answers a batch (for the Applier's, its owner of the moment), one
// at a time.
#pragma once

#include <cstddef>
#include <vector>

#include "absl/time/time.h"

namespace raftkv::service {

class ClientCork {
 public:
  // `client_port`: the local port the node's clients connect to.
  // `relist_every`: how old the list of connections may get.
  explicit ClientCork(int client_port, absl::Duration relist_every = absl::Seconds(1));
  ClientCork(const ClientCork&) = delete;
  ClientCork& operator=(const ClientCork&) = delete;
  ~ClientCork();

  // About `answers` answers are about to be sent: corks every client
  // connection if there are at least two answers and no more connections
  // than answers (with fewer, most connections would carry one answer, and
  // the two setsockopt calls each cost more than they save). Holds nothing
  // when already held.
  void Hold(size_t answers);
  // Uncorks what Hold corked: the held segments leave now.
  void Release();

  // For tests and logs: connections in the last listing, and whether a Hold
  // is in effect.
  size_t connections() const { return connections_.size(); }
  bool holding() const { return !corked_.empty(); }

 private:
  void List();

  const int port_;
  const absl::Duration relist_every_;
  absl::Time listed_at_ = absl::InfinitePast();
  absl::Duration listing_took_;
  std::vector<int> connections_;
  std::vector<int> corked_;
};

}  // namespace raftkv::service
