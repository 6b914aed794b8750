#!/usr/bin/python3
"""Unit tests of compare_etcd.py's bookkeeping (no cluster is started)."""

import os
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_etcd  # noqa: E402


def run(throughput, p99_ms):
    return {"throughput": throughput, "p99_ms": p99_ms, "ok": int(throughput), "failed": 0,
            "latency_ms": {"p99": p99_ms}, "errors": {}, "bench_cpu_s": 1.0}


class SummarizeTest(unittest.TestCase):
    def test_one_run_is_reported_as_it_is(self):
        out = compare_etcd.summarize([run(100.0, 2.0)])
        self.assertEqual(out["throughput"], 100.0)
        self.assertEqual(out["p99_ms"], 2.0)
        self.assertNotIn("rounds", out)

    def test_odd_rounds_report_the_median_run_whole(self):
        runs = [run(300.0, 1.0), run(100.0, 9.0), run(200.0, 5.0)]
        out = compare_etcd.summarize(runs)
        # The median-throughput run's own p99, not the median of the p99s
        # of other runs.
        self.assertEqual((out["throughput"], out["p99_ms"]), (200.0, 5.0))
        self.assertEqual([r["throughput"] for r in out["rounds"]], [300.0, 100.0, 200.0])

    def test_even_rounds_report_the_lower_middle_run(self):
        out = compare_etcd.summarize([run(400.0, 1.0), run(100.0, 3.0)])
        self.assertEqual((out["throughput"], out["p99_ms"]), (100.0, 3.0))
        self.assertEqual(len(out["rounds"]), 2)

    def test_inputs_are_not_modified(self):
        runs = [run(300.0, 1.0), run(100.0, 9.0), run(200.0, 5.0)]
        compare_etcd.summarize(runs)
        self.assertEqual([r["throughput"] for r in runs], [300.0, 100.0, 200.0])
        self.assertTrue(all("rounds" not in r for r in runs))



class StealRerunTest(unittest.TestCase):
    """run_without_steal: which runs are made again, and what is kept."""

    def runs(self, *steals):
        """A run() that returns runs of throughput 100, 200, ... with these steals,
        and the list of calls made."""
        calls = []

        def one():
            n = len(calls)
            calls.append(n)
            if steals[n] is False:
                return None  # the bench failed
            return dict(run(100.0 * (n + 1), 1.0), steal_pct=steals[n])
        return one, calls

    def test_a_run_within_the_limit_is_kept_as_it_is(self):
        one, calls = self.runs(5.0)
        res = compare_etcd.run_without_steal(one, 5.0, lambda: True)
        self.assertEqual(len(calls), 1)
        self.assertEqual(res["throughput"], 100.0)
        self.assertNotIn("discarded_for_steal", res)

    def test_stolen_runs_are_made_again_and_listed(self):
        one, calls = self.runs(30.0, 12.5, 0.4)
        res = compare_etcd.run_without_steal(one, 5.0, lambda: True)
        self.assertEqual(len(calls), 3)
        self.assertEqual((res["throughput"], res["steal_pct"]), (300.0, 0.4))
        self.assertEqual(res["discarded_for_steal"],
                         [{"throughput": 100.0, "p99_ms": 1.0, "steal_pct": 30.0},
                          {"throughput": 200.0, "p99_ms": 1.0, "steal_pct": 12.5}])

    def test_at_most_two_reruns_then_the_last_run_stands(self):
        one, calls = self.runs(30.0, 30.0, 30.0, 0.0)
        res = compare_etcd.run_without_steal(one, 5.0, lambda: True)
        self.assertEqual(len(calls), 3)
        self.assertEqual(res["throughput"], 300.0)
        self.assertEqual(len(res["discarded_for_steal"]), 2)

    def test_no_rerun_without_time_unknown_steal_or_a_result(self):
        for steals, may in (((30.0, 0.0), False), ((None, 0.0), True), ((False, 0.0), True)):
            one, calls = self.runs(*steals)
            res = compare_etcd.run_without_steal(one, 5.0, lambda m=may: m)
            self.assertEqual(len(calls), 1, steals)
            self.assertTrue(res is None or "discarded_for_steal" not in res)

    def test_summary_gathers_every_rounds_replaced_runs(self):
        kept = [dict(run(300.0, 1.0), steal_pct=0.1,
                     discarded_for_steal=[{"throughput": 90.0, "p99_ms": 9.0, "steal_pct": 35.0}]),
                dict(run(200.0, 2.0), steal_pct=0.2),
                dict(run(100.0, 3.0), steal_pct=0.3,
                     discarded_for_steal=[{"throughput": 50.0, "p99_ms": 9.0, "steal_pct": 20.0}])]
        out = compare_etcd.summarize(kept)
        self.assertEqual(out["throughput"], 200.0)
        self.assertEqual([d["steal_pct"] for d in out["discarded_for_steal"]], [35.0, 20.0])
        one = compare_etcd.summarize([kept[1]])
        self.assertNotIn("discarded_for_steal", one)
        median_with_own = compare_etcd.summarize(kept[:1])
        self.assertEqual(len(median_with_own["discarded_for_steal"]), 1)


