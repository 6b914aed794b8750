// raftkv-bench: the load generator on its own; `raftkv-bench put ...` is the
// same as `raftctl bench put ...`.
#include <vector>

#include "bench/bench_main.h"

int main(int argc, char** argv) {
  std::vector<char*> args(argv, argv + argc);
  static char bench_name[] = "bench";
  args[0] = bench_name;
  return raftkv::bench::BenchMain(argc, args.data());
}
