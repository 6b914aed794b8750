#!/usr/bin/python3
"""deploy/local-cluster.sh, run for real: up, a write and a read, up again, down.

Each test gives the script a data directory of its own and a base port whose
six ports (BASE+1..3 for clients, BASE+101..103 for peers) were free when
chosen, and stops by PID any node the script left running, whatever the test's
outcome.

Environment: RAFTKV_BUILD_DIR (a build tree holding service/raftd and
service/raftctl; the script builds one if they are missing, which a test
should not wait for).
"""
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))
import proc_stat  # noqa: E402  (the test scripts' one /proc stat parser)

SCRIPT = os.path.join(ROOT, "deploy", "local-cluster.sh")
BUILD = os.environ.get("RAFTKV_BUILD_DIR", os.path.join(ROOT, "build"))
RAFTCTL = os.path.join(BUILD, "service", "raftctl")
SCRIPT_TIMEOUT_S = 60


def ports_of(base):
    return [base + i for i in (1, 2, 3, 101, 102, 103)]


def free_base_port():
    """A base port whose six ports nothing listens on (checked by binding each).

    Below Linux's default ephemeral range (32768 up), so that no outgoing
    connection is handed one of them between this check and the nodes' binds.
    """
    for _ in range(50):
        base = random.randrange(10000, 32768 - 103)
        socks = []
        try:
            for port in ports_of(base):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free base port found")


def alive(pid):
    """True while `pid` runs: a zombie (exited, not yet reaped by the parent
    the script left it with) does not count."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return proc_stat.state(f.read()) != "Z"
    except OSError:
        return False


class LocalClusterTest(unittest.TestCase):
    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="raftkv-local-cluster-")
        self.base = free_base_port()
        self.env = dict(os.environ, RAFTKV_DATA=self.data, RAFTKV_BASE_PORT=str(self.base),
                        RAFTKV_BUILD_DIR=BUILD)

    def tearDown(self):
        for pid in self.node_pids():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.data, ignore_errors=True)

    def node_pids(self):
        pids = []
        for i in (1, 2, 3):
            try:
                with open(os.path.join(self.data, f"node{i}.pid")) as f:
                    pids.append(int(f.read()))
            except (OSError, ValueError):
                pass
        return pids

    def script(self, *args, env=None):
        return subprocess.run([SCRIPT, *args], env=env or self.env, capture_output=True,
                              text=True, timeout=SCRIPT_TIMEOUT_S)

    def raftctl(self, node, *args):
        return subprocess.run([RAFTCTL, f"--endpoints=127.0.0.1:{self.base + node}", *args],
                              capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S)

    def test_up_write_read_up_again_down(self):
        up = self.script("up")
        self.assertEqual(up.returncode, 0, up.stdout + up.stderr)
        self.assertIn("raftkv is up", up.stdout)
        pids = self.node_pids()
        self.assertEqual(len(pids), 3)
        self.assertTrue(all(alive(p) for p in pids))

        put = self.raftctl(1, "put", "greeting", "hello")
        self.assertEqual(put.returncode, 0, put.stderr)
        get = self.raftctl(3, "get", "greeting")
        self.assertEqual(get.returncode, 0, get.stderr)
        self.assertEqual(get.stdout.strip(), "hello")

        again = self.script("up")
        self.assertEqual(again.returncode, 0, again.stdout + again.stderr)
        for i, pid in enumerate(pids, 1):
            self.assertIn(f"node {i} already running (pid {pid})", again.stdout)
        self.assertEqual(self.node_pids(), pids)

        down = self.script("down")
        self.assertEqual(down.returncode, 0, down.stderr)
        for i, pid in enumerate(pids, 1):
            self.assertIn(f"stopped node {i} (pid {pid})", down.stdout)
        # down waits for each node to exit; the check that they did is bounded.
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse([p for p in pids if alive(p)])
        self.assertEqual(self.node_pids(), [])

    def test_refuses_ports_another_process_holds(self):
        # Another cluster's node, as far as the script can tell: it accepts
        # connections on node 2's client port.
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", self.base + 2))
        squatter.listen()
        try:
            up = self.script("up")
        finally:
            squatter.close()
        self.assertEqual(up.returncode, 1, up.stdout + up.stderr)
        self.assertIn(f"port(s) {self.base + 2} on 127.0.0.1 are in use", up.stderr)
        self.assertNotIn("raftkv is up", up.stdout)
        # Refused before starting anything: no node, so nothing to stop.
        self.assertEqual(self.node_pids(), [])

    def test_rejects_a_bad_base_port(self):
        for bad in ("abc", "0", "08", "65500"):
            env = dict(self.env, RAFTKV_BASE_PORT=bad)
            up = self.script("up", env=env)
            self.assertEqual(up.returncode, 2, bad)
            self.assertIn("RAFTKV_BASE_PORT must be a number", up.stderr)
            self.assertEqual(self.node_pids(), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
