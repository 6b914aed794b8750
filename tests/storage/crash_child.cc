// storage_crash_child LOG_DIR SM_DIR SEED
// storage_crash_child --import SM_DIR SEED
//
// The process the crash test kills with SIGKILL. It loops: append a batch
// (sometimes replacing an uncommitted suffix with a higher term, as a new
// leader would) together with a hard state, apply what is committed, and
// now and then sync the state machine and compact the log. On stdout, line
// by line and flushed at once, it announces
//   B first count term commit   before Save (the batch about to be written)
//   A                           after Save returned (the batch is durable)
//   P applied                   after Apply returned
// so the parent knows what was acknowledged when the kill landed.
//
// With --import it instead replaces the state machine in SM_DIR by snapshots
// over and over: each one is the workload applied up to a random index N,
// built in a scratch state machine, exported in small chunks and imported;
// it prints "I N" before the import and "D N" once FinishImport returned.
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include "storage/log_store.h"
#include "storage/state_machine.h"
#include "tests/storage/crash_workload.h"

namespace raftkv::storage {
namespace {

int Fail(const char* what, const absl::Status& s) {
  std::fprintf(stderr, "crash child: %s: %s\n", what, s.ToString().c_str());
  return 3;
}

int Run(const char* log_dir, const char* sm_dir, uint64_t seed) {
  auto store = LogStore::Open(log_dir, {});
  if (!store.ok()) return Fail("open log", store.status());
  auto sm = StateMachine::Open(sm_dir, {});
  if (!sm.ok()) return Fail("open state machine", sm.status());
  LogStore& log = **store;
  StateMachine& machine = **sm;
  if (log.IsEmpty()) {
    raft::ConfState conf;
    conf.add_voters(1);
    if (absl::Status s = log.Bootstrap(conf); !s.ok()) return Fail("bootstrap", s);
  }
  std::mt19937_64 rng(seed);
  // Bounded: the parent kills the child long before this.
  for (int iter = 0; iter < 200000; ++iter) {
    const uint64_t last = log.LastIndex();
    raft::HardState hs = log.hard_state();
    // As the Raft core does after a restart: what was applied was committed
    // (the stored commit index may be older).
    hs.set_commit(std::max(hs.commit(), machine.applied_index()));
    uint64_t term = std::max<uint64_t>(hs.term(), 1);
    uint64_t first = last + 1;
    if (last > hs.commit() && rng() % 8 == 0) {
      first = hs.commit() + 1 + rng() % (last - hs.commit());
      ++term;
    }
    const uint64_t n = 1 + rng() % 32;
    std::vector<raft::Entry> entries;
    for (uint64_t i = first; i < first + n; ++i) entries.push_back(testing::WorkloadEntry(i, term));
    const uint64_t new_last = first + n - 1;
    const uint64_t commit = std::max(hs.commit(), new_last - rng() % std::min<uint64_t>(n, 4));
    hs.set_term(term);
    hs.set_vote(1);
    hs.set_commit(commit);
    std::printf("B %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", first, n, term, commit);
    std::fflush(stdout);
    if (absl::Status s = log.Save(entries, hs); !s.ok()) return Fail("save", s);
    std::printf("A\n");
    std::fflush(stdout);

    while (machine.applied_index() < commit) {
      auto batch = log.Entries(machine.applied_index() + 1, commit + 1, 64 << 10);
      if (!batch.ok()) return Fail("read committed entries", batch.status());
      auto results = machine.Apply(*batch);
      if (!results.ok()) return Fail("apply", results.status());
    }
    std::printf("P %" PRIu64 "\n", machine.applied_index());
    std::fflush(stdout);

    if (iter % 16 == 15) {
      // The crash window of DESIGN.md: sync the state machine before the log
      // forgets the entries it covers.
      if (absl::Status s = machine.Sync(); !s.ok()) return Fail("sync", s);
      const uint64_t upto = machine.applied_index() > 8 ? machine.applied_index() - 8 : 0;
      raft::ConfState conf;
      conf.add_voters(1);
      if (absl::Status s = log.Compact(upto, conf); !s.ok()) return Fail("compact", s);
    }
  }
  return 0;
}

int RunImports(const std::string& sm_dir, uint64_t seed) {
  StateMachineOptions o;
  o.snapshot_chunk_bytes = 512;
  auto target = StateMachine::Open(sm_dir, o);
  if (!target.ok()) return Fail("open state machine", target.status());
  std::mt19937_64 rng(seed);
  const std::string scratch = sm_dir + "-scratch";
  for (int iter = 0; iter < 100000; ++iter) {
    std::error_code ec;
    std::filesystem::remove_all(scratch, ec);
    const uint64_t n = 20 + rng() % 300;
    std::vector<std::string> chunks;
    {
      auto src = StateMachine::Open(scratch, o);
      if (!src.ok()) return Fail("open scratch", src.status());
      std::vector<raft::Entry> es;
      for (uint64_t i = 1; i <= n; ++i) es.push_back(testing::WorkloadEntry(i, 1));
      if (auto r = (*src)->Apply(es); !r.ok()) return Fail("fill scratch", r.status());
      auto reader = (*src)->ExportSnapshot();
      if (!reader.ok()) return Fail("export", reader.status());
      while (true) {
        auto chunk = (*reader)->Next();
        if (!chunk.ok()) return Fail("export chunk", chunk.status());
        if (!chunk->has_value()) break;
        chunks.push_back(std::move(**chunk));
      }
    }
    std::printf("I %" PRIu64 "\n", n);
    std::fflush(stdout);
    auto import = (*target)->BeginImport();
    if (!import.ok()) return Fail("begin import", import.status());
    for (const auto& c : chunks) {
      if (absl::Status s = (*import)->Write(c); !s.ok()) return Fail("import chunk", s);
    }
    if (absl::Status s = (*target)->FinishImport(std::move(*import)); !s.ok()) {
      return Fail("finish import", s);
    }
    std::printf("D %" PRIu64 "\n", n);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace raftkv::storage

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--import") {
    return raftkv::storage::RunImports(argv[2], std::strtoull(argv[3], nullptr, 10));
  }
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s LOG_DIR SM_DIR SEED | --import SM_DIR SEED\n", argv[0]);
    return 2;
  }
  return raftkv::storage::Run(argv[1], argv[2], std::strtoull(argv[3], nullptr, 10));
}
