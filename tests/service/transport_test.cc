// The peer transport between two nodes on loopback, run as raftd runs it:
// gRPC's "poll" engine, each node's queue polled by one thread that also
// makes every transport call.
#include "service/transport.h"

#include <stdlib.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "service/cq_tag.h"

namespace raftkv::service {
namespace {

constexpr uint64_t kClusterId = 7;

// One node's side of the transport: a peer server listening on loopback and
// the thread that polls its queue. Owns both; the test thread only posts
// work (Run) and reads the counters.
class Node {
 public:
  // port 0 = any free port.
  Node(uint64_t id, std::map<uint64_t, std::string> peer_addrs, int port)
      : id_(id), transport_(id, kClusterId, peer_addrs) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:" + std::to_string(port),
                             grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(transport_.service());
    // As raftd: a port still held elsewhere fails the bind (gRPC would
    // share it through SO_REUSEPORT).
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    cq_ = builder.AddCompletionQueue();
    server_ = builder.BuildAndStart();
    // A port that could not be bound leaves port() at 0 for the test to
    // check, and nothing running.
    if (server_ != nullptr) thread_ = std::thread([this] { Poll(); });
  }

  // Shuts down as raftd does: the server, then the transport on its own
  // thread, then the queue, which that thread drains before it ends.
  ~Node() {
    if (server_ == nullptr) {
      ShutdownQueue();
      return;
    }
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    Run([this] {
      transport_.Shutdown();
      stopping_ = true;
    });
    thread_.join();
  }

  int port() const { return port_; }
  uint64_t received() const { return received_.load(); }
  uint64_t failed_streams() const { return transport_.failed_streams(); }

  // Runs `task` on the polling thread, as the Raft thread would.
  void Run(std::function<void()> task) {
    absl::MutexLock lock(&mu_);
    tasks_.push_back(std::move(task));
  }

  void SendAppend(uint64_t to) {
    Run([this, to] {
      raft::Message m;
      m.set_from(id_);
      m.set_to(to);
      m.mutable_append_request()->set_term(1);
      std::vector<raft::Message> batch;
      batch.push_back(std::move(m));
      transport_.Send(std::move(batch));
    });
  }

 private:
  void Poll() {
    transport_.Start(cq_.get(), [this](const raft::Message&) { received_.fetch_add(1); });
    while (!stopping_) {
      void* tag;
      bool ok;
      // Short waits: posted tasks are picked up between them.
      if (cq_->AsyncNext(&tag, &ok, absl::ToChronoTime(absl::Now() + absl::Milliseconds(2))) ==
          grpc::CompletionQueue::GOT_EVENT) {
        static_cast<CqTag*>(tag)->OnComplete(ok);
      }
      std::vector<std::function<void()>> tasks;
      {
        absl::MutexLock lock(&mu_);
        tasks.swap(tasks_);
      }
      for (auto& task : tasks) task();
    }
    ShutdownQueue();
  }

  // Shuts the queue down and completes what was still in flight on it.
  void ShutdownQueue() {
    cq_->Shutdown();
    void* tag;
    bool ok;
    while (cq_->Next(&tag, &ok)) static_cast<CqTag*>(tag)->OnComplete(ok);
  }

  const uint64_t id_;
  Transport transport_;
  int port_ = 0;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::unique_ptr<grpc::Server> server_;
  std::atomic<uint64_t> received_{0};
  bool stopping_ = false;  // polling thread only
  absl::Mutex mu_;
  std::vector<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// Sends one append from `from` to node `to` per tick (as a leader's
// heartbeats go) until `done()` or `max_sends`; returns whether done() held.
bool SendEachTickUntil(Node* from, uint64_t to, const std::function<bool()>& done,
                       int max_sends) {
  for (int i = 0; i < max_sends; ++i) {
    if (done()) return true;
    from->SendAppend(to);
    absl::SleepFor(absl::Milliseconds(10));
  }
  return done();
}

TEST(TransportTest, AStoppedPeerCostsAFewFailedStreamsAndIsReachedAgainOnceBack) {
  auto peer = std::make_unique<Node>(2, std::map<uint64_t, std::string>{}, 0);
  const int peer_port = peer->port();
  ASSERT_NE(peer_port, 0);
  Node sender(1, {{2, "127.0.0.1:" + std::to_string(peer_port)}}, 0);
  ASSERT_NE(sender.port(), 0);

  ASSERT_TRUE(SendEachTickUntil(&sender, 2, [&] { return peer->received() > 0; }, 1000))
      << "the first append never arrived";
  ASSERT_EQ(sender.failed_streams(), 0u);

  // A second of downtime, a hundred sends: the open stream breaks, and the
  // transport then waits for the channel instead of failing a new stream
  // at every backoff (about ten of them in that second).
  peer.reset();
  SendEachTickUntil(&sender, 2, [] { return false; }, 100);
  const uint64_t failed_while_down = sender.failed_streams();
  EXPECT_GE(failed_while_down, 1u);
  EXPECT_LE(failed_while_down, 3u);

  // Back on the same port: the sender reaches it again without a stream
  // failing meanwhile (an attempt to connect that nobody polled would time
  // out and fail the next stream).
  peer = std::make_unique<Node>(2, std::map<uint64_t, std::string>{}, peer_port);
  ASSERT_EQ(peer->port(), peer_port) << "the port was taken while the peer was down";
  ASSERT_TRUE(SendEachTickUntil(&sender, 2, [&] { return peer->received() > 0; }, 1000))
      << "no append reached the restarted peer";
  EXPECT_EQ(sender.failed_streams(), failed_while_down);
}

}  // namespace
}  // namespace raftkv::service

int main(int argc, char** argv) {
  // As raftd: set before gRPC starts (raftd_main.cc says why).
  setenv("GRPC_POLL_STRATEGY", "poll", /*overwrite=*/0);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