class RerunBudgetTest(unittest.TestCase):
    """rerun_fits: a re-run must never make a later workload be skipped."""

    def fits(self, elapsed, runs_left_here, later):
        # The default full run: 6 runs per workload, 23 s at worst, about 9 s each.
        return compare_etcd.rerun_fits(elapsed, 23.0, 9.0, runs_left_here, later, 6, 570)

    def test_early_in_the_run_there_is_room(self):
        # The last workload would start at 8.2 + 23 + 5 * 9 + 6 * 54 = 400.2 s,
        # and its worst case ends at 538.2 s.
        self.assertTrue(self.fits(8.2, 5, 7))

    def test_no_rerun_that_would_push_the_last_workload_out(self):
        # 50 s in, the last workload's worst case would end at 580 s.
        self.assertFalse(self.fits(50.0, 5, 7))

    def test_in_the_last_workload_only_its_own_runs_count(self):
        self.assertTrue(self.fits(500.0, 2, 0))   # ends by 541 s at worst
        self.assertFalse(self.fits(540.0, 2, 0))  # 581 s

    def test_each_later_start_is_checked_with_worst_case_runs(self):
        # One later workload, tight: it would start at 400 + 23 = 423 s and its
        # six worst-case runs end at 561 s; a second later one would not fit.
        self.assertTrue(compare_etcd.rerun_fits(400.0, 23.0, 9.0, 0, 1, 6, 570))
        self.assertFalse(compare_etcd.rerun_fits(400.0, 23.0, 9.0, 0, 2, 6, 570))

