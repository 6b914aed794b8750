#include "bench/bench_main.h"

#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "absl/synchronization/mutex.h"
#include "bench/kv_api.h"
#include "bench/load_generator.h"
#include "bench/options.h"
#include "bench/report.h"

namespace raftkv::bench {
namespace {

constexpr absl::Duration kLeaderWait = absl::Seconds(10);
constexpr absl::Duration kConnectWait = absl::Seconds(5);

}  // namespace

int BenchMain(int argc, char** argv) {
  // Debian builds Abseil without NDEBUG, so every absl::Mutex (gRPC's
  // included) feeds a deadlock-detection graph on lock and destruction:
  // about 5% of the bench's CPU in a profile. The bench needs none of it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  auto parsed = ParseOptions(argc, argv);
  if (!parsed.ok()) {
    std::cerr << "bench: " << parsed.status().message() << "\n";
    return 1;
  }
  const Options& o = *parsed;
  if (o.help) {
    std::cout << Usage();
    return 0;
  }
  const auto api = NewApi(o.api);
  std::vector<std::string> targets = o.endpoints;
  std::string target_name = "all";
  if (o.target == Target::kLeader) {
    auto leader = api->FindLeader(o.endpoints, kLeaderWait);
    if (!leader.ok()) {
      std::cerr << "bench: " << leader.status().message() << "\n";
      return 1;
    }
    targets = {*leader};
    target_name = *leader;
  }
  auto generator = LoadGenerator::Create(o, *api, targets, kConnectWait);
  if (!generator.ok()) {
    std::cerr << "bench: " << generator.status().message() << "\n";
    return 1;
  }

  const bool live = !o.json && isatty(STDOUT_FILENO);
  std::function<void(const Progress&)> progress;
  if (live) {
    progress = [](const Progress& p) {
      std::cout << "\r\033[K" << FormatProgress(p) << std::flush;
    };
  }

  // Reads of keys nobody wrote measure a different path; write them first.
  if (o.workload != Workload::kPut && (o.prefill || o.key_space == KeySpace::kOne)) {
    Phase prefill{Workload::kPut, KeySpace::kSequential, o.key_space == KeySpace::kOne ? 1 : o.keys,
                  o.max_duration, 0};
    const PhaseResult r = (*generator)->Run(prefill, progress);
    if (r.error_count() > 0 || r.ok < prefill.max_calls) {
      if (live) std::cout << "\r\033[K";
      std::cerr << "bench: prefill wrote " << r.ok << " of " << prefill.max_calls << " keys; "
                << FormatText(o, target_name, r);
      return 1;
    }
  }
  if (o.warmup > absl::ZeroDuration()) {
    (*generator)
        ->Run(Phase{o.workload, o.key_space, Options::kMaxTotal, o.warmup, o.rate}, progress);
  }
  const PhaseResult result =
      (*generator)->Run(Phase{o.workload, o.key_space, o.total, o.duration, o.rate}, progress);
  if (live) std::cout << "\r\033[K";
  std::cout << (o.json ? FormatJson(o, target_name, result) + "\n"
                       : FormatText(o, target_name, result))
            << std::flush;
  return result.error_count() == 0 ? 0 : 3;
}

}  // namespace raftkv::bench
