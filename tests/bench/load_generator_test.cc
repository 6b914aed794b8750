// LoadGenerator and the API drivers against an in-process fake server on
// 127.0.0.1: the calls that arrive (count, keys, values, flags, connections,
// concurrency) are what the options asked for, and what the generator reports
// matches what the server did.
#include "bench/load_generator.h"

#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <linux/tcp.h>  // tcp_info with tcpi_segs_out
#include <sys/socket.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "bench/kv_api.h"
#include "bench/options.h"
#include "service/tcp_sockets.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/etcd_minimal.grpc.pb.h"
#include "raftkv/v1/cluster.grpc.pb.h"
#include "raftkv/v1/kv.grpc.pb.h"

namespace raftkv::bench {
namespace {

using ::testing::HasSubstr;

// Records every call it gets. Calls whose key ends in `fail_digit` fail with
// UNAVAILABLE. Replies are sent by a finisher thread, which holds them until
// `hold` calls are pending (or 20 ms pass), so that the test can observe how
// many calls the clients keep in flight at once.
class FakeServer {
 public:
  struct Options {
    char fail_digit = 0;  // 0: never fail
    size_t hold = 1;
    std::string role = "leader";
    // Hold every call until the server stops, and leave deadlines to the client.
    bool never_reply = false;
  };

  explicit FakeServer(Options options) : options_(options), kv_(this), cluster_(this), etcd_(this) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    // Then only the client can end a call at its deadline.
    if (options_.never_reply) builder.AddChannelArgument(GRPC_ARG_MINIMAL_STACK, 1);
    builder.RegisterService(&kv_);
    builder.RegisterService(&cluster_);
    builder.RegisterService(&etcd_);
    server_ = builder.BuildAndStart();
    finisher_ = std::thread([this] { FinishLoop(); });
  }

  ~FakeServer() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    finisher_.join();
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  }

  std::string endpoint() const { return absl::StrCat("127.0.0.1:", port_); }

  struct Counts {
    uint64_t puts = 0;
    uint64_t gets = 0;
    uint64_t serializable_gets = 0;
    uint64_t ok = 0;
    uint64_t failed = 0;
    size_t max_pending = 0;
    std::set<std::string> peers;
    std::map<std::string, std::string> store;
  };
  Counts counts() {
    absl::MutexLock lock(&mu_);
    return counts_;
  }

 private:
  // Returns the status the call will be finished with.
  grpc::Status Note(grpc::CallbackServerContext* context, bool is_put, const std::string& key,
                    const std::string& value, bool serializable) {
    absl::MutexLock lock(&mu_);
    counts_.peers.insert(context->peer());
    if (is_put) {
      ++counts_.puts;
    } else {
      ++counts_.gets;
      if (serializable) ++counts_.serializable_gets;
    }
    if (options_.fail_digit != 0 && !key.empty() && key.back() == options_.fail_digit) {
      ++counts_.failed;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "no leader");
    }
    ++counts_.ok;
    if (is_put) counts_.store[key] = value;
    return grpc::Status::OK;
  }

  grpc::ServerUnaryReactor* Hold(grpc::CallbackServerContext* context, grpc::Status status) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    absl::MutexLock lock(&mu_);
    pending_.emplace_back(reactor, std::move(status));
    counts_.max_pending = std::max(counts_.max_pending, pending_.size());
    return reactor;
  }

  void FinishLoop() {
    while (true) {
      std::deque<std::pair<grpc::ServerUnaryReactor*, grpc::Status>> batch;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stop_ || (!options_.never_reply && pending_.size() >= options_.hold);
        };
        mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(20));
        if (options_.never_reply && !stop_) continue;
        batch.swap(pending_);
        if (stop_ && batch.empty()) return;
      }
      for (auto& [reactor, status] : batch) reactor->Finish(status);
    }
  }

  class Kv : public raftkv::v1::KV::CallbackService {
   public:
    explicit Kv(FakeServer* s) : s_(s) {}
    grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* c, const raftkv::v1::PutRequest* q,
                                  raftkv::v1::PutResponse*) override {
      return s_->Hold(c, s_->Note(c, true, q->key(), q->value(), false));
    }
    grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* c, const raftkv::v1::GetRequest* q,
                                  raftkv::v1::GetResponse*) override {
      return s_->Hold(c, s_->Note(c, false, q->key(), "", q->serializable()));
    }

   private:
    FakeServer* const s_;
  };

  class Cluster : public raftkv::v1::Cluster::CallbackService {
   public:
    explicit Cluster(FakeServer* s) : s_(s) {}
    grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* c,
                                     const raftkv::v1::StatusRequest*,
                                     raftkv::v1::StatusResponse* response) override {
      response->set_role(s_->options_.role);
      grpc::ServerUnaryReactor* reactor = c->DefaultReactor();
      reactor->Finish(grpc::Status::OK);
      return reactor;
    }

   private:
    FakeServer* const s_;
  };

  class Etcd : public etcdserverpb::KV::CallbackService {
   public:
    explicit Etcd(FakeServer* s) : s_(s) {}
    grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* c, const etcdserverpb::PutRequest* q,
                                  etcdserverpb::PutResponse*) override {
      return s_->Hold(c, s_->Note(c, true, q->key(), q->value(), false));
    }
    grpc::ServerUnaryReactor* Range(grpc::CallbackServerContext* c,
                                    const etcdserverpb::RangeRequest* q,
                                    etcdserverpb::RangeResponse*) override {
      return s_->Hold(c, s_->Note(c, false, q->key(), "", q->serializable()));
    }

   private:
    FakeServer* const s_;
  };

  const Options options_;
  Kv kv_;
  Cluster cluster_;
  Etcd etcd_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::thread finisher_;

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::pair<grpc::ServerUnaryReactor*, grpc::Status>> pending_ ABSL_GUARDED_BY(mu_);
  Counts counts_ ABSL_GUARDED_BY(mu_);
};

