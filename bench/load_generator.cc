#include "bench/load_generator.h"

#include <pthread.h>

#include <algorithm>
#include <random>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "bench/options.h"
#include "service/tcp_sockets.h"

namespace raftkv::bench {

// One completion queue and the thread that polls it. The queue and thread
// are constant after Create(); the results are written by the thread and
// collected by Run().
struct LoadGenerator::Worker {
  explicit Worker(int index) : index(index) {}

  const int index;
  grpc::CompletionQueue cq;
  std::thread thread;

  // Live numbers for the progress line; written only by this worker.
  std::atomic<uint64_t> ok{0};
  std::atomic<uint64_t> failed{0};

  // Coalesced sends: the sockets this thread corked in its current burst,
  // and for each channel the burst that last corked it. Thread's own.
  std::vector<int> held;
  std::vector<uint64_t> held_in;
  uint64_t burst = 0;
  bool coalescing = false;  // past the burst's first call

  // Uncontended but for Run() resetting and collecting it between phases;
  // it keeps a late completion after a phase's hard stop from racing them.
  absl::Mutex mu;
  PhaseResult result ABSL_GUARDED_BY(mu);
  absl::Time last_done ABSL_GUARDED_BY(mu);
};

// A logical client: its call slot and its key stream. Touched only by the
// client's own chain of calls, one at a time: on its worker's thread, or on
// Run()'s thread when Run() starts a call (first calls, rate mode), with gRPC's
// queue or mu_ ordering the hand-over.
class LoadGenerator::Client {
 public:
  Client(Worker* worker, uint64_t seed) : worker(worker), rng(seed) {}

