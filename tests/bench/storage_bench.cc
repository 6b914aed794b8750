// storage_bench: what the disk and storage/ can do on this machine.
//
//   RawAppendFdatasync   write(~150 B) + fdatasync on a plain file: the
//                        machine's raw fsync rate, measured the same way.
//   LogAppendSync/N      LogStore::Save of N entries (~150 B each) + hard
//                        state, synced: the group-commit curve (entries/s).
//   LogAppendNoSync/N    the same without fsync: the CPU cost of Save.
//   Apply/N              StateMachine::Apply of N put entries per call, each
//                        with a client session (64 clients), 96 B values.
//   ApplyPut/N           the cluster bench's put load: N puts per call without
//                        sessions, random 8-byte keys out of 100,000 (all
//                        present: the store is filled first), 256 B values.
//                        CPU time counts every thread of the process, so it
//                        includes LevelDB's compaction thread; apply_us/entry
//                        is the calling thread's alone. Options can be
//                        overridden from the environment (BenchOptions()).
//   ApplyPutSession/N    ApplyPut with a session per command (1,000 clients).
//   ApplyPutFollower/N   ApplyPut as a follower (or a leader whose clients did
//                        not ask for old values) applies it: no result
//                        carries the key's previous value.
//   ApplyPutFresh/N      ApplyPut to keys never stored (random out of 100M),
//                        into the same filled store: the previous-value
//                        lookup finds nothing. Run it with
//                        RAFTKV_BENCH_SM_KEY_FILTER_MB=0 for the cost without
//                        the key filter.
//   Range/N              StateMachine::Range of N keys from a random start.
//   Get                  StateMachine::Get of a random key.
//
// Data goes to $RAFTKV_BENCH_DIR (default $TMPDIR or /tmp), which should be
// on the disk a node would use. Usage: storage_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <random>

#include "storage/log_store.h"
#include "storage/state_machine.h"

