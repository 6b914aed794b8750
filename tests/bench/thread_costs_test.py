#!/usr/bin/python3
"""Unit tests of thread_costs.py's bookkeeping, on a made-up /proc."""

import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import thread_costs  # noqa: E402


def stat_line(tid, name, utime, stime):
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime ...
    return f"{tid} ({name}) S 1 1 1 0 -1 4194560 10 0 0 0 {utime} {stime} 0 0 20 0 1 0\n"


class ThreadStatsTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def add_thread(self, pid, tid, name, utime, stime, vol, invol):
        d = os.path.join(self.dir.name, str(pid), "task", str(tid))
        os.makedirs(d)
        with open(os.path.join(d, "stat"), "w") as f:
            f.write(stat_line(tid, name, utime, stime))
        with open(os.path.join(d, "status"), "w") as f:
            f.write(f"Name:\t{name}\nvoluntary_ctxt_switches:\t{vol}\n"
                    f"nonvoluntary_ctxt_switches:\t{invol}\n")

    def test_reads_every_thread_with_names_that_hold_spaces_and_parentheses(self):
        self.add_thread(10, 10, "raftd", 5, 6, 7, 8)
        self.add_thread(10, 12, "a (b) c", 100, 200, 30, 4)
        stats = thread_costs.thread_stats(10, proc=self.dir.name)
        self.assertEqual(stats, {10: ("raftd", 5, 6, 7, 8), 12: ("a (b) c", 100, 200, 30, 4)})

    def test_a_thread_whose_files_cannot_all_be_read_is_left_out(self):
        self.add_thread(10, 10, "raftd", 5, 6, 7, 8)
        self.add_thread(10, 11, "ending", 1, 1, 1, 1)
        os.remove(os.path.join(self.dir.name, "10", "task", "11", "status"))
        self.assertEqual(thread_costs.thread_stats(10, proc=self.dir.name),
                         {10: ("raftd", 5, 6, 7, 8)})

    def test_a_process_that_is_gone_has_no_threads(self):
        self.assertEqual(thread_costs.thread_stats(99, proc=self.dir.name), {})


class WarmupTest(unittest.TestCase):
    def test_finds_a_warm_up_that_is_not_zero_in_either_spelling(self):
        self.assertEqual(thread_costs.warmup_flag(["put", "--warmup=1s", "-w", "json"]), "1s")
        self.assertEqual(thread_costs.warmup_flag(["put", "--warmup", "500ms"]), "500ms")
        for zero in (["put", "--warmup=0s"], ["put", "--warmup=0"], ["put", "--warmup", "0ms"],
                     ["put", "--duration=5s"]):
            self.assertIsNone(thread_costs.warmup_flag(zero), zero)

    def test_a_load_with_a_warm_up_is_refused_unless_calls_are_given(self):
        tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "thread_costs.py")
        r = subprocess.run([sys.executable, tool, "--pids", str(os.getpid()), "--",
                            "true", "--warmup=1s"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("warm-up", r.stderr)
        r = subprocess.run([sys.executable, tool, "--pids", str(os.getpid()), "--calls", "1",
                            "--", "true", "--warmup=1s"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)


class CostsTest(unittest.TestCase):
    def test_differences_per_call_busiest_first(self):
        before = {1: ("raft", 100, 50, 10, 1), 2: ("kv", 10, 10, 5, 0), 3: ("idle", 7, 7, 3, 0)}
        after = {1: ("raft", 110, 70, 400, 1), 2: ("kv", 15, 20, 205, 0), 3: ("idle", 7, 7, 3, 0),
                 4: ("new", 1, 0, 2, 0)}
        pid_of = {1: 9, 2: 9, 3: 9, 4: 8}
        rows = thread_costs.costs(before, after, pid_of, calls=100, ticks_per_s=100)
        # 10 user ticks of 10 ms over 100 calls: 1,000 us a call.
        self.assertEqual(rows[0], (9, 1, "raft", 1000.0, 2000.0, 3.9))
        self.assertEqual(rows[1], (9, 2, "kv", 500.0, 1000.0, 2.0))
        # A thread born during the run counts from zero; an idle one is left out.
        self.assertEqual(rows[2], (8, 4, "new", 100.0, 0.0, 0.02))
        self.assertEqual(len(rows), 3)
        self.assertEqual(thread_costs.per_process(rows),
                         {9: (1500.0, 3000.0, 5.9), 8: (100.0, 0.0, 0.02)})

    def test_without_calls_the_figures_are_totals(self):
        rows = thread_costs.costs({}, {1: ("t", 3, 1, 2, 0)}, {1: 5}, calls=0, ticks_per_s=100)
        self.assertEqual(rows, [(5, 1, "t", 30000.0, 10000.0, 2.0)])


class SyscallsTest(unittest.TestCase):
    def test_counts_by_thread_and_name(self):
        lines = ["  4242 NR 7 (7ffd, 3, 0, 0, 0, 0)",
                 "  4242 NR 46 (5, 7ffd, 0, 0, 0, 0)",
                 "  4242 NR 7 (7ffd, 3, 0, 0, 0, 0)",
                 "  4243 NR 999 (0, 0, 0, 0, 0, 0)",
                 "garbage"]
        counts = thread_costs.count_syscalls(lines)
        self.assertEqual(dict(counts[4242]), {"poll": 2, "sendmsg": 1})
        self.assertEqual(dict(counts[4243]), {"nr999": 1})


class EndToEndTest(unittest.TestCase):
    def test_measures_a_real_busy_thread_per_call(self):
        # A child that burns 0.3 s of CPU when told to by the "load", which
        # waits for it to finish and reports 3 calls: the burn falls inside
        # the window whatever the start-up times.
        d = tempfile.TemporaryDirectory()
        self.addCleanup(d.cleanup)
        ready, done = os.path.join(d.name, "ready"), os.path.join(d.name, "done")
        burner = subprocess.Popen([sys.executable, "-c", f"""
import os, signal, time
signal.signal(signal.SIGUSR1, lambda *_: None)
open({ready!r}, "w").close()
signal.pause()
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
open({done!r}, "w").close()
time.sleep(30)
"""])
        self.addCleanup(burner.wait)
        self.addCleanup(burner.kill)
        deadline = time.monotonic() + 20
        while not os.path.exists(ready) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertTrue(os.path.exists(ready))
        load = f"""
import os, signal, time
os.kill({burner.pid}, signal.SIGUSR1)
deadline = time.monotonic() + 20
while not os.path.exists({done!r}) and time.monotonic() < deadline:
    time.sleep(0.01)
print('{{"ok": 3}}')
"""
        out = subprocess.run(
            [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                          "thread_costs.py"),
             "--pids", str(burner.pid), "--", sys.executable, "-c", load],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True).stdout
        self.assertTrue(os.path.exists(done), out)
        self.assertIn("3 calls", out)
        row = [l for l in out.splitlines() if l.split()[:2] == [str(burner.pid), str(burner.pid)]]
        self.assertEqual(len(row), 1, out)
        cpu_us = float(row[0].split()[3]) + float(row[0].split()[4])
        # 0.3 s over 3 calls is 100,000 us a call; clock ticks blur it a little.
        self.assertGreater(cpu_us, 80000)
        self.assertLess(cpu_us, 130000)


if __name__ == "__main__":
    unittest.main()
