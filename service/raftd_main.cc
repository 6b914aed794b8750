// raftd: one raftkv server node. See ../shared/DESIGN.md ("service/") and
// `raftd --help`. Every flag can also be set through the environment variable
// named in its help text; a flag given on the command line wins.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "service/applier.h"
#include "service/backend.h"
#include "service/client_cork.h"
#include "service/config.h"
#include "service/kv_service.h"
#include "service/raft_driver.h"
#include "service/transport.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(uint64_t, id, 0, "This node's id, a member of --initial_cluster. Env: RAFTKV_NODE_ID.");
ABSL_FLAG(uint64_t, cluster_id, 1,
          "Cluster id; a data directory or peer of another cluster is refused. "
          "Env: RAFTKV_CLUSTER_ID.");
ABSL_FLAG(std::string, initial_cluster, "",
          "Members: ID=PEER_HOST:PORT/CLIENT_HOST:PORT,... e.g. "
          "1=127.0.0.1:7101/127.0.0.1:7001,2=127.0.0.1:7102/127.0.0.1:7002. "
          "Env: RAFTKV_INITIAL_CLUSTER.");
ABSL_FLAG(std::string, client_addr, "",
          "Listen address for clients (KV, Cluster, health, reflection); default: this "
          "node's client address in --initial_cluster. Env: RAFTKV_CLIENT_ADDR.");
ABSL_FLAG(std::string, peer_addr, "",
          "Listen address for Raft peers; default: this node's peer address in "
          "--initial_cluster. Env: RAFTKV_PEER_ADDR.");
ABSL_FLAG(std::string, http_addr, "",
          "Listen address for HTTP /metrics (reserved; not served yet). Env: RAFTKV_HTTP_ADDR.");
ABSL_FLAG(std::string, advertise_client_addr, "",
          "Client address other nodes and clients are told (leader hints); default: "
          "--initial_cluster's. Env: RAFTKV_ADVERTISE_CLIENT_ADDR.");
ABSL_FLAG(std::string, advertise_peer_addr, "",
          "Peer address this node announces; default: --initial_cluster's. "
          "Env: RAFTKV_ADVERTISE_PEER_ADDR.");
ABSL_FLAG(std::string, data_dir, "",
          "Directory for the Raft log and the key-value data (created if missing). "
          "Env: RAFTKV_DATA_DIR.");
ABSL_FLAG(int, heartbeat_ms, 100,
          "Heartbeat interval (one Raft tick), milliseconds. Env: RAFTKV_HEARTBEAT_MS.");
ABSL_FLAG(int, election_ms, 1000,
          "Election timeout, milliseconds (randomized in [t, 2t)). Env: RAFTKV_ELECTION_MS.");
ABSL_FLAG(bool, thrifty_replication, true,
          "As leader, send new entries at once only to the fewest followers that make a "
          "quorum, and to the others with each heartbeat (fewer fsyncs and less CPU per "
          "write; those followers' serializable reads may lag by up to a heartbeat). "
          "Env: RAFTKV_THRIFTY_REPLICATION.");
ABSL_FLAG(uint64_t, max_value_bytes, 1 << 20,
          "Largest value accepted, bytes. Env: RAFTKV_MAX_VALUE_BYTES.");
ABSL_FLAG(int, max_pending_requests, 10000,
          "Client calls in progress beyond which new writes get RESOURCE_EXHAUSTED. "
          "Env: RAFTKV_MAX_PENDING_REQUESTS.");
ABSL_FLAG(int, kv_threads, 1,
          "Threads serving the client port (KV, Cluster, health), each polling its own gRPC "
          "completion queue and running the handlers of the calls it receives (0..64). More "
          "threads help only with cores to spare. 0: the Raft thread serves clients itself, "
          "with no hand-off per request (faster reads and lone clients, slower loaded writes: "
          "no call is read while the log syncs); the peer port then answers client calls too. "
          "Env: RAFTKV_KV_THREADS.");
ABSL_FLAG(int, kv_poll_us, 100,
          "Once a client call has ended on a KV thread, microseconds that thread polls its "
          "queue for the client's next request before it sleeps (0..10000; 0: sleep at once). "
          "Between polls it yields the core to any other runnable thread. Saves a wake-up per "
          "request of a client that sends its next one at once (costly on VMs whose idle vCPUs "
          "halt), for up to that much CPU per call when the node is otherwise idle. "
          "Env: RAFTKV_KV_POLL_US.");