raftkv::bench::Options MustParse(std::vector<std::string> args) {
  args.insert(args.begin(), "bench");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  auto o = ParseOptions(static_cast<int>(argv.size()), argv.data());
  EXPECT_TRUE(o.ok()) << o.status();
  return o.ok() ? *o : raftkv::bench::Options();
}

Phase PhaseOf(const raftkv::bench::Options& o) {
  return Phase{o.workload, o.key_space, o.total, o.duration, o.rate};
}

std::unique_ptr<LoadGenerator> MustCreate(const raftkv::bench::Options& o, const KvApi& api,
                                          const std::string& endpoint) {
  auto g = LoadGenerator::Create(o, api, {endpoint}, absl::Seconds(5));
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? std::move(*g) : nullptr;
}

TEST(LoadGeneratorTest, SequentialPutsWriteEveryKeyOnceWithTheValueSize) {
  FakeServer server({});
  const auto o =
      MustParse({"put", "--endpoints=" + server.endpoint(), "--clients=4", "--conns=2",
                 "--total=100", "--key-space=sequential", "--keys=100", "--val-size=33"});
  const auto api = NewRaftkvApi();
  auto g = MustCreate(o, *api, server.endpoint());
  ASSERT_NE(g, nullptr);
  const PhaseResult r = g->Run(PhaseOf(o), nullptr);
  EXPECT_EQ(r.ok, 100u);
  EXPECT_EQ(r.error_count(), 0u);
  EXPECT_EQ(r.latency_ns.count(), 100u);
  EXPECT_GT(r.latency_ns.min(), 0u);
  EXPECT_GT(r.elapsed, absl::ZeroDuration());
  const auto c = server.counts();
  EXPECT_EQ(c.puts, 100u);
  ASSERT_EQ(c.store.size(), 100u);
  EXPECT_EQ(c.store.begin()->first, "00000000");
  EXPECT_EQ(c.store.rbegin()->first, "00000099");
  for (const auto& [key, value] : c.store) ASSERT_EQ(value.size(), 33u) << key;
}

TEST(LoadGeneratorTest, ErrorsAreCountedByStatusCodeWithTheServersMessage) {
  FakeServer server({.fail_digit = '7'});
  const auto o = MustParse({"put", "--endpoints=" + server.endpoint(), "--clients=16", "--conns=4",
                            "--total=500", "--keys=1000"});
  const auto api = NewRaftkvApi();
  auto g = MustCreate(o, *api, server.endpoint());
  ASSERT_NE(g, nullptr);
  const PhaseResult r = g->Run(PhaseOf(o), nullptr);
  const auto c = server.counts();
  EXPECT_EQ(c.puts, 500u);
  EXPECT_GT(c.failed, 0u);
  EXPECT_EQ(r.ok, c.ok);
  EXPECT_EQ(r.latency_ns.count(), c.ok);
  ASSERT_EQ(r.errors.size(), 1u);
  const auto& e = r.errors.at(grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(e.count, c.failed);
  EXPECT_EQ(e.first_message, "no leader");
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::UNAVAILABLE), "UNAVAILABLE");
}