namespace raftkv::storage {
namespace {

constexpr size_t kPayloadBytes = 128;

class BenchDir {
 public:
  BenchDir() {
    const char* base = getenv("RAFTKV_BENCH_DIR");
    if (base == nullptr || *base == 0) base = getenv("TMPDIR");
    if (base == nullptr || *base == 0) base = "/tmp";
    std::string tmpl = std::string(base) + "/raftkv-bench-XXXXXX";
    path_ = mkdtemp(tmpl.data()) != nullptr ? tmpl : "";
  }
  ~BenchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string PutCommand(uint64_t i) {
  v1::Command c;
  c.set_client_id(1 + i % 64);
  c.set_sequence(i);
  c.mutable_put()->set_key("key-" + std::to_string(i % 100000));
  c.mutable_put()->set_value(std::string(kPayloadBytes - 32, 'v'));
  return c.SerializeAsString();
}

void RawAppendFdatasync(benchmark::State& state) {
  BenchDir dir;
  const std::string path = dir.path() + "/raw";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    state.SkipWithError("cannot create file");
    return;
  }
  const std::string record(kPayloadBytes + 20, 'r');
  for (auto _ : state) {
    if (::write(fd, record.data(), record.size()) != static_cast<ssize_t>(record.size()) ||
        ::fdatasync(fd) != 0) {
      state.SkipWithError("write/fdatasync failed");
      break;
    }
  }
  ::close(fd);
  state.SetItemsProcessed(state.iterations());
  state.counters["fsyncs/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(RawAppendFdatasync)->UseRealTime();

void LogAppend(benchmark::State& state, bool sync) {
  BenchDir dir;
  LogStoreOptions o;
  o.sync = sync;
  auto log = LogStore::Open(dir.path(), o);
  if (!log.ok()) {
    state.SkipWithError(log.status().ToString().c_str());
    return;
  }
  const size_t n = static_cast<size_t>(state.range(0));
  std::vector<raft::Entry> batch(n);
  for (size_t i = 0; i < n; ++i) {
    batch[i].set_term(1);
    batch[i].set_data(PutCommand(i));
  }
  raft::HardState hs;
  hs.set_term(1);
  hs.set_vote(1);
  uint64_t next = 1;
  for (auto _ : state) {
    for (auto& e : batch) e.set_index(next++);
    hs.set_commit(next - 1);
    absl::Status s = (*log)->Save(batch, hs);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
  state.counters["fsyncs/s"] = benchmark::Counter(
      sync ? static_cast<double>(state.iterations()) : 0, benchmark::Counter::kIsRate);
}

void LogAppendSync(benchmark::State& state) { LogAppend(state, true); }
void LogAppendNoSync(benchmark::State& state) { LogAppend(state, false); }
BENCHMARK(LogAppendSync)->Arg(1)->Arg(16)->Arg(256)->Arg(1024)->UseRealTime();
BENCHMARK(LogAppendNoSync)->Arg(1)->Arg(256)->UseRealTime();

void Apply(benchmark::State& state) {
  BenchDir dir;
  auto sm = StateMachine::Open(dir.path(), {});
  if (!sm.ok()) {
    state.SkipWithError(sm.status().ToString().c_str());
    return;
  }
  const size_t n = static_cast<size_t>(state.range(0));
  std::vector<raft::Entry> batch(n);
  uint64_t next = 1;
  for (auto _ : state) {
    state.PauseTiming();
    for (auto& e : batch) {
      e.set_term(1);
      e.set_index(next);
      e.set_data(PutCommand(next++));
    }
    state.ResumeTiming();
    auto r = (*sm)->Apply(batch);
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
      break;
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
}
BENCHMARK(Apply)->Arg(1)->Arg(64)->Arg(1024)->UseRealTime();

// The load generator's values: 'a'..'z' repeated (bench/load_generator.cc).
std::string BenchValue(size_t size) {
  std::string v(size, 'x');
  for (size_t i = 0; i < size; ++i) v[i] = static_cast<char>('a' + i % 26);
  return v;
}

// An 8-byte zero-padded decimal key, as the load generator formats them.
std::string BenchKey(uint64_t n) {
  std::string k(8, '0');
  for (int i = 7; i >= 0 && n > 0; --i) {
    k[i] = static_cast<char>('0' + n % 10);
    n /= 10;
  }
  return k;
}

// StateMachineOptions with overrides from the environment, to compare
// settings without rebuilding: RAFTKV_BENCH_SM_COMPRESS=0|1,
// RAFTKV_BENCH_SM_CACHE_MB, RAFTKV_BENCH_SM_WRITE_BUFFER_MB,
// RAFTKV_BENCH_SM_KEY_FILTER_MB.
StateMachineOptions BenchOptions() {
  StateMachineOptions o;
  if (const char* v = getenv("RAFTKV_BENCH_SM_KEY_FILTER_MB")) o.key_filter_bytes = atoll(v) << 20;
  if (const char* v = getenv("RAFTKV_BENCH_SM_COMPRESS")) o.compress = atoi(v) != 0;
  if (const char* v = getenv("RAFTKV_BENCH_SM_CACHE_MB")) o.block_cache_bytes = atoll(v) << 20;
  if (const char* v = getenv("RAFTKV_BENCH_SM_WRITE_BUFFER_MB")) {
    o.write_buffer_size = atoll(v) << 20;
  }
  return o;
}

double CpuSeconds(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}
double ThreadCpuSeconds() { return CpuSeconds(CLOCK_THREAD_CPUTIME_ID); }
double ProcessCpuSeconds() { return CpuSeconds(CLOCK_PROCESS_CPUTIME_ID); }

// Keys of the fresh-key load: never among the filled ones, rarely repeated.
uint64_t FreshKey(std::mt19937_64& rng) { return 100000 + rng() % 99'900'000; }

void ApplyPutLoad(benchmark::State& state, bool sessions, bool fresh, bool want_prev = true) {
  constexpr uint64_t kKeys = 100000;
  constexpr uint64_t kClients = 1000;
  BenchDir dir;
  auto sm = StateMachine::Open(dir.path(), BenchOptions());
  if (!sm.ok()) {
    state.SkipWithError(sm.status().ToString().c_str());
    return;
  }
  const std::string value = BenchValue(256);
  uint64_t next = 1;
  std::vector<uint64_t> sequence(kClients + 1, 0);
  auto make = [&](raft::Entry* e, uint64_t key) {
    v1::Command c;
    if (sessions) {
      const uint64_t client = 1 + next % kClients;
      c.set_client_id(client);
      c.set_sequence(++sequence[client]);
    }
    c.mutable_put()->set_key(BenchKey(key));
    c.mutable_put()->set_value(value);
    e->set_term(1);
    e->set_index(next++);
    e->set_data(c.SerializeAsString());
  };
  std::vector<raft::Entry> fill(1000);
  for (uint64_t k = 0; k < kKeys; k += fill.size()) {
    for (size_t i = 0; i < fill.size(); ++i) make(&fill[i], k + i);
    if (!(*sm)->Apply(fill).ok()) {
      state.SkipWithError("fill failed");
      return;
    }
  }
  // Pre-built batches, so that the timed loop only renumbers them.
  const size_t n = static_cast<size_t>(state.range(0));
  std::mt19937_64 rng(3);
  std::vector<std::vector<raft::Entry>> batches(std::max<size_t>(1, 65536 / n));
  for (auto& b : batches) {
    b.resize(n);
    for (auto& e : b) make(&e, fresh ? FreshKey(rng) : rng() % kKeys);
  }
  next = kKeys + 1;  // make() numbered the batches; they are renumbered when applied
  size_t round = 0;
  double apply_cpu = 0;
  double renumber_cpu = 0;
  const double process_before = ProcessCpuSeconds();
  for (auto _ : state) {
    std::vector<raft::Entry>& b = batches[round++ % batches.size()];
    if (fresh && round > batches.size()) {
      // Replayed batches would find their keys stored: new keys each time.
      state.PauseTiming();
      const double t0 = ThreadCpuSeconds();
      const uint64_t numbered = next;  // make() numbers entries; the loop below does
      for (auto& e : b) make(&e, FreshKey(rng));
      next = numbered;
      renumber_cpu += ThreadCpuSeconds() - t0;
      state.ResumeTiming();
    }
    if (sessions) {
      // Re-number sequences too, or every replayed command is a retry.
      state.PauseTiming();
      const double t0 = ThreadCpuSeconds();
      for (auto& e : b) {
        v1::Command c;
        c.ParseFromString(e.data());
        c.set_sequence(++sequence[c.client_id()]);
        e.set_data(c.SerializeAsString());
      }
      renumber_cpu += ThreadCpuSeconds() - t0;
      state.ResumeTiming();
    }
    for (auto& e : b) e.set_index(next++);
    const double t0 = ThreadCpuSeconds();
    auto r = (*sm)->Apply(b, [want_prev](uint64_t) { return want_prev; });
    apply_cpu += ThreadCpuSeconds() - t0;
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(r);
  }
  const double items = static_cast<double>(state.iterations() * n);
  state.SetItemsProcessed(static_cast<int64_t>(items));
  // CPU of the calling thread alone (the rest of the process time is mostly
  // LevelDB's compaction thread).
  state.counters["apply_us/entry"] = apply_cpu * 1e6 / items;
  // Every other thread: LevelDB's compaction thread.
  state.counters["other_us/entry"] =
      (ProcessCpuSeconds() - process_before - apply_cpu - renumber_cpu) * 1e6 / items;
}

void ApplyPut(benchmark::State& state) { ApplyPutLoad(state, false, false); }
void ApplyPutSession(benchmark::State& state) { ApplyPutLoad(state, true, false); }
void ApplyPutFresh(benchmark::State& state) { ApplyPutLoad(state, false, true); }
void ApplyPutFollower(benchmark::State& state) { ApplyPutLoad(state, false, false, false); }
BENCHMARK(ApplyPut)->Arg(1)->Arg(64)->Arg(1024)->UseRealTime()->MeasureProcessCPUTime();
BENCHMARK(ApplyPutSession)->Arg(64)->UseRealTime()->MeasureProcessCPUTime();
BENCHMARK(ApplyPutFollower)->Arg(64)->UseRealTime()->MeasureProcessCPUTime();
BENCHMARK(ApplyPutFresh)->Arg(64)->Arg(1024)->UseRealTime()->MeasureProcessCPUTime();
// Fixed work, for counting instructions under valgrind --tool=callgrind on a
// busy machine: the difference between the two runs is 2000 x 64 entries
// (several memtable flushes, so that compaction work is in it too).
BENCHMARK(ApplyPut)->Arg(64)->Iterations(100);
BENCHMARK(ApplyPut)->Arg(64)->Iterations(2100);

// A state machine with 100k keys, filled once and shared by the read
// benchmarks; closed and removed at exit (statics die in reverse order).
StateMachine* Filled() {
  static BenchDir dir;
  static std::unique_ptr<StateMachine> sm = [] {
    auto s = StateMachine::Open(dir.path(), {});
    if (!s.ok()) std::abort();
    std::vector<raft::Entry> batch;
    for (uint64_t i = 1; i <= 100000; ++i) {
      raft::Entry e;
      e.set_term(1);
      e.set_index(i);
      e.set_data(PutCommand(i));
      batch.push_back(std::move(e));
      if (batch.size() == 1000) {
        if (!(*s)->Apply(batch).ok()) std::abort();
        batch.clear();
      }
    }
    return std::move(*s);
  }();
  return sm.get();
}

void Range(benchmark::State& state) {
  StateMachine* sm = Filled();
  std::mt19937_64 rng(1);
  const size_t limit = static_cast<size_t>(state.range(0));
  int64_t keys = 0;
  for (auto _ : state) {
    auto r = sm->Range("key-" + std::to_string(rng() % 100000), "", limit);
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
      break;
    }
    keys += static_cast<int64_t>(r->kvs.size());
  }
  state.SetItemsProcessed(keys);
}
BENCHMARK(Range)->Arg(10)->Arg(100)->Arg(1000);

void Get(benchmark::State& state) {
  StateMachine* sm = Filled();
  std::mt19937_64 rng(2);
  for (auto _ : state) {
    auto r = sm->Get("key-" + std::to_string(rng() % 100000));
    if (!r.ok() || !r->has_value()) {
      state.SkipWithError("get failed");
      break;
    }
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(Get);

}  // namespace
}  // namespace raftkv::storage

BENCHMARK_MAIN();
