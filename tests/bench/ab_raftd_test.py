#!/usr/bin/python3
"""Unit tests of ab_raftd.py's bookkeeping and argument checks (no cluster is started)."""

import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ab_raftd  # noqa: E402


class SummarizePairsTest(unittest.TestCase):
    def test_medians_ratio_and_wins(self):
        pairs = [(100.0, 110.0), (200.0, 180.0), (150.0, 165.0)]
        s = ab_raftd.summarize_pairs(pairs)
        self.assertEqual(s["pairs"], 3)
        self.assertEqual(s["a_median"], 150.0)
        self.assertEqual(s["b_median"], 165.0)
        # The median of the per-pair ratios 1.1, 0.9 and 1.1.
        self.assertAlmostEqual(s["b_over_a_median"], 1.1)
        self.assertEqual(s["b_wins"], 2)

    def test_ratio_is_per_pair_not_of_medians(self):
        # A drifts down while B stays level: every pair has B ahead, though the
        # medians alone would call them equal.
        pairs = [(300.0, 310.0), (200.0, 220.0), (100.0, 120.0), (210.0, 205.0)]
        s = ab_raftd.summarize_pairs(pairs)
        self.assertEqual(s["b_wins"], 3)
        self.assertAlmostEqual(s["b_over_a_median"], (310 / 300 + 220 / 200) / 2)
        self.assertGreater(s["b_over_a_median"], 1.0)

    def test_ties_are_nobodys(self):
        s = ab_raftd.summarize_pairs([(100.0, 100.0), (100.0, 101.0)])
        self.assertEqual(s["b_wins"], 1)

    def test_no_pairs_is_an_error(self):
        with self.assertRaises(ValueError):
            ab_raftd.summarize_pairs([])


class ArgumentsTest(unittest.TestCase):
    def run_script(self, *argv):
        return subprocess.run([sys.executable, os.path.join(HERE, "ab_raftd.py"), *argv],
                              capture_output=True, text=True, timeout=60)

    def test_odd_pairs_are_refused(self):
        r = self.run_script("--build-dir", "/nonexistent", "--pairs=3", "--", "put")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--pairs must be an even number", r.stderr)

    def test_a_workload_is_required(self):
        r = self.run_script("--build-dir", "/nonexistent")
        self.assertEqual(r.returncode, 2)
        self.assertIn("give the workload after --", r.stderr)

    def test_a_missing_build_is_a_clear_error(self):
        r = self.run_script("--build-dir", "/nonexistent", "--", "put", "--clients=1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no raftkv-bench at /nonexistent/bench/raftkv-bench", r.stderr)


if __name__ == "__main__":
    unittest.main()
