#include "service/client_cork.h"

#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstdlib>

#include "absl/time/clock.h"

namespace raftkv::service {
namespace {

// The local port of `fd` if it is a connected TCP socket, else -1.
int ConnectedTcpPort(int fd) {
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) return -1;
  int port;
  if (local.ss_family == AF_INET) {
    port = ntohs(reinterpret_cast<const sockaddr_in*>(&local)->sin_port);
  } else if (local.ss_family == AF_INET6) {
    port = ntohs(reinterpret_cast<const sockaddr_in6*>(&local)->sin6_port);
  } else {
    return -1;
  }
  int type = 0;
  socklen_t type_len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 || type != SOCK_STREAM) {
    return -1;
  }
  // A listener has no peer.
  sockaddr_storage peer{};
  socklen_t peer_len = sizeof peer;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) return -1;
  return port;
}

void SetCork(int fd, int on) { setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on); }

}  // namespace

ClientCork::ClientCork(int client_port, absl::Duration relist_every)
    : port_(client_port), relist_every_(relist_every) {}

ClientCork::~ClientCork() { Release(); }

void ClientCork::List() {
  connections_.clear();
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return;  // no /proc: nothing is corked
  const int own = dirfd(dir);
  while (const dirent* e = readdir(dir)) {
    char* end = nullptr;
    long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == own) continue;
    if (ConnectedTcpPort(static_cast<int>(fd)) == port_) {
      connections_.push_back(static_cast<int>(fd));
    }
  }
  closedir(dir);
}

void ClientCork::Hold(size_t answers) {
  if (holding() || answers < 2) return;
  absl::Time now = absl::Now();
  if (now - listed_at_ >= relist_every_) {
    List();
    listed_at_ = now;
  }
  if (connections_.empty() || connections_.size() > answers) return;
  for (int fd : connections_) SetCork(fd, 1);
  corked_ = connections_;
}

void ClientCork::Release() {
  for (int fd : corked_) SetCork(fd, 0);
  corked_.clear();
}

}  // namespace raftkv::service
