#!/usr/bin/python3
"""Two raftd variants side by side: the same load on each, in alternating runs.

Starts two three-node raftkv clusters on 127.0.0.1 (ports of their own, data
under one temporary directory): A, with raftd and the --a-arg flags, and B,
with --raftd-b (default: the same raftd) and the --b-arg flags. It then runs
the load generator against them in pairs of short runs, alternating which
cluster goes first, and reports each pair's B / A throughput, the median of
those ratios and how many pairs B won.

Why pairs: on a virtual machine the disk's fsync time and the CPU's speed
drift by 30% within minutes, so rounds of one variant after the other (or on
fresh clusters) measure the drift as much as the change. Runs of two seconds
that alternate between two live clusters see the same drift. Half of the
pairs run with A's cluster started first and B's second; then both are
stopped and started again the other way round for the other half, since the
two places are not alike (an A/A run on one VM had the second cluster ahead
by 3.5%, 7 pairs of 8). The report gives each half and both together.

Everything it starts it stops by PID, and it removes its temporary directory,
on success, failure or interruption. It is a benchmark: its numbers never fail
it; a cluster that cannot start, or a bench run that fails or gets errors,
does.

Usage:
  ab_raftd.py --build-dir BUILD [--raftd-b PATH] [--a-arg=FLAG ...]
              [--b-arg=FLAG ...] [--pairs N] [--duration S] [--warmup S]
              [--json OUT] -- WORKLOAD [BENCH FLAGS ...]

The load is raftkv-bench's, with compare_etcd.py's key and value sizes
(8 and 256 bytes), key count and call timeout. For example, a lone client's
puts with and without --kv_threads=0:
  ab_raftd.py --build-dir build --b-arg=--kv_threads=0 -- put --clients=1 --conns=1
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_etcd  # noqa: E402
from compare_etcd import Failure, log  # noqa: E402

compare_etcd.LOG_PREFIX = "ab"


def summarize_pairs(pairs):
    """pairs: [(a_ops, b_ops), ...]. The medians of each side and of the
    per-pair ratios B / A, and the pairs B won (ties are nobody's)."""
    if not pairs:
        raise ValueError("no pairs")
    ratios = [b / a for a, b in pairs]
    return {
        "pairs": len(pairs),
        "a_median": statistics.median(a for a, _ in pairs),
        "b_median": statistics.median(b for _, b in pairs),
        "b_over_a_median": statistics.median(ratios),
        "b_wins": sum(1 for a, b in pairs if b > a),
    }


def describe(summary):
    return (f"A {summary['a_median']:,.0f} ops/s, B {summary['b_median']:,.0f} ops/s (medians);"
            f" B / A {summary['b_over_a_median']:.3f} (median of {summary['pairs']} pairs),"
            f" B won {summary['b_wins']} of {summary['pairs']}")


def one_run(bench, clusters, name, workload, duration, warmup):
    """Throughput of one run on clusters[name], through compare_etcd.run_one
    (a sync first, then the load generator; it logs the servers' CPU per call,
    the other cluster's meanwhile, and the steal). A failed run, or one with
    failed calls or none completed, fails the whole comparison."""
    failures = []
    targets = {n: {"leader": c.endpoints(), "all": c.endpoints()} for n, c in clusters.items()}
    res = compare_etcd.run_one(clusters, bench, name, targets, " ".join(workload), workload,
                               duration, warmup, failures)
    if res is None or failures:
        raise Failure("; ".join(failures))
    return res["throughput"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 usage="%(prog)s [options] -- WORKLOAD [BENCH FLAGS ...]")
    ap.add_argument("--build-dir", required=True, help="raftkv build tree (raftkv-bench, raftd)")
    ap.add_argument("--bench", help="raftkv-bench (default: BUILD/bench/raftkv-bench)")
    ap.add_argument("--raftd", help="A's raftd (default: BUILD/service/raftd)")
    ap.add_argument("--raftd-b", help="B's raftd (default: A's)")
    ap.add_argument("--a-arg", action="append", default=[], help="raftd flag for A (repeatable)")
    ap.add_argument("--b-arg", action="append", default=[], help="raftd flag for B (repeatable)")
    ap.add_argument("--pairs", type=int, default=20,
                    help="pairs of runs, an even number: half in each placement (default 20)")
    ap.add_argument("--duration", type=float, default=2.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds before each run")
    ap.add_argument("--json", help="write every pair and the summaries here")
    ap.add_argument("--data-root", help="parent of the temporary data directory")
    ap.add_argument("workload", nargs=argparse.REMAINDER,
                    help="after --: the load generator's workload and flags, e.g. put --clients=1")
    args = ap.parse_args()

    workload = [w for w in args.workload if w != "--"]
    if not workload or workload[0] not in ("put", "get", "mixed"):
        ap.error("give the workload after --, e.g. -- put --clients=1 --conns=1")
    if args.pairs < 2 or args.pairs % 2:
        ap.error("--pairs must be an even number, at least 2")
    if args.duration <= 0 or args.warmup < 0:
        ap.error("--duration must be positive and --warmup not negative")
    bench = args.bench or os.path.join(args.build_dir, "bench", "raftkv-bench")
    if not os.access(bench, os.X_OK):
        raise Failure(f"no raftkv-bench at {bench} (build the raftkv-bench target first)")
    raftd_a = args.raftd or compare_etcd.find_raftd(args.build_dir)
    raftd_b = args.raftd_b or raftd_a
    raftctl = compare_etcd.find_program(args.build_dir, "raftctl")
    for path in (raftd_a, raftd_b):
        if not os.access(path, os.X_OK):
            raise Failure(f"raftd {path} is not an executable")

    root = tempfile.mkdtemp(prefix="raftkv-ab-", dir=args.data_root)
    clusters = []

    def stop_all():
        while clusters:
            clusters.pop().stop()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    placements = []
    try:
        for placement, order in enumerate((("A", "B"), ("B", "A"))):
            sides = {"A": (raftd_a, args.a_arg), "B": (raftd_b, args.b_arg)}
            started = {}
            ports = compare_etcd.free_ports(12)
            for slot, name in enumerate(order):
                raftd, flags = sides[name]
                data = os.path.join(root, f"placement{placement + 1}-{name}")
                os.makedirs(data)
                cluster = compare_etcd.start_raftkv(data, raftd, ports[6 * slot:6 * slot + 6],
                                                    flags)
                cluster.system = name
                clusters.append(cluster)
                started[name] = cluster
            for cluster in started.values():
                compare_etcd.wait_ports(cluster)
                compare_etcd.raftkv_leader(cluster, raftctl)
            log(f"placement {placement + 1}: {order[0]} started first, {order[1]} second")
            pairs = []
            for i in range(args.pairs // 2):
                first, second = ("A", "B") if i % 2 == 0 else ("B", "A")
                ops = {first: one_run(bench, started, first, workload, args.duration,
                                      args.warmup)}
                ops[second] = one_run(bench, started, second, workload, args.duration,
                                      args.warmup)
                pairs.append((ops["A"], ops["B"]))
                log(f"pair {i + 1}: A {ops['A']:,.0f} ops/s, B {ops['B']:,.0f} ops/s,"
                    f" B / A {ops['B'] / ops['A']:.3f}")
            stop_all()
            placements.append({"order": list(order), "pairs": pairs,
                               "summary": summarize_pairs(pairs)})
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_all()
        shutil.rmtree(root, ignore_errors=True)

    overall = summarize_pairs([p for pl in placements for p in pl["pairs"]])
    print(f"workload: {' '.join(workload)}")
    print(f"A: {raftd_a} {' '.join(args.a_arg)}".rstrip())
    print(f"B: {raftd_b} {' '.join(args.b_arg)}".rstrip())
    for pl in placements:
        print(f"{pl['order'][0]} first: {describe(pl['summary'])}")
    print(f"both: {describe(overall)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"workload": workload, "a": {"raftd": raftd_a, "args": args.a_arg},
                       "b": {"raftd": raftd_b, "args": args.b_arg},
                       "duration_s": args.duration, "warmup_s": args.warmup,
                       "placements": placements, "overall": overall}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as e:
        print(f"ab_raftd: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("ab_raftd: interrupted; everything started was stopped", file=sys.stderr)
        sys.exit(130)
