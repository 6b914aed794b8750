// The bench's results as text for people and as JSON for scripts. Pure
// functions of their arguments; any thread may call them.
#pragma once

#include <string>

#include "bench/load_generator.h"
#include "bench/options.h"

namespace raftkv::bench {

// `target` is what was loaded: the leader's endpoint, or "all".
std::string FormatText(const Options& options, const std::string& target,
                       const PhaseResult& result);

// One JSON object: the settings, ok/failed counts, elapsed_s, throughput
// (successful calls per second), latency_ms {avg, min, p50, p90, p99, p99_9,
// max} and errors {CODE: {count, message}}.
std::string FormatJson(const Options& options, const std::string& target,
                       const PhaseResult& result);

// The live progress line (no newline).
std::string FormatProgress(const Progress& progress);

}  // namespace raftkv::bench
