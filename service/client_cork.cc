#include "service/client_cork.h"

#include <algorithm>

#include "absl/time/clock.h"
#include "service/tcp_sockets.h"

namespace raftkv::service {

ClientCork::ClientCork(int client_port, absl::Duration relist_every)
    : port_(client_port), relist_every_(relist_every) {}

ClientCork::~ClientCork() { Release(); }

void ClientCork::List() {
  connections_.clear();
  for (const TcpSocket& s : ListConnectedTcpSockets()) {
    if (s.local_port == port_) connections_.push_back(s.fd);
  }
}

void ClientCork::Hold(size_t answers) {
  if (holding() || answers < 2) return;
  absl::Time now = absl::Now();
  // A listing that took over 10 ms (thousands of descriptors) spaces the
  // next ones out to keep them under 1% of this thread's time.
  const absl::Duration every = listing_took_ > absl::Milliseconds(10)
                                   ? std::max(relist_every_, 100 * listing_took_)
                                   : relist_every_;
  if (now - listed_at_ >= every) {
    List();
    listed_at_ = absl::Now();
    listing_took_ = listed_at_ - now;
  }
  if (connections_.empty() || connections_.size() > answers) return;
  for (int fd : connections_) SetTcpCork(fd, true);
  corked_ = connections_;
}

void ClientCork::Release() {
  for (int fd : corked_) SetTcpCork(fd, false);
  corked_.clear();
}

}  // namespace raftkv::service