// The names of this process's threads that start with `prefix`.
std::vector<std::string> ThreadsNamed(const std::string& prefix) {
  std::vector<std::string> names;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    if (std::getline(comm, name) && name.rfind(prefix, 0) == 0) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST(LoadGeneratorTest, ManyClientsOnTwoQueueThreadsCompleteExactlyTheTotal) {
  FakeServer server({.hold = 50});
  const auto o = MustParse({"put", "--endpoints=" + server.endpoint(), "--clients=300",
                            "--conns=6", "--threads=2", "--total=5000", "--key-space=sequential",
                            "--keys=5000"});
  const auto api = NewRaftkvApi();
  auto g = MustCreate(o, *api, server.endpoint());
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->threads(), 2);
  EXPECT_EQ(ThreadsNamed("bench-cq-"), (std::vector<std::string>{"bench-cq-0", "bench-cq-1"}));
  // Two phases on the same threads: the second starts from clean counts.
  for (int phase = 0; phase < 2; ++phase) {
    const PhaseResult r = g->Run(PhaseOf(o), nullptr);
    EXPECT_EQ(r.ok, 5000u);
    EXPECT_EQ(r.error_count(), 0u);
    EXPECT_EQ(r.latency_ns.count(), 5000u);
  }
  const auto c = server.counts();
  EXPECT_EQ(c.puts, 10000u);
  EXPECT_EQ(c.store.size(), 5000u);
  EXPECT_EQ(c.peers.size(), 6u);
  // Replies were held until 50 calls waited: the clients of both threads
  // were in flight together.
  EXPECT_GE(c.max_pending, 50u);
  g.reset();
  EXPECT_THAT(ThreadsNamed("bench-cq-"), ::testing::IsEmpty());
}

TEST(LoadGeneratorTest, ErrorsFromEveryThreadAreMergedByStatusCode) {
  FakeServer server({.fail_digit = '3'});
  const auto o = MustParse({"put", "--endpoints=" + server.endpoint(), "--clients=40",
                            "--conns=4", "--threads=3", "--total=2000", "--keys=1000"});
  const auto api = NewRaftkvApi();
  auto g = MustCreate(o, *api, server.endpoint());
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->threads(), 3);
  const PhaseResult r = g->Run(PhaseOf(o), nullptr);
  const auto c = server.counts();
  EXPECT_EQ(c.puts, 2000u);
  EXPECT_EQ(r.ok, c.ok);
  EXPECT_EQ(r.latency_ns.count(), c.ok);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors.at(grpc::StatusCode::UNAVAILABLE).count, c.failed);
  EXPECT_EQ(r.errors.at(grpc::StatusCode::UNAVAILABLE).first_message, "no leader");
}

TEST(LoadGeneratorTest, EachConnectionIsItsOwnTcpConnection) {
  FakeServer server({});
  const auto o = MustParse(
      {"put", "--endpoints=" + server.endpoint(), "--clients=10", "--conns=5", "--total=200"});
  const auto api = NewRaftkvApi();
  auto g = MustCreate(o, *api, server.endpoint());
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->Run(PhaseOf(o), nullptr).ok, 200u);
  EXPECT_EQ(server.counts().peers.size(), 5u);
}

bool Corked(int fd) {
  int on = 0;
  socklen_t len = sizeof on;
  getsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, &len);
  return on != 0;
}

// Segments sent so far on the sockets `fds`.
uint64_t SegmentsOut(const std::vector<int>& fds) {
  uint64_t n = 0;
  for (int fd : fds) {
    tcp_info info{};
    socklen_t len = sizeof info;
    EXPECT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len), 0);
    n += info.tcpi_segs_out;
  }
  return n;
}

