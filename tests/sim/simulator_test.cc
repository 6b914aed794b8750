// Tests of the simulator itself: it is deterministic, a correct core passes a
// handful of seeds, and each deliberately broken core (raft::TestingBugs) is
// caught within the CI seed budget.
#include "tests/sim/simulator.h"

#include <gtest/gtest.h>

#include <iostream>
#include <sstream>

namespace raftkv::sim {
namespace {

// The CI budget of the seed run (tests/sim/CMakeLists.txt): a bug that needs
// more seeds than this to show up is not "caught".
constexpr uint64_t kSeedBudget = 2000;

TEST(Simulator, SameSeedReplaysTheSameRun) {
  for (int nodes : {3, 5, 7}) {
    SimOptions o;
    o.seed = 42;
    o.nodes = nodes;
    SimResult a = RunSimulation(o);
    // Verbose logging must not change the run: the replay command adds it.
    std::ostringstream log;
    o.verbose = true;
    o.log = &log;
    SimResult b = RunSimulation(o);
    EXPECT_NE(log.str().find("liveness:"), std::string::npos);
    EXPECT_TRUE(a.status.ok()) << a.status;
    EXPECT_EQ(a.status, b.status);
    EXPECT_EQ(a.ticks, b.ticks);
    EXPECT_EQ(a.committed, b.committed);
    EXPECT_EQ(a.faults.Total(), b.faults.Total());
    EXPECT_EQ(a.reads_answered, b.reads_answered);
    EXPECT_EQ(a.liveness_ticks_used, b.liveness_ticks_used);
    EXPECT_GT(a.committed, 0u);
  }
}

TEST(Simulator, CorrectCorePassesAndFaultsAreInjected) {
  BatchOptions o;
  o.start = 5000;
  o.seeds = 30;
  auto r = RunBatch(o, &std::cout);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->failures, 0u);
  EXPECT_GT(r->faults.drops, 0u);
  EXPECT_GT(r->faults.duplicates, 0u);
  EXPECT_GT(r->faults.delays, 0u);
  EXPECT_GT(r->faults.partitions, 0u);
  EXPECT_GT(r->faults.crashes, 0u);
  EXPECT_GT(r->faults.torn_readies, 0u);
}

TEST(Simulator, RejectsUnknownBug) {
  EXPECT_FALSE(ParseBug("no_such_bug").ok());
  BatchOptions o;
  o.bug_name = "no_such_bug";
  EXPECT_FALSE(RunBatch(o, nullptr).ok());
}

class BrokenCoreTest : public ::testing::TestWithParam<std::string> {};

// Each broken core must fail some seed within the budget, and fail a safety
// property (not merely stall).
TEST_P(BrokenCoreTest, IsCaughtWithinTheSeedBudget) {
  BatchOptions o;
  o.start = 1;
  o.seeds = kSeedBudget;
  o.bug_name = GetParam();
  o.stop_at_first_failure = true;
  auto r = RunBatch(o, &std::cout);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_GE(r->failures, 1u) << "--bug=" << GetParam() << " survived " << r->seeds_run << " seeds";
  std::cout << "--bug=" << GetParam() << " caught at seed " << r->failing_seeds.front() << " after "
            << r->seeds_run << " seeds: " << r->failure_messages.front() << "\n";
  EXPECT_EQ(r->failure_messages.front().find("liveness"), std::string::npos)
      << "caught only as a liveness failure: " << r->failure_messages.front();

  // The failing seed, run alone (as its replay command does), fails the same way.
  SimOptions alone;
  alone.seed = r->failing_seeds.front();
  alone.nodes = NodesForSeed(o.nodes, alone.seed);
  alone.bugs = *ParseBug(GetParam());
  SimResult again = RunSimulation(alone);
  EXPECT_EQ(again.status.message(), r->failure_messages.front());
}

INSTANTIATE_TEST_SUITE_P(Bugs, BrokenCoreTest, ::testing::ValuesIn(BugNames()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace raftkv::sim