ABSL_FLAG(int, raft_poll_us, 200,
          "Once a leader's Raft thread has committed writes, while writes wait for "
          "acknowledgements, or while a lone linearizable read waits for its heartbeat round, "
          "microseconds it polls its queue for the next event before it sleeps (0..10000; 0: "
          "sleep at once). Between polls it yields the core to any other runnable thread. Saves "
          "wake-ups on a write's or read's path, for up to twice that much CPU per request when "
          "the node is otherwise idle. Env: RAFTKV_RAFT_POLL_US.");
ABSL_FLAG(bool, cork_client_answers, true,
          "Hold back the TCP segments of a batch of answers on the client connections "
          "(TCP_CORK) until the whole batch is answered, so that a connection's answers leave "
          "in one segment instead of one each: less CPU per write under load, on this node and "
          "its clients. Only for batches with at least as many answers as client connections. "
          "Env: RAFTKV_CORK_CLIENT_ANSWERS.");
ABSL_FLAG(std::string, log_level, "info",
          "Log level: trace, debug, info, warn, error. Env: RAFTKV_LOG_LEVEL.");

namespace raftkv::service {
namespace {

// Flag name -> environment variable.
constexpr std::pair<const char*, const char*> kEnv[] = {
    {"id", "RAFTKV_NODE_ID"},
    {"cluster_id", "RAFTKV_CLUSTER_ID"},
    {"initial_cluster", "RAFTKV_INITIAL_CLUSTER"},
    {"client_addr", "RAFTKV_CLIENT_ADDR"},
    {"peer_addr", "RAFTKV_PEER_ADDR"},
    {"http_addr", "RAFTKV_HTTP_ADDR"},
    {"advertise_client_addr", "RAFTKV_ADVERTISE_CLIENT_ADDR"},
    {"advertise_peer_addr", "RAFTKV_ADVERTISE_PEER_ADDR"},
    {"data_dir", "RAFTKV_DATA_DIR"},
    {"heartbeat_ms", "RAFTKV_HEARTBEAT_MS"},
    {"election_ms", "RAFTKV_ELECTION_MS"},
    {"thrifty_replication", "RAFTKV_THRIFTY_REPLICATION"},
    {"max_value_bytes", "RAFTKV_MAX_VALUE_BYTES"},
    {"max_pending_requests", "RAFTKV_MAX_PENDING_REQUESTS"},
    {"kv_threads", "RAFTKV_KV_THREADS"},
    {"kv_poll_us", "RAFTKV_KV_POLL_US"},
    {"raft_poll_us", "RAFTKV_RAFT_POLL_US"},
    {"cork_client_answers", "RAFTKV_CORK_CLIENT_ANSWERS"},
    {"log_level", "RAFTKV_LOG_LEVEL"},
};

// Applied before the command line is parsed, so the command line wins.
absl::Status ApplyEnvironment() {
  for (const auto& [flag, env] : kEnv) {
    const char* value = std::getenv(env);
    if (value == nullptr) continue;
    absl::CommandLineFlag* f = absl::FindCommandLineFlag(flag);
    std::string error;
    if (f == nullptr || !f->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat(env, "=", value, ": ", error));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<NodeConfig> ConfigFromFlags() {
  NodeConfig c;
  c.id = absl::GetFlag(FLAGS_id);
  c.cluster_id = absl::GetFlag(FLAGS_cluster_id);
  absl::StatusOr<std::map<uint64_t, PeerAddress>> members =
      ParseInitialCluster(absl::GetFlag(FLAGS_initial_cluster));
  if (!members.ok()) return members.status();
  c.members = *std::move(members);
  c.data_dir = absl::GetFlag(FLAGS_data_dir);
  c.heartbeat_ms = absl::GetFlag(FLAGS_heartbeat_ms);
  c.election_ms = absl::GetFlag(FLAGS_election_ms);
  c.thrifty_replication = absl::GetFlag(FLAGS_thrifty_replication);
  c.max_value_bytes = absl::GetFlag(FLAGS_max_value_bytes);
  c.max_pending_requests = absl::GetFlag(FLAGS_max_pending_requests);
  c.kv_threads = absl::GetFlag(FLAGS_kv_threads);
  c.kv_poll_us = absl::GetFlag(FLAGS_kv_poll_us);
  c.raft_poll_us = absl::GetFlag(FLAGS_raft_poll_us);
  c.cork_client_answers = absl::GetFlag(FLAGS_cork_client_answers);
  if (absl::Status s = ValidateConfig(c); !s.ok()) return s;
  PeerAddress& self = c.members[c.id];
  c.client_listen = absl::GetFlag(FLAGS_client_addr);
  if (c.client_listen.empty()) c.client_listen = self.client_addr;
  c.peer_listen = absl::GetFlag(FLAGS_peer_addr);
  if (c.peer_listen.empty()) c.peer_listen = self.peer_addr;
  c.http_listen = absl::GetFlag(FLAGS_http_addr);
  if (std::string a = absl::GetFlag(FLAGS_advertise_client_addr); !a.empty()) self.client_addr = a;
  if (std::string a = absl::GetFlag(FLAGS_advertise_peer_addr); !a.empty()) self.peer_addr = a;
  return c;
}

int Fail(const std::string& what, const absl::Status& s) {
  std::fprintf(stderr, "raftd: %s: %s\n", what.c_str(), std::string(s.message()).c_str());
  return 1;
}

// Peer channels (PeerChannelArguments) ping every 2 s, even when idle; a
// server that is not told to accept that would answer with GOAWAY.
void AcceptPeerKeepalives(grpc::ServerBuilder* builder) {
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
}

int Run(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "raftd: a raftkv server node.\n\n"
      "  raftd --id=1 --initial_cluster=1=127.0.0.1:7101/127.0.0.1:7001,... --data_dir=DIR\n\n"
      "Every flag may also come from the RAFTKV_* environment variable named in its help.");
  // Debian's Abseil is built without NDEBUG, so every absl::Mutex (gRPC's
  // too) would feed a deadlock-detection graph: a few percent of all CPU.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // gRPC's default poller (epoll1) has one epoll set per process: whichever
  // thread happens to poll reads any socket, wakes the thread that owns the
  // call, and wakes another thread to poll in its place. Its "poll" engine
  // polls each completion queue's own sockets, so the Raft thread reads the
  // peer streams and the KV thread the client calls. raftkv-bench, 3 nodes
  // on 2 cores: linearizable reads from one client +64%, puts from one
  // client +13%, loaded workloads within noise (-4% to +2%). The price: a
  // connection attempt is polled only from the queues of calls and watches
  // waiting on its channel, so a channel that must reconnect needs someone
  // waiting on it (Transport's AwaitChannel). Set before gRPC starts; an
  // explicit GRPC_POLL_STRATEGY wins.
  setenv("GRPC_POLL_STRATEGY", "poll", /*overwrite=*/0);
  if (absl::Status s = ApplyEnvironment(); !s.ok()) return Fail("environment", s);
  absl::ParseCommandLine(argc, argv);
  absl::StatusOr<NodeConfig> config_or = ConfigFromFlags();
  if (!config_or.ok()) return Fail("configuration", config_or.status());
  const NodeConfig config = *std::move(config_or);
  spdlog::set_level(spdlog::level::from_str(absl::GetFlag(FLAGS_log_level)));
  spdlog::flush_on(spdlog::level::info);
  spdlog::set_pattern(absl::StrCat("%Y-%m-%dT%H:%M:%S.%e [%l] node ", config.id, ": %v"));

  // Signals are taken synchronously by this thread (sigwait below); every
  // thread started from here on inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  absl::StatusOr<Backends> backends =
      OpenBackends(config.data_dir, config.cluster_id, config.id, config.voter_ids());
  if (!backends.ok()) return Fail("data directory " + config.data_dir, backends.status());

  std::map<uint64_t, std::string> peer_addrs;
  for (const auto& [id, a] : config.members) peer_addrs[id] = a.peer_addr;
  Transport transport(config.id, config.cluster_id, peer_addrs);
  // Declared before the applier, which uses it until it is destroyed.
  std::optional<ClientCork> cork;
  // The Raft thread's own, for the answers to writes this node forwarded:
  // it answers them while the applier may be answering others.
  std::optional<ClientCork> forward_cork;
  Applier applier(backends->state_machine.get());

  // Health is served by KvService (grpc.health.v1 on completion queues), not
  // by gRPC's built-in service: that one runs on the callback API, whose
  // threads would poll every socket of the process.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  // The Raft thread polls the peer server's completion queue: peer streams
  // are served on that thread. With --kv_threads=0 the same server listens
  // on the client port too and runs the client services on that queue, so
  // the Raft thread serves clients as well (each port then answers both
  // kinds of call; a peer stream still has to name its cluster and sender).
  const bool clients_on_raft_thread = config.kv_threads == 0;
  grpc::ServerBuilder peer_builder;
  int peer_port = 0;
  peer_builder.AddListeningPort(config.peer_listen, grpc::InsecureServerCredentials(), &peer_port);
  peer_builder.RegisterService(transport.service());
  std::unique_ptr<grpc::ServerCompletionQueue> raft_cq = peer_builder.AddCompletionQueue();
  peer_builder.SetMaxReceiveMessageSize(64 << 20);
  // gRPC sets SO_REUSEPORT by default: a second raftd on the same port would
  // start silently and steal half the connections. Fail at start-up instead.
  peer_builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  AcceptPeerKeepalives(&peer_builder);

  DriverOptions dopts;
  dopts.id = config.id;
  dopts.tick_ms = config.heartbeat_ms;
  dopts.election_ticks = std::max(2, config.election_ms / config.heartbeat_ms);
  dopts.thrifty_replication = config.thrifty_replication;
  dopts.leader_poll = absl::Microseconds(config.raft_poll_us);
  absl::StatusOr<std::unique_ptr<RaftDriver>> driver =
      RaftDriver::Create(dopts, backends->log.get(), &applier, &transport, raft_cq.get());
  if (!driver.ok()) return Fail("starting the Raft core", driver.status());

  KvService kv(config, driver->get(), &applier);
  int client_port = 0;
  grpc::ServerBuilder client_builder;
  grpc::ServerBuilder& client_side = clients_on_raft_thread ? peer_builder : client_builder;
  client_side.AddListeningPort(config.client_listen, grpc::InsecureServerCredentials(),
                               &client_port);
  kv.Register(&client_side, raft_cq.get());
  if (!clients_on_raft_thread) {
    // Minimal stack (see PERF-NOTES.md): sizes are checked by the handlers;
    // deadline checks are switched back on explicitly. (On the shared server
    // the peer settings stay: the handlers check sizes either way.)
    client_builder.AddChannelArgument(GRPC_ARG_MINIMAL_STACK, 1);
    client_builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    client_builder.AddChannelArgument(GRPC_ARG_ENABLE_DEADLINE_CHECKS, 1);
    // Clients may keep their channels alive with pings as often as peers do
    // (long-lived watchers of health, load balancers) without a GOAWAY.
    AcceptPeerKeepalives(&client_builder);
    client_builder.SetMaxReceiveMessageSize(static_cast<int>(config.max_value_bytes) +
                                            (64 << 10));
  }

  std::unique_ptr<grpc::Server> peer_server = peer_builder.BuildAndStart();
  if (!peer_server || peer_port == 0) {
    // With --kv_threads=0 this server holds both ports: either may be the one.
    return Fail(clients_on_raft_thread ? "listening for peers and clients" : "listening for peers",
                absl::UnavailableError(absl::StrCat(
                    "cannot bind ", config.peer_listen,
                    clients_on_raft_thread ? " or " + config.client_listen : "")));
  }
  std::unique_ptr<grpc::Server> client_server;
  if (!clients_on_raft_thread) client_server = client_builder.BuildAndStart();
  if ((!clients_on_raft_thread && !client_server) || client_port == 0) {
    peer_server->Shutdown();
    return Fail("listening for clients",
                absl::UnavailableError("cannot bind " + config.client_listen));
  }

  if (config.cork_client_answers) {
    cork.emplace(client_port);
    applier.set_client_cork(&*cork);
    forward_cork.emplace(client_port);
    (*driver)->set_client_cork(&*forward_cork);
  }
  kv.Start();
  applier.Start();
  (*driver)->Start();
  kv.SetServing(true);
  spdlog::info("raftd node {} of cluster {}: clients on {}, peers on {}, data in {}", config.id,
               config.cluster_id, config.client_listen, config.peer_listen, config.data_dir);

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("signal {}: shutting down", sig);

  // Clients first, while Raft still runs, so calls in progress can finish.
  kv.SetServing(false);
  // With --kv_threads=0 this is the peer server: its streams stay up until
  // the deadline, so Raft can still commit what the clients wait for.
  grpc::Server* clients = client_server ? client_server.get() : peer_server.get();
  clients->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  // Every KV call is finished or cancelled now; the KV threads settle them,
  // then stop. Raft and apply still run, so waiters may complete meanwhile.
  if (!kv.Shutdown(absl::Seconds(5))) {
    spdlog::warn("KV calls were still in progress at shutdown");
    if (clients_on_raft_thread) {
      // Their last completions would reach the Raft thread's queue after the
      // driver shut it down, and finishing a call there aborts. Leave as a
      // crash would: the Raft log is durable and the state machine catches
      // up from it at the next start.
      spdlog::error("exiting without stopping the Raft thread");
      std::_Exit(1);
    }
  }
  peer_server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  (*driver)->Stop();
  applier.Stop();
  if (absl::Status s = backends->state_machine->Sync(); !s.ok()) {
    spdlog::error("syncing the state machine failed: {}", s.ToString());
  }
  if (client_server) client_server->Wait();
  peer_server->Wait();
  spdlog::info("stopped");
  return 0;
}

}  // namespace
}  // namespace raftkv::service

int main(int argc, char** argv) { return raftkv::service::Run(argc, argv); }