// The server answers 20 calls at a time, so each burst of completions starts
// 20 calls over 4 connections: coalesced, they leave in far fewer segments
// than one each; and no socket is left corked once the run is over.
TEST(LoadGeneratorTest, CoalescedSendsShareSegmentsAndLeaveNoSocketCorked) {
  FakeServer server({.hold = 20});
  const int port = std::stoi(server.endpoint().substr(server.endpoint().rfind(':') + 1));
  const auto api = NewRaftkvApi();
  uint64_t segments[2] = {0, 0};
  for (bool coalesce : {false, true}) {
    const auto o = MustParse({"put", "--endpoints=" + server.endpoint(), "--clients=40",
                              "--conns=4", "--threads=1", "--total=4000",
                              absl::StrCat("--coalesce-sends=", coalesce ? "true" : "false")});
    auto g = MustCreate(o, *api, server.endpoint());
    ASSERT_NE(g, nullptr);
    // The client ends of this generator's connections (the previous one's
    // are closed).
    std::vector<int> fds;
    for (const service::TcpSocket& s : service::ListConnectedTcpSockets()) {
      if (s.peer_port == port) fds.push_back(s.fd);
    }
    ASSERT_EQ(fds.size(), 4u);
    std::vector<int> found = g->channel_sockets();
    if (coalesce) {
      std::sort(found.begin(), found.end());
      EXPECT_EQ(found, fds);
    } else {
      EXPECT_THAT(found, ::testing::Each(-1));  // not looked for
    }
    const uint64_t before = SegmentsOut(fds);
    EXPECT_EQ(g->Run(PhaseOf(o), nullptr).ok, 4000u);
    segments[coalesce] = SegmentsOut(fds) - before;
    for (int fd : fds) EXPECT_FALSE(Corked(fd));
  }
  EXPECT_GE(segments[0], 4000u) << "a segment per call when not coalesced";
  EXPECT_LT(segments[1], segments[0] * 2 / 3)
      << "coalesced: " << segments[1] << " segments, against " << segments[0];
}

TEST(LoadGeneratorTest, ClientsKeepExactlyOneCallEachInFlight) {
  FakeServer server({.hold = 8});
  const auto o = MustParse(
      {"put", "--endpoints=" + server.endpoint(), "--clients=8", "--conns=2", "--total=400"});
  const auto api = NewRaftkvApi();
  auto g = MustCreate(o, *api, server.endpoint());
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->Run(PhaseOf(o), nullptr).ok, 400u);
  // The server holds replies until 8 calls wait: all clients were in flight
  // together, and never more than one call each.
  EXPECT_EQ(server.counts().max_pending, 8u);
}

TEST(LoadGeneratorTest, ADurationStopsTheRunAndNothingIsSentAfterIt) {
  FakeServer server({});
  const auto o = MustParse({"put", "--endpoints=" + server.endpoint(), "--clients=4",
                            "--duration=300ms", "--timeout=2s"});
  const auto api = NewRaftkvApi();
  auto g = MustCreate(o, *api, server.endpoint());
  ASSERT_NE(g, nullptr);
  std::vector<Progress> progress;
  const PhaseResult r = g->Run(PhaseOf(o), [&](const Progress& p) { progress.push_back(p); });
  EXPECT_GT(r.ok, 0u);
  EXPECT_GE(r.elapsed, absl::Milliseconds(290));
  EXPECT_LT(r.elapsed, absl::Milliseconds(300) + o.timeout);
  const uint64_t seen = server.counts().puts;
  EXPECT_EQ(seen, r.ok);
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(server.counts().puts, seen);
}

// A server that never answers (and, on gRPC's minimal stack, does not end
// calls at their deadline either) cannot hold a run: each call ends at its
// --timeout on the client.
TEST(LoadGeneratorTest, ACallThatGetsNoAnswerFailsAtItsTimeout) {
  FakeServer server({.never_reply = true});
  const auto o = MustParse({"put", "--endpoints=" + server.endpoint(), "--clients=2",
                            "--total=4", "--timeout=200ms"});
  const auto api = NewRaftkvApi();
  auto g = MustCreate(o, *api, server.endpoint());
  ASSERT_NE(g, nullptr);
  const PhaseResult r = g->Run(PhaseOf(o), nullptr);
  EXPECT_EQ(r.ok, 0u);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors.at(grpc::StatusCode::DEADLINE_EXCEEDED).count, 4u);
  EXPECT_LT(r.elapsed, absl::Seconds(5));
}

