#include "service/tcp_sockets.h"

#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstdlib>

namespace raftkv::service {
namespace {

// The port of an IPv4 or IPv6 address, or -1.
int Port(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&a)->sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&a)->sin6_port);
  return -1;
}

}  // namespace

std::vector<TcpSocket> ListConnectedTcpSockets() {
  std::vector<TcpSocket> out;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return out;
  const int own = dirfd(dir);
  while (const dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long n = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || n == own) continue;
    const int fd = static_cast<int>(n);
    // getsockname fails at once on a file; the type is asked only of
    // Internet sockets, so that a process with many open files pays one
    // call for each.
    sockaddr_storage local{}, peer{};
    socklen_t local_len = sizeof local, peer_len = sizeof peer;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0) continue;
    const int local_port = Port(local);
    if (local_port < 0) continue;  // a Unix socket
    int type = 0;
    socklen_t type_len = sizeof type;
    // A listener, or a socket not yet connected, has no peer.
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 || type != SOCK_STREAM ||
        getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) {
      continue;
    }
    out.push_back({fd, local_port, Port(peer)});
  }
  closedir(dir);
  return out;
}

void SetTcpCork(int fd, bool on) {
  const int value = on ? 1 : 0;
  setsockopt(fd, IPPROTO_TCP, TCP_CORK, &value, sizeof value);
}

}  // namespace raftkv::service
