// ClientCork on real loopback sockets: which connections it corks, that what
// is written while they are corked stays back until Release, and that the
// Applier holds a batch's answers and releases them once the batch is done.
#include "service/client_cork.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "service/applier.h"

namespace raftkv::service {
namespace {

// A listener on 127.0.0.1 with connections to it: the accepted ends are what
// a server writes its answers on.
class Loopback {
 public:
  Loopback() {
    listener_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(listen(listener_, 16), 0);
    socklen_t len = sizeof a;
    getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~Loopback() {
    for (int fd : clients_) close(fd);
    for (int fd : accepted_) close(fd);
    close(listener_);
  }

  // Returns the accepted (server) end; its client end is client(i).
  int Connect() {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port_));
    EXPECT_EQ(connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    int s = accept(listener_, nullptr, nullptr);
    EXPECT_GE(s, 0);
    int one = 1;  // as gRPC sets it
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    clients_.push_back(c);
    accepted_.push_back(s);
    return s;
  }

  int port() const { return port_; }
  int client(size_t i) const { return clients_[i]; }

 private:
  int listener_ = -1;
  int port_ = 0;
  std::vector<int> clients_, accepted_;
};

bool Corked(int fd) {
  int on = 0;
  socklen_t len = sizeof on;
  EXPECT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, &len), 0);
  return on != 0;
}

TEST(ClientCorkTest, CorksTheServerEndsOfClientConnectionsOnly) {
  Loopback net;
  int a = net.Connect(), b = net.Connect();
  ClientCork cork(net.port(), absl::ZeroDuration());
  cork.Hold(2);
  EXPECT_TRUE(cork.holding());
  EXPECT_EQ(cork.connections(), 2u);  // not the listener, not the client ends
  EXPECT_TRUE(Corked(a));
  EXPECT_TRUE(Corked(b));
  EXPECT_FALSE(Corked(net.client(0)));
  cork.Release();
  EXPECT_FALSE(cork.holding());
  EXPECT_FALSE(Corked(a));
  EXPECT_FALSE(Corked(b));
}

TEST(ClientCorkTest, HoldsNothingForFewerAnswersThanConnectionsOrALoneAnswer) {
  Loopback net;
  int a = net.Connect(), b = net.Connect(), c = net.Connect();
  ClientCork cork(net.port(), absl::ZeroDuration());
  cork.Hold(2);
  EXPECT_FALSE(cork.holding());
  EXPECT_FALSE(Corked(a) || Corked(b) || Corked(c));

  Loopback lone;
  int d = lone.Connect();
  ClientCork lone_cork(lone.port(), absl::ZeroDuration());
  lone_cork.Hold(1);
  EXPECT_FALSE(lone_cork.holding());
  EXPECT_FALSE(Corked(d));
  lone_cork.Hold(2);
  EXPECT_TRUE(Corked(d));
}

TEST(ClientCorkTest, FindsNewConnectionsAtTheNextListing) {
  Loopback net;
  int a = net.Connect();
  ClientCork cork(net.port(), absl::ZeroDuration());
  cork.Hold(8);
  cork.Release();
  EXPECT_EQ(cork.connections(), 1u);
  int b = net.Connect();
  cork.Hold(8);
  EXPECT_EQ(cork.connections(), 2u);
  EXPECT_TRUE(Corked(a));
  EXPECT_TRUE(Corked(b));
  cork.Release();

  // Within the listing's lifetime a new connection is not looked for.
  ClientCork slow(net.port(), absl::Hours(1));
  slow.Hold(8);
  slow.Release();
  int c = net.Connect();
  slow.Hold(8);
  EXPECT_EQ(slow.connections(), 2u);
  EXPECT_FALSE(Corked(c));
  slow.Release();
}

// Waits up to 5 s for `fd` to have something to read.
bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 5000) == 1;
}

