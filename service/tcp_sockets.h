// The process's own connected TCP sockets, listed from /proc/self/fd, and
// TCP_CORK on them.
//
// gRPC 1.51 does not expose the sockets under its channels and servers (its
// socket mutator's interface is internal), yet corking them is how a batch
// of calls or answers leaves in one segment per connection instead of one
// per call (client_cork.h; the load generator's coalesced sends). Listing
// costs a few system calls per open descriptor, so callers list rarely and
// keep what they found.
//
// Thread safety: the functions are thread-safe; the descriptors they return
// may be closed and reused by other threads at any time, so a caller acting
// on an old listing must be harmless on another descriptor (TCP_CORK set and
// cleared again, or refused on a non-socket, is).
#pragma once

#include <vector>

namespace raftkv::service {

struct TcpSocket {
  int fd;
  int local_port;
  int peer_port;
};

// Every connected TCP socket (IPv4 or IPv6) open in this process; empty when
// /proc is not mounted.
std::vector<TcpSocket> ListConnectedTcpSockets();

// Sets or clears TCP_CORK; errors (a descriptor closed meanwhile) are ignored.
void SetTcpCork(int fd, bool on);

}  // namespace raftkv::service
