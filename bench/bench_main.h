// BenchMain: the whole `raftctl bench` command, callable from raftctl or from
// the standalone raftkv-bench program. Call it from a program's main thread;
// it blocks until the run is over and prints to stdout (errors to stderr).
#pragma once

namespace raftkv::bench {

// argv[0] is the command name ("bench"), argv[1] the workload (put, get or
// mixed), then flags; see Usage() in options.h. Returns the exit status:
// 0 all calls succeeded, 1 bad flags or no connection, 3 some calls failed.
int BenchMain(int argc, char** argv);

}  // namespace raftkv::bench