TEST(ClientCorkTest, WhatIsWrittenWhileHeldLeavesTogetherAtRelease) {
  Loopback net;
  int server = net.Connect();
  int client = net.client(0);
  ClientCork cork(net.port(), absl::ZeroDuration());
  cork.Hold(2);
  auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(write(server, "first;", 6), 6);
  ASSERT_EQ(write(server, "second", 6), 6);
  char buf[64];
  ssize_t early = recv(client, buf, sizeof buf, MSG_DONTWAIT);
  // Linux sends corked data anyway after 200 ms; a test thread descheduled
  // that long between the writes and the check could not tell.
  if (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(150)) {
    EXPECT_EQ(early, -1) << "data left while the connection was held";
  }
  cork.Release();
  ASSERT_TRUE(Readable(client));
  ssize_t n = recv(client, buf, sizeof buf, 0);
  ASSERT_EQ(n, 12);
  EXPECT_EQ(std::string(buf, 12), "first;second");
}

// A state machine that applies nothing and answers every entry with an
// empty result.
class NullStateMachine : public StateMachineBackend {
 public:
  absl::StatusOr<std::optional<v1::KeyValue>> Get(const std::string&) const override {
    return std::nullopt;
  }
  absl::Status Range(const std::string&, const std::string&, int64_t, std::vector<v1::KeyValue>*,
                     bool*) const override {
    return absl::OkStatus();
  }
  int64_t revision() const override { return 0; }
  uint64_t applied_index() const override { return 0; }
  absl::Status Validate(const v1::Command&) const override { return absl::OkStatus(); }
  absl::StatusOr<std::vector<v1::CommandResult>> Apply(
      const std::vector<raft::Entry>& entries, absl::FunctionRef<bool(uint64_t)>) override {
    return std::vector<v1::CommandResult>(entries.size());
  }
  absl::Status Sync() override { return absl::OkStatus(); }
};

// Records whether its connection was corked when it was answered.
class CheckingWaiter : public WriteWaiter {
 public:
  explicit CheckingWaiter(int fd) : fd_(fd) {}
  void Applied(const v1::CommandResult&, uint64_t) override {
    applied = true;
    corked_when_answered = Corked(fd_);
  }
  void Failed(const absl::Status&) override {}
  bool applied = false;
  bool corked_when_answered = false;

 private:
  int fd_;
};

TEST(ClientCorkTest, ApplierHoldsABatchsAnswersUntilTheBatchIsDone) {
  Loopback net;
  int server = net.Connect();
  ClientCork cork(net.port(), absl::ZeroDuration());
  NullStateMachine sm;
  Applier applier(&sm);
  applier.set_client_cork(&cork);

  // Not started: a hand-off is processed on the submitting thread.
  Applier::Handoff batch;
  std::vector<std::shared_ptr<CheckingWaiter>> waiters;
  for (uint64_t i = 1; i <= 3; ++i) {
    waiters.push_back(std::make_shared<CheckingWaiter>(server));
    batch.writes.push_back({i, 1, waiters.back()});
    raft::Entry e;
    e.set_index(i);
    e.set_term(1);
    batch.committed.push_back(e);
  }
  applier.Submit(std::move(batch));
  for (const auto& w : waiters) {
    EXPECT_TRUE(w->applied);
    EXPECT_TRUE(w->corked_when_answered);
  }
  EXPECT_FALSE(cork.holding());
  EXPECT_FALSE(Corked(server));

  // A lone write is answered uncorked.
  Applier::Handoff lone;
  auto w = std::make_shared<CheckingWaiter>(server);
  lone.writes.push_back({4, 1, w});
  raft::Entry e;
  e.set_index(4);
  e.set_term(1);
  lone.committed.push_back(e);
  applier.Submit(std::move(lone));
  EXPECT_TRUE(w->applied);
  EXPECT_FALSE(w->corked_when_answered);
  applier.Stop();
}

}  // namespace
}  // namespace raftkv::service
