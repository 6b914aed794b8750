#include "bench/load_generator.h"

#include <algorithm>
#include <random>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace raftkv::bench {

class LoadGenerator::Client : public CallObserver {
 public:
  Client(LoadGenerator* generator, uint64_t seed) : rng(seed), generator_(generator) {}

  void OnCallDone(const grpc::Status& status) override { generator_->OnCallDone(this, status); }

  // Touched only by this client's own chain of calls, one at a time.
  std::unique_ptr<KvCaller> caller;
  std::mt19937_64 rng;
  absl::Time started;
  std::string key;

 private:
  LoadGenerator* const generator_;
};

uint64_t PhaseResult::error_count() const {
  uint64_t n = 0;
  for (const auto& [code, e] : errors) n += e.count;
  return n;
}

LoadGenerator::LoadGenerator(const Options& options) : options_(options) {}

LoadGenerator::~LoadGenerator() {
  absl::MutexLock lock(&mu_);
  if (in_flight_ > 0) {
    // Run() gave up waiting on calls gRPC never completed; their callbacks
    // may still come, so the clients they point to must stay valid.
    for (auto& c : clients_) c.release();
    for (auto& ch : channels_) new std::shared_ptr<grpc::Channel>(std::move(ch));
  }
}

absl::StatusOr<std::unique_ptr<LoadGenerator>> LoadGenerator::Create(
    const Options& options, const KvApi& api, const std::vector<std::string>& targets,
    absl::Duration connect_wait) {
  if (targets.empty()) return absl::InvalidArgumentError("no endpoints to load");
  std::unique_ptr<LoadGenerator> g(new LoadGenerator(options));
  const absl::Time give_up = absl::Now() + connect_wait;
  for (int i = 0; i < options.conns; ++i) {
    const std::string& target = targets[i % targets.size()];
    auto channel = NewBenchChannel(target, i);
    if (!channel->WaitForConnected(absl::ToChronoTime(give_up))) {
      return absl::UnavailableError(absl::StrCat("could not connect to ", target, " within ",
                                                 absl::FormatDuration(connect_wait)));
    }
    g->channels_.push_back(std::move(channel));
  }
  std::string value(options.val_size, 'x');
  for (int i = 0; i < options.val_size; ++i) value[i] = static_cast<char>('a' + i % 26);
  std::mt19937_64 seeder(0x5eed);
  for (int i = 0; i < options.clients; ++i) {
    auto client = std::make_unique<Client>(g.get(), seeder());
    client->caller = api.NewCaller(g->channels_[i % g->channels_.size()], value,
                                   options.serializable, client.get());
    g->clients_.push_back(std::move(client));
  }
  return g;
}

bool LoadGenerator::Claim() {
  if (claimed_.fetch_add(1, std::memory_order_relaxed) >= phase_.max_calls) return false;
  return absl::Now() < deadline_;
}

void LoadGenerator::StartCall(Client* c) {
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
  c->started = absl::Now();
  c->caller->Start(op, c->key, c->started + options_.timeout);
}

void LoadGenerator::OnCallDone(Client* c, const grpc::Status& status) {
  const absl::Time now = absl::Now();
  (status.ok() ? done_ok_ : done_failed_).fetch_add(1, std::memory_order_relaxed);
  bool next = false;
  {
    absl::MutexLock lock(&mu_);
    if (status.ok()) {
      ++result_.ok;
      result_.latency_ns.Record(
          static_cast<uint64_t>(std::max<int64_t>(0, absl::ToInt64Nanoseconds(now - c->started))));
    } else {
      ErrorCount& e = result_.errors[status.error_code()];
      if (e.count++ == 0) e.first_message = status.error_message();
    }
    last_done_ = std::max(last_done_, now);
    if (phase_.rate > 0) {
      idle_.push_back(c);
      --in_flight_;
    } else if (Claim()) {
      next = true;
    } else {
      --in_flight_;
    }
  }
  if (next) StartCall(c);
}

PhaseResult LoadGenerator::Run(const Phase& phase,
                               const std::function<void(const Progress&)>& on_progress) {
  const absl::Time start = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    result_ = PhaseResult();
    idle_.clear();
    in_flight_ = 0;
    last_done_ = start;
    phase_ = phase;
    deadline_ = start + phase.max_time;
    claimed_ = 0;
    sequence_ = 0;
    done_ok_ = 0;
    done_failed_ = 0;
  }
  absl::Time next_progress = start + absl::Seconds(1);
  auto maybe_progress = [&](absl::Time now) {
    if (!on_progress || now < next_progress) return;
    next_progress = now + absl::Seconds(1);
    on_progress(Progress{now - start, done_ok_.load(), done_failed_.load()});
  };

  if (phase.rate <= 0) {
    std::vector<Client*> first;
    {
      absl::MutexLock lock(&mu_);
      for (auto& c : clients_) {
        if (!Claim()) break;
        ++in_flight_;
        first.push_back(c.get());
      }
    }
    for (Client* c : first) StartCall(c);
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
          if (!Claim()) {
            started = phase.max_calls;  // budget or time is spent
            break;
          }
          batch.push_back(idle_.back());
          idle_.pop_back();
          ++in_flight_;
          ++started;
        }
      }
      for (Client* c : batch) StartCall(c);
      maybe_progress(now);
      absl::SleepFor(absl::Microseconds(500));
    }
  }

  // Every call has its own deadline, so all finish by the phase deadline plus
  // the call timeout; the extra margin covers a slow gRPC shutdown of a call.
  const absl::Time hard_stop = deadline_ + options_.timeout + absl::Seconds(10);
  absl::MutexLock lock(&mu_);
  auto none_in_flight = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return in_flight_ == 0; };
  while (in_flight_ > 0) {
    const absl::Time now = absl::Now();
    if (now >= hard_stop) {
      ErrorCount& e = result_.errors[grpc::StatusCode::INTERNAL];
      e.count += static_cast<uint64_t>(in_flight_);
      e.first_message = absl::StrCat(in_flight_, " calls never completed");
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
  PhaseResult result = std::move(result_);
  result.elapsed = last_done_ - start;
  result_ = PhaseResult();
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