class StealTest(unittest.TestCase):
    def write_stat(self, line):
        path = os.path.join(self.dir.name, "stat")
        with open(path, "w") as f:
            f.write(line + "\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
        return path

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def test_reads_steal_and_total_of_the_whole_machine(self):
        # user nice system idle iowait irq softirq steal guest guest_nice
        path = self.write_stat("cpu  100 5 50 800 20 0 5 20 7 0")
        self.assertEqual(compare_etcd.cpu_jiffies(path), (20, 1000))

    def test_no_stat_file_gives_none(self):
        self.assertIsNone(compare_etcd.cpu_jiffies(os.path.join(self.dir.name, "missing")))
        self.assertIsNone(compare_etcd.steal_pct(None, (1, 2)))

    def test_share_of_the_interval(self):
        self.assertEqual(compare_etcd.steal_pct((20, 1000), (45, 1100)), 25.0)
        self.assertIsNone(compare_etcd.steal_pct((20, 1000), (20, 1000)))

    def test_summary_covers_every_round_and_names_the_worst(self):
        a = compare_etcd.summarize([dict(run(100.0, 1.0), steal_pct=2.0),
                                    dict(run(200.0, 1.0), steal_pct=30.0),
                                    dict(run(300.0, 1.0), steal_pct=1.0)])
        b = dict(run(50.0, 1.0), steal_pct=4.0)
        rows = [{"workload": "put 1 client", "raftkv": a, "etcd": b}]
        out = compare_etcd.runs_summary(rows, ["etcd", "raftkv"], "steal_pct")
        self.assertEqual(out, {"median": 2.0, "max": 30.0, "max_run": "put 1 client on raftkv"})
        self.assertIsNone(compare_etcd.runs_summary([{"workload": "w"}], ["etcd"], "steal_pct"))


class RatioTest(unittest.TestCase):
    def test_ratio_of_missing_or_zero_is_none(self):
        self.assertIsNone(compare_etcd.ratio(None, 1.0))
        self.assertIsNone(compare_etcd.ratio(1.0, 0))
        self.assertEqual(compare_etcd.ratio(3.0, 2.0), 1.5)


class CpuAccountingTest(unittest.TestCase):
    def test_per_call_and_share_of_a_core(self):
        self.assertEqual(compare_etcd.cpu_per_op_us(10.0, 10.5, 10000), 50.0)
        self.assertEqual(compare_etcd.core_share_pct(3.0, 3.3, 6.0), 5.0)

    def test_no_calls_or_a_counter_going_back_gives_none(self):
        self.assertIsNone(compare_etcd.cpu_per_op_us(1.0, 2.0, 0))
        self.assertIsNone(compare_etcd.cpu_per_op_us(2.0, 1.0, 100))
        self.assertIsNone(compare_etcd.core_share_pct(1.0, 2.0, 0))
        self.assertIsNone(compare_etcd.core_share_pct(2.0, 1.0, 1.0))

    def test_cluster_cpu_counts_its_running_servers_only(self):
        d = tempfile.TemporaryDirectory()
        self.addCleanup(d.cleanup)
        # Burns about 0.3 s of CPU, then idles until stopped.
        burn = ("import time\nend = time.process_time() + 0.3\n"
                "while time.process_time() < end: pass\ntime.sleep(60)\n")
        cluster = compare_etcd.Cluster("test")
        node = compare_etcd.Node("busy", [sys.executable, "-c", burn],
                                 os.path.join(d.name, "busy.log"), 0)
        cluster.nodes.append(node)
        self.assertEqual(cluster.cpu_s(), 0.0)  # not started
        node.start()
        self.addCleanup(node.stop)
        # /proc counts user and system time apart, each in whole 10 ms
        # ticks, so 0.3 s burnt may read as 0.29 (seen in CI).
        deadline = time.monotonic() + 20
        while cluster.cpu_s() < 0.27 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(cluster.cpu_s(), 0.27)
        self.assertLess(cluster.cpu_s(), 5.0)
        node.stop()
        self.assertEqual(cluster.cpu_s(), 0.0)


class RunBenchTest(unittest.TestCase):
    """run_bench() with a stand-in load generator that sleeps, then prints JSON."""

    def fake_bench(self, sleep_s, exit_code=0):
        d = tempfile.TemporaryDirectory()
        self.addCleanup(d.cleanup)
        path = os.path.join(d.name, "bench")
        with open(path, "w") as f:
            f.write(f"#!{sys.executable}\nimport sys, time\ntime.sleep({sleep_s})\n"
                    f"print('{{\"ok\": 3}}')\nsys.exit({exit_code})\n")
        os.chmod(path, 0o755)
        return path

    def test_measuring_starts_after_the_warm_up(self):
        calls = []
        started = time.monotonic()
        res = compare_etcd.run_bench(self.fake_bench(1.0), "raftkv", ["127.0.0.1:1"], ["put"],
                                     duration_s=0.5, warmup_s=0.4,
                                     on_measure=lambda: calls.append(time.monotonic()))
        self.assertEqual(res["ok"], 3)
        self.assertEqual(res["exit_code"], 0)
        self.assertEqual(len(calls), 1)
        self.assertGreaterEqual(calls[0] - started, 0.4)

    def test_a_bench_that_ends_during_the_warm_up_is_not_measured(self):
        calls = []
        res = compare_etcd.run_bench(self.fake_bench(0.0, exit_code=3), "raftkv",
                                     ["127.0.0.1:1"], ["put"], duration_s=0.5, warmup_s=5.0,
                                     on_measure=lambda: calls.append(1))
        self.assertEqual(calls, [])
        self.assertEqual(res["exit_code"], 3)


class DiskProbeTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def test_times_each_append_with_its_fdatasync_and_leaves_no_file(self):
        synced = []
        real = os.fdatasync

        def slow_fdatasync(fd):
            synced.append(os.fstat(fd).st_size)
            time.sleep(0.002)
            real(fd)

        os.fdatasync = slow_fdatasync
        try:
            us = compare_etcd.append_sync_us(self.dir.name, n=5, size=100)
        finally:
            os.fdatasync = real
        # Every append is synced, in a file allocated up front (its size
        # never changes), and the median includes the sync.
        self.assertEqual(synced, [500] * 5)
        self.assertGreaterEqual(us, 2000)
        self.assertEqual(os.listdir(self.dir.name), [])

    def test_every_round_keeps_its_probe(self):
        runs = [dict(run(300.0, 1.0), disk_sync_us=150.0), dict(run(100.0, 9.0), disk_sync_us=450.0),
                dict(run(200.0, 5.0), disk_sync_us=300.0)]
        out = compare_etcd.summarize(runs)
        self.assertEqual(out["disk_sync_us"], 300.0)
        self.assertEqual([r["disk_sync_us"] for r in out["rounds"]], [150.0, 450.0, 300.0])
        rows = [{"workload": "put 1 client", "raftkv": out}]
        self.assertEqual(compare_etcd.runs_summary(rows, ["raftkv"], "disk_sync_us"),
                         {"median": 300.0, "max": 450.0, "max_run": "put 1 client on raftkv"})


class SinglePutTest(unittest.TestCase):
    def row(self, workload, **avg_ms):
        r = {"workload": workload}
        for system, avg in avg_ms.items():
            r[system] = dict(run(1000.0, 1.0), latency_ms={"avg": avg, "p99": 1.0})
        return r

    def test_mean_latency_in_fsyncs_for_each_system(self):
        rows = [self.row("put 64 clients/16 conns", etcd=9.0, raftkv=9.0),
                self.row("put 1 client", etcd=0.69, raftkv=0.33)]
        out = compare_etcd.single_put_vs_fsync(rows, ["etcd", "raftkv"], 110.0)
        self.assertEqual(out, {"etcd": {"avg_ms": 0.69, "fsyncs": 6.27},
                               "raftkv": {"avg_ms": 0.33, "fsyncs": 3.0}})

    def test_latency_against_the_probe_taken_around_the_shown_run(self):
        rows = [self.row("put 1 client", etcd=2.07, raftkv=1.22)]
        rows[0]["etcd"]["disk_sync_us"] = 230.0
        rows[0]["raftkv"]["disk_sync_us"] = 305.0
        out = compare_etcd.single_put_vs_fsync(rows, ["etcd", "raftkv"], 405.0)
        self.assertEqual(out, {
            "etcd": {"avg_ms": 2.07, "fsyncs": 5.11, "run_disk_us": 230.0, "run_appends": 9.0},
            "raftkv": {"avg_ms": 1.22, "fsyncs": 3.01, "run_disk_us": 305.0, "run_appends": 4.0}})

    def test_missing_workload_system_or_probe_gives_none_or_leaves_it_out(self):
        rows = [self.row("put 1 client", raftkv=0.33)]
        self.assertEqual(compare_etcd.single_put_vs_fsync(rows, ["etcd", "raftkv"], 110.0),
                         {"raftkv": {"avg_ms": 0.33, "fsyncs": 3.0}})
        self.assertIsNone(compare_etcd.single_put_vs_fsync(rows, ["raftkv"], None))
        self.assertIsNone(compare_etcd.single_put_vs_fsync(
            [self.row("get-s 1 client", raftkv=0.1)], ["raftkv"], 110.0))
        self.assertIsNone(compare_etcd.single_put_vs_fsync(rows, ["etcd"], 110.0))


if __name__ == "__main__":
    unittest.main()