  Worker* const worker;
  size_t channel = 0;
  std::unique_ptr<KvCaller> caller;
  std::mt19937_64 rng;
  absl::Time started;
  std::string key;
};

uint64_t PhaseResult::error_count() const {
  uint64_t n = 0;
  for (const auto& [code, e] : errors) n += e.count;
  return n;
}

LoadGenerator::LoadGenerator(const Options& options) : options_(options) {}

LoadGenerator::~LoadGenerator() {
  // A phase that hit its hard stop may leave calls in flight; Next() still
  // returns them after Shutdown() (they all have deadlines), and their
  // completions start nothing new because the phase's deadline has passed.
  for (auto& w : workers_) w->cq.Shutdown();
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
}

absl::StatusOr<std::unique_ptr<LoadGenerator>> LoadGenerator::Create(
    const Options& options, const KvApi& api, const std::vector<std::string>& targets,
    absl::Duration connect_wait) {
  if (targets.empty()) return absl::InvalidArgumentError("no endpoints to load");
  std::unique_ptr<LoadGenerator> g(new LoadGenerator(options));
  const absl::Time give_up = absl::Now() + connect_wait;
  // gRPC does not say which socket a channel uses: it is the one to the
  // target that appears while the channel connects (channels connect one at
  // a time), found by listing the process's sockets after each connect and
  // comparing with the listing before. Not found (two appeared): that
  // channel's calls are not coalesced.
  absl::flat_hash_set<int> listed;
  if (options.coalesce_sends) {
    for (const service::TcpSocket& s : service::ListConnectedTcpSockets()) listed.insert(s.fd);
  }
  for (int i = 0; i < options.conns; ++i) {
    const std::string& target = targets[i % targets.size()];
    auto channel = NewBenchChannel(target, i);
    if (!channel->WaitForConnected(absl::ToChronoTime(give_up))) {
      return absl::UnavailableError(absl::StrCat("could not connect to ", target, " within ",
                                                 absl::FormatDuration(connect_wait)));
    }
    int socket = -1;
    if (options.coalesce_sends) {
      const absl::StatusOr<HostPort> endpoint = SplitEndpoint(target);
      const int port = endpoint.ok() ? endpoint->port : -1;
      int appeared = 0;
      absl::flat_hash_set<int> now;
      for (const service::TcpSocket& s : service::ListConnectedTcpSockets()) {
        now.insert(s.fd);
        if (s.peer_port == port && !listed.contains(s.fd)) {
          socket = s.fd;
          ++appeared;
        }
      }
      if (appeared != 1) socket = -1;
      listed = std::move(now);
    }
    g->channels_.push_back(std::move(channel));
    g->channel_sockets_.push_back(socket);
  }
  const int threads = std::max(1, std::min(options.threads, options.clients));
  for (int i = 0; i < threads; ++i) {
    g->workers_.push_back(std::make_unique<Worker>(i));
    g->workers_.back()->held_in.assign(g->channels_.size(), 0);
  }
  std::string value(options.val_size, 'x');
  for (int i = 0; i < options.val_size; ++i) value[i] = static_cast<char>('a' + i % 26);
  std::mt19937_64 seeder(0x5eed);
  for (int i = 0; i < options.clients; ++i) {
    auto client = std::make_unique<Client>(g->workers_[i % threads].get(), seeder());
    client->channel = i % g->channels_.size();
    client->caller = api.NewCaller(g->channels_[client->channel], value, options.serializable);
    g->clients_.push_back(std::move(client));
  }
  for (auto& w : g->workers_) {
    Worker* worker = w.get();
    LoadGenerator* generator = g.get();
    w->thread = std::thread([generator, worker] { generator->Poll(worker); });
    // Named here, not by the thread itself: the name is there once Create()
    // returns (tools and the tests look for it).
    pthread_setname_np(w->thread.native_handle(),
                       absl::StrCat("bench-cq-", worker->index % 1000).c_str());
  }
  return g;
}

void LoadGenerator::Poll(Worker* w) {
  void* tag = nullptr;
  bool ok = false;
  // A client-side Finish() always completes with ok == true.
  if (!options_.coalesce_sends) {
    while (w->cq.Next(&tag, &ok)) OnCallDone(static_cast<Client*>(tag));
    return;
  }
  while (w->cq.Next(&tag, &ok)) {
    // The first call of a burst leaves at once: alone (one client, say), it
    // has nothing to share a segment with.
    ++w->burst;
    w->coalescing = false;
    OnCallDone(static_cast<Client*>(tag));
    w->coalescing = true;
    // What has completed meanwhile (the rest of a batch of answers) belongs
    // to the same burst: the calls it starts share the held segments. The
    // burst is bounded, so that a steady stream of completions cannot hold
    // calls back for long.
    for (int i = 1; i < kMaxBurst && w->cq.AsyncNext(&tag, &ok, gpr_time_0(GPR_CLOCK_MONOTONIC)) ==
                                         grpc::CompletionQueue::GOT_EVENT;
         ++i) {
      OnCallDone(static_cast<Client*>(tag));
    }
    for (int fd : w->held) service::SetTcpCork(fd, false);
    w->held.clear();
  }
}

void LoadGenerator::HoldChannel(Worker* w, size_t channel) {
  const int fd = channel_sockets_[channel];
  if (!w->coalescing || fd < 0 || w->held_in[channel] == w->burst) return;
  w->held_in[channel] = w->burst;
  service::SetTcpCork(fd, true);
  w->held.push_back(fd);
}

bool LoadGenerator::Claim(absl::Time now) {
  if (claimed_.fetch_add(1, std::memory_order_relaxed) >= phase_.max_calls) return false;
  return now < deadline_;
}

void LoadGenerator::StartCall(Client* c, absl::Time now) {
  uint64_t n = 0;
  switch (phase_.key_space) {
    case KeySpace::kOne:
      break;
    case KeySpace::kSequential:
      n = sequence_.fetch_add(1, std::memory_order_relaxed) % options_.keys;
      break;
    case KeySpace::kRandom:
      n = c->rng() % options_.keys;
      break;
  }
  FormatKey(n, options_.key_size, &c->key);
  OpKind op = OpKind::kPut;
  if (phase_.workload == Workload::kGet) {
    op = OpKind::kGet;
  } else if (phase_.workload == Workload::kMixed) {
    op = std::uniform_real_distribution<double>(0, 1)(c->rng) < options_.read_fraction
             ? OpKind::kGet
             : OpKind::kPut;
  }
  c->started = now;
  c->caller->Start(op, c->key, now + options_.timeout, &c->worker->cq, c);
}

void LoadGenerator::OnCallDone(Client* c) {
  const absl::Time now = absl::Now();
  const grpc::Status& status = c->caller->status();
  Worker* w = c->worker;
  {
    absl::MutexLock lock(&w->mu);
    if (status.ok()) {
      ++w->result.ok;
      w->result.latency_ns.Record(
          static_cast<uint64_t>(std::max<int64_t>(0, absl::ToInt64Nanoseconds(now - c->started))));
    } else {
      ErrorCount& e = w->result.errors[status.error_code()];
      if (e.count++ == 0) e.first_message = status.error_message();
    }
    w->last_done = std::max(w->last_done, now);
  }
  std::atomic<uint64_t>& done = status.ok() ? w->ok : w->failed;
  done.store(done.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  if (phase_.rate <= 0 && Claim(now)) {
    if (options_.coalesce_sends) HoldChannel(w, c->channel);
    StartCall(c, now);  // on this thread, at once: no hand-off
    return;
  }
  absl::MutexLock lock(&mu_);
  if (phase_.rate > 0) idle_.push_back(c);
  --in_flight_;
}

PhaseResult LoadGenerator::Run(const Phase& phase,
                               const std::function<void(const Progress&)>& on_progress) {
  const absl::Time start = absl::Now();
  for (auto& w : workers_) {
    absl::MutexLock lock(&w->mu);
    w->result = PhaseResult();
    w->last_done = start;
    w->ok = 0;
    w->failed = 0;
  }
  {
    absl::MutexLock lock(&mu_);
    idle_.clear();
    in_flight_ = 0;
    phase_ = phase;
    deadline_ = start + phase.max_time;
    claimed_ = 0;
    sequence_ = 0;
  }
  absl::Time next_progress = start + absl::Seconds(1);
  auto maybe_progress = [&](absl::Time now) {
    if (!on_progress || now < next_progress) return;
    next_progress = now + absl::Seconds(1);
    Progress p{now - start, 0, 0};
    for (const auto& w : workers_) {
      p.ok += w->ok.load(std::memory_order_relaxed);
      p.failed += w->failed.load(std::memory_order_relaxed);
    }
    on_progress(p);
  };

  if (phase.rate <= 0) {
    std::vector<Client*> first;
    {
      absl::MutexLock lock(&mu_);
      for (auto& c : clients_) {
        if (!Claim(start)) break;
        ++in_flight_;
        first.push_back(c.get());
      }
    }
    for (Client* c : first) StartCall(c, absl::Now());
  } else {
    // The pacer: start calls on idle clients as they fall due. A call due
    // while every client is busy starts late, when a client comes free.
    {
      absl::MutexLock lock(&mu_);
      for (auto it = clients_.rbegin(); it != clients_.rend(); ++it) idle_.push_back(it->get());
    }
    uint64_t started = 0;
    while (true) {
      const absl::Time now = absl::Now();
      if (now >= deadline_ || started >= phase.max_calls) break;
      const auto due = std::min<uint64_t>(
          phase.max_calls,
          static_cast<uint64_t>(absl::ToDoubleSeconds(now - start) * phase.rate) + 1);
      std::vector<Client*> batch;
      {
        absl::MutexLock lock(&mu_);
        while (started < due && !idle_.empty()) {
          if (!Claim(now)) {
            started = phase.max_calls;  // budget or time is spent
            break;
          }
          batch.push_back(idle_.back());
          idle_.pop_back();
          ++in_flight_;
          ++started;
        }
      }
      for (Client* c : batch) StartCall(c, absl::Now());
      maybe_progress(now);
      absl::SleepFor(absl::Microseconds(500));
    }
  }

  // Every call has its own deadline, so all finish by the phase deadline plus
  // the call timeout; the extra margin covers a slow gRPC shutdown of a call.
  const absl::Time hard_stop = deadline_ + options_.timeout + absl::Seconds(10);
  int never_completed = 0;
  {
    absl::MutexLock lock(&mu_);
    auto none_in_flight = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return in_flight_ == 0; };
    while (in_flight_ > 0) {
      const absl::Time now = absl::Now();
      if (now >= hard_stop) {
        never_completed = in_flight_;
        break;
      }
      if (on_progress && now >= next_progress) {
        mu_.Unlock();
        maybe_progress(now);
        mu_.Lock();
        continue;
      }
      mu_.AwaitWithDeadline(absl::Condition(&none_in_flight),
                            on_progress ? std::min(next_progress, hard_stop) : hard_stop);
    }
  }
  PhaseResult result;
  absl::Time last_done = start;
  for (auto& w : workers_) {
    absl::MutexLock lock(&w->mu);
    result.ok += w->result.ok;
    result.latency_ns.Merge(w->result.latency_ns);
    for (const auto& [code, e] : w->result.errors) {
      ErrorCount& into = result.errors[code];
      if (into.count == 0) into.first_message = e.first_message;
      into.count += e.count;
    }
    last_done = std::max(last_done, w->last_done);
    w->result = PhaseResult();
  }
  if (never_completed > 0) {
    ErrorCount& e = result.errors[grpc::StatusCode::INTERNAL];
    e.count += static_cast<uint64_t>(never_completed);
    e.first_message = absl::StrCat(never_completed, " calls never completed");
  }
  result.elapsed = last_done - start;
  return result;
}

void FormatKey(uint64_t n, int size, std::string* out) {
  out->assign(static_cast<size_t>(size), '0');
  for (int i = size - 1; i >= 0 && n > 0; --i) {
    (*out)[i] = static_cast<char>('0' + n % 10);
    n /= 10;
  }
}

std::string StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return absl::StrCat("CODE_", static_cast<int>(code));
  }
}

}  // namespace raftkv::bench