TEST(LoadGeneratorTest, ARateCapsTheCallsStarted) {
  FakeServer server({});
  const auto o = MustParse(
      {"put", "--endpoints=" + server.endpoint(), "--clients=4", "--duration=500ms", "--rate=100"});
  const auto api = NewRaftkvApi();
  auto g = MustCreate(o, *api, server.endpoint());
  ASSERT_NE(g, nullptr);
  const PhaseResult r = g->Run(PhaseOf(o), nullptr);
  // At time t the pacer has started at most floor(t * rate) + 1 calls.
  EXPECT_LE(r.ok, 51u);
  EXPECT_GE(r.ok, 10u);
  EXPECT_EQ(server.counts().puts, r.ok);
}

TEST(LoadGeneratorTest, ReadsAskForTheConsistencyGiven) {
  FakeServer server({});
  const auto api = NewRaftkvApi();
  for (const bool serializable : {false, true}) {
    const auto o =
        MustParse({"get", "--endpoints=" + server.endpoint(), "--clients=3", "--total=30",
                   "--key-space=one", serializable ? "--consistency=s" : "--consistency=l"});
    auto g = MustCreate(o, *api, server.endpoint());
    ASSERT_NE(g, nullptr);
    EXPECT_EQ(g->Run(PhaseOf(o), nullptr).ok, 30u);
  }
  const auto c = server.counts();
  EXPECT_EQ(c.gets, 60u);
  EXPECT_EQ(c.serializable_gets, 30u);
  EXPECT_EQ(c.puts, 0u);
}

TEST(LoadGeneratorTest, MixedFollowsTheReadFraction) {
  FakeServer server({});
  const auto api = NewRaftkvApi();
  const auto o = MustParse({"mixed", "--endpoints=" + server.endpoint(), "--clients=4",
                            "--total=1000", "--read-fraction=0.25"});
  auto g = MustCreate(o, *api, server.endpoint());
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->Run(PhaseOf(o), nullptr).ok, 1000u);
  const auto c = server.counts();
  EXPECT_EQ(c.gets + c.puts, 1000u);
  EXPECT_GT(c.gets, 150u);
  EXPECT_LT(c.gets, 350u);
}

TEST(LoadGeneratorTest, EtcdDriverSpeaksEtcdserverpbKv) {
  FakeServer server({});
  const auto api = NewEtcdApi();
  const auto puts =
      MustParse({"put", "--api=etcd", "--endpoints=" + server.endpoint(), "--total=20",
                 "--key-space=sequential", "--keys=20", "--val-size=5"});
  auto g = MustCreate(puts, *api, server.endpoint());
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->Run(PhaseOf(puts), nullptr).ok, 20u);
  const auto reads = MustParse(
      {"get", "--api=etcd", "--endpoints=" + server.endpoint(), "--total=10", "--consistency=s"});
  g = MustCreate(reads, *api, server.endpoint());
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->Run(PhaseOf(reads), nullptr).ok, 10u);
  const auto c = server.counts();
  EXPECT_EQ(c.store.size(), 20u);
  EXPECT_EQ(c.store.at("00000019"), "abcde");
  EXPECT_EQ(c.serializable_gets, 10u);
}

TEST(LoadGeneratorTest, FindLeaderAsksEachEndpointsRole) {
  FakeServer follower({.role = "follower"});
  FakeServer leader({.role = "leader"});
  const auto api = NewRaftkvApi();
  const auto found =
      api->FindLeader({follower.endpoint(), leader.endpoint()}, absl::Milliseconds(500));
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, leader.endpoint());
  const auto none = api->FindLeader({follower.endpoint()}, absl::Milliseconds(300));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("is follower"));
}

TEST(LoadGeneratorTest, NoServerMeansAClearErrorNotAHang) {
  std::string endpoint;
  {
    FakeServer gone({});
    endpoint = gone.endpoint();
  }
  const auto o = MustParse({"put", "--endpoints=" + endpoint});
  const auto api = NewRaftkvApi();
  auto g = LoadGenerator::Create(o, *api, {endpoint}, absl::Milliseconds(500));
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(g.status().message()), HasSubstr("could not connect to " + endpoint));
}

TEST(FormatKeyTest, ZeroPaddedDecimalOfTheGivenSize) {
  std::string k;
  FormatKey(42, 8, &k);
  EXPECT_EQ(k, "00000042");
  FormatKey(0, 3, &k);
  EXPECT_EQ(k, "000");
  FormatKey(12345, 3, &k);
  EXPECT_EQ(k, "345");
}

}  // namespace
}  // namespace raftkv::bench
