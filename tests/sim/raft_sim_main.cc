// raft_sim: runs the deterministic Raft simulation over many seeds.
//
//   raft_sim --seeds=2000 [--start=1] [--nodes=3|5|7|mixed] [--bug=NAME]
//            [--threads=1] [--stop_at_first_failure]
//   raft_sim --seed=1234 --nodes=5 [--bug=NAME] --verbose   (replay one seed)
//
// Ends with a summary line "<seeds> seeds, <failures> failures, <faults>
// faults injected, <seconds>s". Exit status: 0 when no seed failed; 1 when one
// did (or, with --expect_failure, when none did); 2 on a bad flag.
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "tests/sim/simulator.h"

namespace {

struct Flags {
  raftkv::sim::BatchOptions batch;
  bool single = false;  // --seed given
  bool verbose = false;
  bool expect_failure = false;
};

bool ParseInt(std::string_view flag, std::string_view value, int64_t lo, int64_t hi, int64_t* out) {
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), *out);
  if (ec != std::errc() || end != value.data() + value.size() || *out < lo || *out > hi) {
    std::cerr << "raft_sim: " << flag << " wants an integer in [" << lo << ", " << hi << "], got '"
              << value << "'\n";
    return false;
  }
  return true;
}

bool Parse(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view name = arg, value;
    if (auto eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    }
    int64_t v = 0;
    if (name == "--seeds") {
      if (!ParseInt(name, value, 1, 100000000, &v)) return false;
      f->batch.seeds = v;
    } else if (name == "--start") {
      if (!ParseInt(name, value, 0, INT64_MAX / 2, &v)) return false;
      f->batch.start = v;
    } else if (name == "--seed") {
      if (!ParseInt(name, value, 0, INT64_MAX / 2, &v)) return false;
      f->batch.start = v;
      f->batch.seeds = 1;
      f->single = true;
    } else if (name == "--nodes") {
      if (value == "mixed") {
        f->batch.nodes = 0;
      } else {
        if (!ParseInt(name, value, 1, 15, &v)) return false;
        f->batch.nodes = static_cast<int>(v);
      }
    } else if (name == "--bug") {
      f->batch.bug_name = std::string(value);
      if (auto b = raftkv::sim::ParseBug(value); !b.ok()) {
        std::cerr << "raft_sim: " << b.status().message() << "\n";
        return false;
      }
    } else if (name == "--threads") {
      if (!ParseInt(name, value, 1, 64, &v)) return false;
      f->batch.threads = static_cast<int>(v);
    } else if (name == "--chaos_ticks") {
      if (!ParseInt(name, value, 0, 1000000, &v)) return false;
      f->batch.chaos_ticks = static_cast<int>(v);
    } else if (name == "--liveness_ticks") {
      if (!ParseInt(name, value, 1, 1000000, &v)) return false;
      f->batch.liveness_ticks = static_cast<int>(v);
    } else if (name == "--stop_at_first_failure") {
      f->batch.stop_at_first_failure = true;
    } else if (name == "--expect_failure") {
      f->expect_failure = true;
      f->batch.stop_at_first_failure = true;
    } else if (name == "--verbose") {
      f->verbose = true;
    } else {
      std::cerr << "raft_sim: unknown flag '" << arg
                << "'\nusage: raft_sim --seeds=N [--start=N] [--nodes=3|5|7|mixed] [--bug=NAME] "
                   "[--threads=N] [--stop_at_first_failure] [--expect_failure]\n"
                   "       raft_sim --seed=N --nodes=N [--bug=NAME] [--verbose]\n";
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  if (!Parse(argc, argv, &f)) return 2;
  if (f.single) {
    raftkv::sim::SimOptions so;
    so.seed = f.batch.start;
    so.nodes = raftkv::sim::NodesForSeed(f.batch.nodes, so.seed);
    so.bugs = *raftkv::sim::ParseBug(f.batch.bug_name);
    so.bug_name = f.batch.bug_name;
    so.chaos_ticks = f.batch.chaos_ticks;
    so.liveness_ticks = f.batch.liveness_ticks;
    so.verbose = f.verbose;
    so.log = &std::cout;
    raftkv::sim::SimResult r = raftkv::sim::RunSimulation(so);
    std::cout << "seed " << so.seed << " (" << so.nodes
              << " nodes): " << (r.status.ok() ? "OK" : absl::StrCat("FAIL: ", r.status.message()))
              << "\n"
              << r.ticks << " ticks, " << r.committed << " committed, " << r.leaders
              << " leader terms, " << r.reads_answered << " reads answered, " << r.transfers
              << " transfers, " << r.snapshots << " snapshots; faults: " << r.faults.drops
              << " drops, " << r.faults.duplicates << " duplicates, " << r.faults.delays
              << " delays, " << r.faults.partitions << " partitions, " << r.faults.crashes
              << " crashes, " << r.faults.torn_readies << " torn readies, " << r.faults.pauses
              << " pauses; liveness after heal: " << r.liveness_ticks_used << " ticks\n";
    if (!r.status.ok()) std::cout << "replay: " << raftkv::sim::ReplayCommand(so) << "\n";
    const bool failed = !r.status.ok();
    return failed != f.expect_failure ? 1 : 0;
  }
  auto result = raftkv::sim::RunBatch(f.batch, &std::cout);
  if (!result.ok()) {
    std::cerr << "raft_sim: " << result.status().message() << "\n";
    return 2;
  }
  const auto& fc = result->faults;
  std::cout << "faults: " << fc.drops << " drops, " << fc.duplicates << " duplicates, " << fc.delays
            << " delays, " << fc.partitions << " partitions, " << fc.crashes << " crashes, "
            << fc.torn_readies << " torn readies, " << fc.pauses << " pauses; " << result->snapshots
            << " snapshots installed; slowest recovery after heal: " << result->max_liveness_ticks
            << " ticks\n";
  std::cout << result->Summary() << std::endl;
  const bool failed = result->failures > 0;
  if (f.expect_failure && !failed) {
    std::cout << "expected --bug=" << f.batch.bug_name << " to be caught, but no seed failed\n";
  }
  return failed != f.expect_failure ? 1 : 0;
}
