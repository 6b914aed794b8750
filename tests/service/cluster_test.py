#!/usr/bin/python3
"""Multi-process tests of raftd: real processes on loopback, driven from Python.

Each test starts its own three-node cluster on free loopback ports in a fresh
temporary directory, talks to it with Python gRPC stubs generated at test time
from proto/ (protoc + grpc_python_plugin: a client in a language other than
C++ that uses nothing but the .proto files), waits on conditions with
deadlines (never fixed sleeps), bounds every loop that sends traffic, and stops
every process it started by PID.

Run one test:  cluster_test.py ClusterTest.test_kill_leader_under_writes
Environment:   RAFTKV_RAFTD, RAFTKV_RAFTCTL (binaries), RAFTKV_PROTO_DIR (proto/).
"""
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RAFTD = os.environ.get("RAFTKV_RAFTD", os.path.join(ROOT, "build/service/raftd"))
RAFTCTL = os.environ.get("RAFTKV_RAFTCTL", os.path.join(ROOT, "build/service/raftctl"))
PROTO_DIR = os.environ.get("RAFTKV_PROTO_DIR", os.path.join(ROOT, "proto"))

import grpc  # noqa: E402  (Debian's python3-grpcio)

sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))
import proc_stat  # noqa: E402  (the test scripts' one /proc stat parser)

_STUB_DIR = tempfile.mkdtemp(prefix="raftkv-pystubs-")


def _generate_stubs():
    files = ["raftkv/v1/kv.proto", "raftkv/v1/cluster.proto", "raftkv/v1/state_machine.proto",
             "raftkv/v1/raft.proto"]
    subprocess.run(
        ["protoc", "-I" + PROTO_DIR, "--python_out=" + _STUB_DIR, "--grpc_python_out=" + _STUB_DIR,
         "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin"] + files,
        check=True)
    sys.path.insert(0, _STUB_DIR)


_generate_stubs()
from raftkv.v1 import cluster_pb2, cluster_pb2_grpc, kv_pb2, kv_pb2_grpc  # noqa: E402
from raftkv.v1 import raft_pb2, raft_pb2_grpc  # noqa: E402

HEARTBEAT_MS = 50
ELECTION_MS = 500
RPC_TIMEOUT = 3.0


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def all_threads_stopped(pid):
    """True if no thread of `pid` is left that is not stopped (T in /proc)."""
    return all(proc_stat.state(stat) in "Tt"
               for stat, in proc_stat.thread_files(pid).values())


def wait_for(cond, timeout, what, interval=0.05):
    """Polls cond() until it returns a truthy value or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except grpc.RpcError as e:
            last_error = e
        time.sleep(interval)
    if callable(what):
        what = what()
    raise AssertionError("timed out after %.1fs waiting for %s (last error: %s)"
                         % (timeout, what, last_error))


def thread_names(pid):
    """The names of process pid's threads, one per thread."""
    task_dir = "/proc/%d/task" % pid
    names = []
    for tid in os.listdir(task_dir):
        try:
            with open(os.path.join(task_dir, tid, "comm")) as f:
                names.append(f.read().strip())
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return names


class Cluster:
    def __init__(self, n=3, node_args=()):
        self.node_args = list(node_args)  # flags every node starts with
        self.dir = tempfile.mkdtemp(prefix="raftkv-cluster-")
        ports = free_ports(2 * n)
        self.ids = list(range(1, n + 1))
        self.peer = {i: "127.0.0.1:%d" % ports[2 * (i - 1)] for i in self.ids}
        self.client = {i: "127.0.0.1:%d" % ports[2 * (i - 1) + 1] for i in self.ids}
        self.spec = ",".join("%d=%s/%s" % (i, self.peer[i], self.client[i]) for i in self.ids)
        self.procs = {}
        self.channels = {}
        self.channels = {i: self._channel(i) for i in self.ids}

    # Fast reconnects: a restarted node must not wait out a long client backoff.
    _CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100),
                        ("grpc.min_reconnect_backoff_ms", 100),
                        ("grpc.max_reconnect_backoff_ms", 500),
                        ("grpc.enable_retries", 0)]

    def _channel(self, i):
        return grpc.insecure_channel(self.client[i], options=self._CHANNEL_OPTIONS)

    def data_dir(self, i):
        return os.path.join(self.dir, "node%d" % i)

    def start(self, i, extra=(), data_dir=None):
        log = open(os.path.join(self.dir, "node%d.log" % i), "ab")
        args = [RAFTD, "--id=%d" % i, "--cluster_id=7", "--initial_cluster=" + self.spec,
                "--data_dir=" + (data_dir or self.data_dir(i)),
                "--heartbeat_ms=%d" % HEARTBEAT_MS, "--election_ms=%d" % ELECTION_MS,
                "--log_level=info"] + self.node_args + list(extra)
        self.procs[i] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if i in self.channels:
            self.channels[i].close()
        self.channels[i] = self._channel(i)

    def start_all(self):
        for i in self.ids:
            self.start(i)

    def signal(self, i, sig):
        """Sends `sig` to node i. For SIGSTOP, returns once every thread has stopped:
        kill() only queues a stop, and until the thread picked to take it runs, the
        node's other threads may go on serving its peers (for milliseconds on a
        loaded machine), which would let a test race the stop it asked for."""
        pid = self.procs[i].pid
        os.kill(pid, sig)
        if sig == signal.SIGSTOP:
            wait_for(lambda: all_threads_stopped(pid), 10, "node %d's threads to stop" % i)

    def kill9(self, i):
        self.procs[i].kill()
        self.procs[i].wait(timeout=10)

    def stop(self, i):
        """SIGTERM; asserts a clean exit (status 0) within 15 s."""
        p = self.procs[i]
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.terminate()
            try:
                code = p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
                raise AssertionError("node %d did not stop within 15 s of SIGTERM" % i)
            if code != 0:
                raise AssertionError("node %d exited with %d after SIGTERM" % (i, code))

    def close(self, keep_dir=False):
        for i, p in self.procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait(timeout=10)
        for c in self.channels.values():
            c.close()
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self, i):
        with open(os.path.join(self.dir, "node%d.log" % i), "rb") as f:
            return f.read().decode(errors="replace")

    def kv(self, i):
        return kv_pb2_grpc.KVStub(self.channels[i])

    def admin(self, i):
        return cluster_pb2_grpc.ClusterStub(self.channels[i])

    def status(self, i, timeout=1.0):
        # wait_for_ready: a call that fails fast polls nothing, and grpcio
        # polls a connection attempt only from calls waiting on its channel.
        # Once a channel had failed to connect (its node was down), probes
        # that failed fast left every new attempt unpolled until its
        # deadline: a restarted node looked unreachable for about 14 s.
        return self.admin(i).Status(cluster_pb2.StatusRequest(), timeout=timeout,
                                    wait_for_ready=True)

    def leader(self, among=None):
        """The id of a node that says it leads, if every live node agrees."""
        among = among or [i for i in self.ids if self.procs.get(i) and self.procs[i].poll() is None]
        st = {}
        for i in among:
            try:
                st[i] = self.status(i)
            except grpc.RpcError:
                return None
        leaders = [i for i, s in st.items() if s.role == "leader"]
        if len(leaders) != 1:
            return None
        lid = leaders[0]
        if all(s.leader_id == lid and s.term == st[lid].term for s in st.values()):
            return lid
        return None

    def wait_leader(self, among=None, timeout=15):
        return wait_for(lambda: self.leader(among), timeout, "a leader all nodes agree on")

    def put(self, i, key, value, timeout=RPC_TIMEOUT, **kw):
        return self.kv(i).Put(kv_pb2.PutRequest(key=key, value=value, **kw), timeout=timeout)

    def get(self, i, key, serializable=False, timeout=RPC_TIMEOUT):
        return self.kv(i).Get(kv_pb2.GetRequest(key=key, serializable=serializable),
                              timeout=timeout)


class ClusterTest(unittest.TestCase):
    def setUp(self):
        self.c = Cluster()

    def tearDown(self):
        result = getattr(self._outcome, "result", None)
        failed = result is None or any(
            t is self for t, _ in list(result.failures) + list(result.errors))
        if failed:
            for i in self.c.ids:
                p = self.c.procs.get(i)
                sys.stderr.write("node %d process: %s\n" % (
                    i, "not started" if p is None else
                    "running" if p.poll() is None else "exited with %d" % p.returncode))
                try:
                    sys.stderr.write("node %d status: %s\n" % (i, self.c.status(i)))
                except grpc.RpcError as e:
                    sys.stderr.write("node %d status: %s %s\n" % (i, e.code(), e.details()))
                sys.stderr.write("---- node %d log (tail) ----\n%s\n" % (i, self.c.log(i)[-3000:]))
        self.c.close()

    def test_election_and_writes_on_any_node(self):
        """Three nodes elect one leader; a write on any node is readable on every node."""
        self.c.start_all()
        leader = self.c.wait_leader()
        roles = sorted(self.c.status(i).role for i in self.c.ids)
        self.assertEqual(roles, ["follower", "follower", "leader"])
        for i in self.c.ids:
            for k in range(3):
                r = self.c.put(i, b"key-%d-%d" % (i, k), b"value-%d-%d" % (i, k))
                self.assertGreater(r.header.revision, 0)
                # A follower carries the write to the leader over the peer
                # stream and answers the call itself once the leader applied it.
                self.assertEqual(r.header.node_id, i)
        for reader in self.c.ids:
            for i in self.c.ids:
                for k in range(3):
                    g = self.c.get(reader, b"key-%d-%d" % (i, k))  # linearizable
                    self.assertTrue(g.found)
                    self.assertEqual(g.kv.value, b"value-%d-%d" % (i, k))
                    self.assertEqual(g.header.node_id, reader)
        # Serializable reads are local; followers catch up without any further write.
        for reader in self.c.ids:
            wait_for(lambda: self.c.get(reader, b"key-3-2", serializable=True).found, 5,
                     "node %d to apply the last write" % reader)
        rng = self.c.kv(leader).Range(kv_pb2.RangeRequest(key=b"key-", prefix=True), timeout=3)
        self.assertEqual(len(rng.kvs), 9)
        rng = self.c.kv(leader).Range(kv_pb2.RangeRequest(key=b"key-", prefix=True, limit=4),
                                      timeout=3)
        self.assertEqual(len(rng.kvs), 4)
        self.assertTrue(rng.more)
        # The old value comes back only when asked for (as in etcd), on the
        # leader and through a follower alike.
        follower = next(i for i in self.c.ids if i != leader)
        for node in (leader, follower):
            self.assertFalse(self.c.put(node, b"key-2-0", b"new").HasField("prev_kv"))
            r = self.c.put(node, b"key-2-0", b"newer", prev_kv=True)
            self.assertEqual((r.prev_kv.key, r.prev_kv.value), (b"key-2-0", b"new"))
            self.assertFalse(self.c.put(node, b"fresh-%d" % node, b"v",
                                        prev_kv=True).HasField("prev_kv"))
        # Delete and compare-and-swap, through a follower.
        kv = self.c.kv(follower)
        d = kv.Delete(kv_pb2.DeleteRequest(key=b"key-2-0", prev_kv=True), timeout=3)
        self.assertTrue(d.deleted)
        self.assertEqual(d.prev_kv.value, b"newer")
        d = kv.Delete(kv_pb2.DeleteRequest(key=b"key-1-0"), timeout=3)
        self.assertTrue(d.deleted)
        self.assertFalse(d.HasField("prev_kv"))
        self.assertFalse(kv.Delete(kv_pb2.DeleteRequest(key=b"key-1-0"), timeout=3).deleted)
        self.assertFalse(self.c.get(leader, b"key-1-0").found)
        kv.CompareAndSwap(kv_pb2.CompareAndSwapRequest(key=b"cas", expect_absent=True,
                                                       new_value=b"a"), timeout=3)
        with self.assertRaises(grpc.RpcError) as cm:
            kv.CompareAndSwap(kv_pb2.CompareAndSwapRequest(key=b"cas", expected_value=b"x",
                                                           new_value=b"b"), timeout=3)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        kv.CompareAndSwap(kv_pb2.CompareAndSwapRequest(key=b"cas", expected_value=b"a",
                                                       new_value=b"b"), timeout=3)
        self.assertEqual(self.c.get(leader, b"cas").kv.value, b"b")
        # Exactly-once: a retried (client_id, sequence) is applied once.
        first = self.c.put(follower, b"once", b"first", client_id=42, sequence=1)
        again = self.c.put(leader, b"once", b"second", client_id=42, sequence=1)
        self.assertEqual(first.header.revision, again.header.revision)
        self.assertEqual(self.c.get(follower, b"once").kv.value, b"first")
        # Health (grpc.health.v1, raw bytes: an empty HealthCheckRequest; SERVING = 1) and
        # reflection (list_services) are served on the client port.
        for i in self.c.ids:
            health = self.c.channels[i].unary_unary("/grpc.health.v1.Health/Check")
            self.assertEqual(health(b"", timeout=3), b"\x08\x01")
        reflect = self.c.channels[leader].stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        listing = b"".join(reflect(iter([b"\x3a\x00"]), timeout=3))
        self.assertIn(b"raftkv.v1.KV", listing)
        self.assertIn(b"raftkv.v1.Cluster", listing)
        # The leader reports its followers' progress.
        st = self.c.status(leader)
        self.assertEqual(sorted(f.id for f in st.followers), [i for i in self.c.ids if i != leader])
        for i in self.c.ids:
            self.c.stop(i)

    def test_concurrent_writes_at_a_follower_get_their_own_answers(self):
        """Writes sent to a follower at once come back from the leader in
        batches, answered with the client connections corked; each call
        still gets the answer to its own write."""
        self.c.start_all()
        leader = self.c.wait_leader()
        follower = next(i for i in self.c.ids if i != leader)
        n = 300
        for k in range(n):
            self.c.put(leader, b"burst-%d" % k, b"old-%d" % k)
        kv = self.c.kv(follower)
        calls = [kv.Put.future(kv_pb2.PutRequest(key=b"burst-%d" % k, value=b"new-%d" % k,
                                                 prev_kv=True), timeout=10)
                 for k in range(n)]
        revisions = set()
        for k, call in enumerate(calls):
            r = call.result()
            self.assertEqual((r.prev_kv.key, r.prev_kv.value), (b"burst-%d" % k, b"old-%d" % k))
            self.assertEqual(r.header.node_id, follower)
            revisions.add(r.header.revision)
        self.assertEqual(len(revisions), n)
        for k in range(n):
            self.assertEqual(self.c.get(leader, b"burst-%d" % k).kv.value, b"new-%d" % k)

    def test_health_check_and_watch(self):
        """grpc.health.v1 on every node: Check answers SERVING for the server and its
        services and NOT_FOUND for others; Watch sends SERVING, then NOT_SERVING when the
        node is told to stop, and then ends, so the node still exits cleanly."""
        self.c.start_all()
        self.c.wait_leader()
        # Raw protobuf: HealthCheckRequest{service} is field 1; the response's status is
        # field 1 (SERVING = 1, NOT_SERVING = 2, SERVICE_UNKNOWN = 3).
        def request(service):
            name = service.encode()
            return b"\x0a" + bytes([len(name)]) + name if name else b""
        for i in self.c.ids:
            check = self.c.channels[i].unary_unary("/grpc.health.v1.Health/Check")
            for service in ("", "raftkv.v1.KV", "raftkv.v1.Cluster"):
                self.assertEqual(check(request(service), timeout=3), b"\x08\x01", service)
            with self.assertRaises(grpc.RpcError) as cm:
                check(request("no.such.Service"), timeout=3)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        watch = self.c.channels[2].unary_stream("/grpc.health.v1.Health/Watch")
        unknown = watch(request("no.such.Service"), timeout=30)
        self.assertEqual(next(unknown), b"\x08\x03")
        unknown.cancel()
        stream = watch(request(""), timeout=30)
        self.assertEqual(next(stream), b"\x08\x01")
        self.c.signal(2, signal.SIGTERM)
        self.assertEqual(next(stream), b"\x08\x02")
        with self.assertRaises(grpc.RpcError) as cm:
            next(stream)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.c.stop(2)
        # Every call, the watches included, was settled before the node exited.
        self.assertNotIn("still in progress at shutdown", self.c.log(2))

    def test_kill_leader_under_writes(self):
        """kill -9 the leader during a stream of writes: a new leader takes over, writes
        resume, and every acknowledged write survives the old leader's restart."""
        self.c.start_all()
        old = self.c.wait_leader()
        acked = {}
        errors = {}
        last_error = {}
        lock = threading.Lock()
        stop = threading.Event()

        def writer():
            # Bounded: at most 5000 attempts or 60 s, and at most ~50 failed attempts per
            # second (a failed call pauses 20 ms before the next). Rotates over all nodes.
            end = time.monotonic() + 60
            for n in range(5000):
                if stop.is_set() or time.monotonic() > end:
                    return
                node = self.c.ids[n % 3]
                key, value = b"w%05d" % n, b"v%05d" % n
                try:
                    self.c.put(node, key, value, timeout=2, client_id=99, sequence=n + 1)
                    with lock:
                        acked[key] = value
                except grpc.RpcError as e:
                    with lock:
                        errors[e.code().name] = errors.get(e.code().name, 0) + 1
                        last_error[node] = e.details()
                    stop.wait(0.02)

        t = threading.Thread(target=writer)
        t.start()
        try:
            wait_for(lambda: len(acked) >= 50, 20, "50 acknowledged writes")
            self.c.kill9(old)
            survivors = [i for i in self.c.ids if i != old]
            new = self.c.wait_leader(among=survivors)
            self.assertNotEqual(new, old)
            with lock:
                at_kill = len(acked)
            wait_for(lambda: len(acked) >= at_kill + 50, 30,
                     lambda: "writes to resume after the kill (errors: %r, last: %r)"
                     % (errors, last_error))
        finally:
            stop.set()
            t.join(timeout=70)
        self.assertFalse(t.is_alive())
        self.c.start(old)
        leader = self.c.wait_leader()
        commit = self.c.status(leader).commit_index
        wait_for(lambda: self.c.status(old).applied_index >= commit, 20,
                 "the old leader to catch up to index %d" % commit)
        for reader in self.c.ids:
            for key, value in acked.items():
                g = self.c.get(reader, key, serializable=True)
                self.assertTrue(g.found, "acknowledged %r missing on node %d" % (key, reader))
                self.assertEqual(g.kv.value, value)

    def test_quorum_loss_sigstop(self):
        """SIGSTOP two of three: writes fail with UNAVAILABLE within their deadline and
        nothing is half-done; after SIGCONT writes succeed again."""
        self.c.start_all()
        leader = self.c.wait_leader()
        self.c.put(leader, b"before", b"1")
        stopped = [i for i in self.c.ids if i != leader]
        for i in stopped:
            self.c.signal(i, signal.SIGSTOP)
        attempted = []
        codes = []

        def write_fails_unavailable():
            n = len(attempted)
            key = b"during-%d" % n
            attempted.append(key)
            if n > 40:
                raise AssertionError("bounded: 40 attempts")
            t0 = time.monotonic()
            try:
                self.c.put(leader, key, b"x", timeout=2)
                codes.append("OK")
                return False
            except grpc.RpcError as e:
                self.assertLess(time.monotonic() - t0, 2.5, "a write outlived its deadline")
                codes.append(e.code().name)
                if e.code() == grpc.StatusCode.UNAVAILABLE:
                    return e
                return False

        err = wait_for(write_fails_unavailable, 20, "a write to fail with UNAVAILABLE")
        self.assertIn("leader", err.details())
        # Every call fails fast now that the node knows it has no quorum.
        with self.assertRaises(grpc.RpcError) as cm:
            self.c.put(leader, b"during-late", b"x", timeout=2)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        with self.assertRaises(grpc.RpcError) as cm:
            self.c.get(leader, b"before", timeout=2)
        self.assertIn(cm.exception.code(),
                      (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED))
        for i in stopped:
            self.c.signal(i, signal.SIGCONT)
        new = self.c.wait_leader()
        wait_for(lambda: self.c.put(new, b"after", b"1", timeout=2), 20, "writes to succeed again")
        # Nothing half-done: once all nodes applied everything, each failed write is
        # either present on every node or on none.
        commit = self.c.status(new).commit_index
        for i in self.c.ids:
            wait_for(lambda: self.c.status(i).applied_index >= commit, 10, "node %d to apply" % i)
        for key in attempted + [b"during-late"]:
            seen = {self.c.get(i, key, serializable=True).found for i in self.c.ids}
            self.assertEqual(len(seen), 1, "write %r applied on some nodes only" % key)
        for i in self.c.ids:
            self.assertTrue(self.c.get(i, b"after").found)

    def test_writes_go_on_with_either_follower_stopped(self):
        """With thrifty replication (the default) only one follower gets each write at
        once; whichever follower is stopped, writes still succeed within their deadline
        (the leader turns to the other), and every write is on every node afterwards."""
        self.c.start_all()
        leader = self.c.wait_leader()
        followers = [i for i in self.c.ids if i != leader]
        for stopped in followers:
            self.c.signal(stopped, signal.SIGSTOP)
            try:
                for n in range(30):
                    self.c.put(leader, b"f%d-%02d" % (stopped, n), b"%d" % n, timeout=2)
            finally:
                self.c.signal(stopped, signal.SIGCONT)
        commit = self.c.status(leader).commit_index
        for i in self.c.ids:
            wait_for(lambda: self.c.status(i).applied_index >= commit, 10, "node %d to apply" % i)
            for stopped in followers:
                self.assertTrue(self.c.get(i, b"f%d-29" % stopped, serializable=True).found)

    def test_follower_reads_across_leader_loss(self):
        """Linearizable reads on a follower ask the leader for a read index over the peer
        stream. With the leader stopped they fail UNAVAILABLE (never hang, never answer
        stale data); once a new leader is elected they succeed and see its writes."""
        self.c.start_all()
        old = self.c.wait_leader()
        self.c.put(old, b"k", b"before")
        follower = [i for i in self.c.ids if i != old][0]
        self.assertEqual(self.c.get(follower, b"k").kv.value, b"before")
        self.c.signal(old, signal.SIGSTOP)
        failures = []

        def read_succeeds():
            if len(failures) > 100:
                raise AssertionError("bounded: 100 failed reads")
            try:
                return self.c.get(follower, b"k", timeout=5)
            except grpc.RpcError as e:
                failures.append(e.code())
                return None

        self.assertEqual(wait_for(read_succeeds, 30, "a follower read to succeed").kv.value,
                         b"before")
        self.assertTrue(failures, "the first read should have been refused: the leader is stopped")
        self.assertEqual(set(failures), {grpc.StatusCode.UNAVAILABLE}, failures)
        new = self.c.wait_leader(among=[i for i in self.c.ids if i != old])
        self.c.put(new, b"k", b"after")
        for i in self.c.ids:
            if i != old:
                self.assertEqual(self.c.get(i, b"k").kv.value, b"after")
        self.c.signal(old, signal.SIGCONT)

    def test_threads_are_named_for_their_work(self):
        """Each node runs one Raft, one apply and one KV thread, and LevelDB's compactions
        run on a thread of their own name (not one that took the name of the thread that
        happened to start it), so per-thread tools tell them apart."""
        self.c.start_all()
        leader = self.c.wait_leader()
        self.c.put(leader, b"named", b"v")
        expected = ["raftkv-raft", "raftkv-apply", "leveldb-compact"]
        if "--kv_threads=0" not in self.c.node_args:
            expected.append("raftkv-kv-0")
        for i in self.c.ids:
            # The compaction thread names itself once it runs.
            wait_for(lambda: "leveldb-compact" in thread_names(self.c.procs[i].pid), 5,
                     "node %d's leveldb-compact thread" % i)
            names = thread_names(self.c.procs[i].pid)
            for name in expected:
                self.assertEqual(names.count(name), 1, (i, name, sorted(names)))

    def test_a_follower_applies_writes_soon_after_they_pause(self):
        """Thrifty replication sends followers no commit index on its own; once commits
        stand still for a moment the leader announces the last one. With heartbeats 1 s
        apart, after each of 5 writes a follower that holds it (the one its commit waited
        for) serves it to a serializable read within 300 ms."""
        for i in self.c.ids:
            self.c.start(i, extra=["--heartbeat_ms=1000", "--election_ms=5000"])
        leader = self.c.wait_leader(timeout=30)
        followers = [i for i in self.c.ids if i != leader]
        for n in range(5):
            key = b"pause-%d" % n
            self.c.put(leader, key, b"v")
            wait_for(lambda: any(self.c.get(f, key, serializable=True).found for f in followers),
                     0.3, "a follower to apply %r" % key, interval=0.01)

    def test_restarted_follower_catches_up(self):
        """A follower that missed many writes catches up after it restarts."""
        self.c.start_all()
        leader = self.c.wait_leader()
        follower = next(i for i in self.c.ids if i != leader)
        self.c.stop(follower)
        for n in range(300):
            self.c.put(leader, b"c%04d" % n, b"%d" % n)
        self.c.start(follower)
        commit = self.c.status(leader).commit_index
        wait_for(lambda: self.c.status(follower).applied_index >= commit, 20,
                 "the restarted follower to apply up to %d" % commit)
        rng = self.c.kv(follower).Range(kv_pb2.RangeRequest(key=b"c", prefix=True,
                                                            serializable=True), timeout=3)
        self.assertEqual(len(rng.kvs), 300)
        self.assertEqual(rng.kvs[299].value, b"299")

    def test_bad_input_gets_clear_errors(self):
        """Bad input gets INVALID_ARGUMENT (or UNIMPLEMENTED) with a message, garbage on the
        peer and client ports is survived, and the cluster keeps working."""
        self.c.start_all()
        leader = self.c.wait_leader()
        follower = next(i for i in self.c.ids if i != leader)

        def code_of(fn):
            with self.assertRaises(grpc.RpcError) as cm:
                fn()
            return cm.exception

        for node in (leader, follower):
            kv = self.c.kv(node)
            e = code_of(lambda: self.c.put(node, b"", b"v"))
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("key is empty", e.details())
            e = code_of(lambda: self.c.put(node, b"big", b"x" * ((1 << 20) + 1)))
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("limit", e.details())
            e = code_of(lambda: self.c.put(node, b"k" * 5000, b"v"))
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
            e = code_of(lambda: kv.CompareAndSwap(
                kv_pb2.CompareAndSwapRequest(key=b"k", new_value=b"v"), timeout=3))
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
            e = code_of(lambda: kv.Range(kv_pb2.RangeRequest(key=b"b", range_end=b"a"), timeout=3))
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
            e = code_of(lambda: kv.Range(kv_pb2.RangeRequest(key=b"a", limit=-1), timeout=3))
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
            e = code_of(lambda: self.c.put(node, b"k", b"v", client_id=5))
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
            e = code_of(lambda: self.c.get(node, b""))
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
            # A method that does not exist, and bytes that are no PutRequest.
            ch = self.c.channels[node]
            e = code_of(lambda: ch.unary_unary("/raftkv.v1.KV/Nope")(b"", timeout=3))
            self.assertEqual(e.code(), grpc.StatusCode.UNIMPLEMENTED)
            e = code_of(lambda: ch.unary_unary("/raftkv.v1.KV/Put")(b"\xff\xff\xff\xff", timeout=3))
            self.assertNotEqual(e.code(), grpc.StatusCode.OK)
        self.assertFalse(self.c.get(leader, b"big").found)
        # Garbage bytes on every peer and client port.
        rnd = random.Random(4)
        for i in self.c.ids:
            for addr in (self.c.peer[i], self.c.client[i]):
                host, port = addr.split(":")
                with socket.create_connection((host, int(port)), timeout=3) as s:
                    try:
                        s.sendall(bytes(rnd.getrandbits(8) for _ in range(65536)))
                    except OSError:
                        pass  # the server may hang up mid-way: that is fine
        # A well-formed peer stream from another cluster is refused.
        raft_stream = grpc.insecure_channel(self.c.peer[leader]).stream_unary(
            "/raftkv.v1.Raft/Stream")
        e = code_of(lambda: raft_stream(iter([b""]), timeout=3,
                                        metadata=(("raftkv-cluster-id", "8"),
                                                  ("raftkv-from", "2"))))
        self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("cluster id mismatch", e.details())
        for i in self.c.ids:
            self.assertIsNone(self.c.procs[i].poll(), "node %d died" % i)
        self.assertEqual(self.c.wait_leader(), leader)
        self.c.put(follower, b"still", b"working")
        for i in self.c.ids:
            self.assertEqual(self.c.get(i, b"still").kv.value, b"working")

    def test_overload_gets_resource_exhausted(self):
        """Beyond --max_pending_requests calls in progress, writes get RESOURCE_EXHAUSTED
        at once; the others complete and the node keeps serving."""
        for i in self.c.ids:
            self.c.start(i, extra=["--max_pending_requests=2"])
        leader = self.c.wait_leader()
        kv = self.c.kv(leader)
        futures = [kv.Put.future(kv_pb2.PutRequest(key=b"o%03d" % n, value=b"v"), timeout=10)
                   for n in range(100)]
        codes = {}
        for f in futures:
            try:
                f.result()
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    self.assertIn("too many pending requests", e.details())
            codes[code] = codes.get(code, 0) + 1
        self.assertGreater(codes.get("RESOURCE_EXHAUSTED", 0), 0, codes)
        self.assertGreater(codes.get("OK", 0), 0, codes)
        self.assertEqual(set(codes), {"OK", "RESOURCE_EXHAUSTED"})

        # A call's slot is given back just after its reply is sent, so the first write
        # after the burst may still find one taken (RESOURCE_EXHAUSTED): retry it.
        wait_for(lambda: self.c.put(leader, b"after", b"overload"), 5,
                 "the slots of the burst to be given back")
        self.assertEqual(self.c.get(leader, b"after").kv.value, b"overload")

    def test_unavailable_names_the_leader(self):
        """A forwarded write to a dead leader fails UNAVAILABLE with the leader's address in
        the message and in trailing metadata; a health check answers SERVING."""
        self.c.start_all()
        leader = self.c.wait_leader()
        follower = next(i for i in self.c.ids if i != leader)
        self.c.signal(leader, signal.SIGSTOP)
        # Until the follower notices (an election timeout), it forwards to the stopped
        # leader; the forward fails within the caller's deadline.
        try:
            self.c.kv(follower).Put(kv_pb2.PutRequest(key=b"x", value=b"y"), timeout=0.5)
            self.fail("a write to a stopped leader succeeded")
        except grpc.RpcError as e:
            self.assertIn(e.code(), (grpc.StatusCode.UNAVAILABLE,
                                     grpc.StatusCode.DEADLINE_EXCEEDED))
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                md = dict(e.trailing_metadata() or ())
                self.assertEqual(md.get("raftkv-leader"), self.c.client[leader])
        self.c.signal(leader, signal.SIGCONT)
        self.c.wait_leader()

    def test_peer_port_checks_callers(self):
        """The peer port refuses streams without an identity or from another cluster,
        ignores messages from unknown senders, answers InstallSnapshot UNIMPLEMENTED, and
        none of it disturbs the cluster."""
        self.c.start_all()
        leader = self.c.wait_leader()
        term = self.c.status(leader).term
        with grpc.insecure_channel(self.c.peer[leader]) as ch:
            raft = raft_pb2_grpc.RaftStub(ch)
            # A vote request with a huge term would depose the leader if it were stepped.
            vote = raft_pb2.Message(**{"from": 99, "to": leader, "vote_request":
                                       raft_pb2.VoteRequest(term=term + 1000, candidate_id=99,
                                                            last_log_index=1 << 40,
                                                            last_log_term=term + 1000)})
            batch = raft_pb2.MessageBatch(messages=[vote])
            cases = [([], grpc.StatusCode.INVALID_ARGUMENT),
                     ([("raftkv-cluster-id", "8"), ("raftkv-from", "2")],
                      grpc.StatusCode.FAILED_PRECONDITION)]
            for metadata, code in cases:
                with self.assertRaises(grpc.RpcError) as cm:
                    raft.Stream(iter([batch]), metadata=metadata, timeout=RPC_TIMEOUT)
                self.assertEqual(cm.exception.code(), code, metadata)
            # Right cluster, unknown sender: accepted, and its messages ignored.
            summary = raft.Stream(iter([batch, batch]),
                                  metadata=[("raftkv-cluster-id", "7"), ("raftkv-from", "99")],
                                  timeout=RPC_TIMEOUT)
            self.assertEqual(summary.batches, 2)
            with self.assertRaises(grpc.RpcError) as cm:
                raft.InstallSnapshot(iter([vote]), metadata=[("raftkv-cluster-id", "7")],
                                     timeout=RPC_TIMEOUT)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        self.c.put(leader, b"after", b"strangers")
        st = self.c.status(leader)
        self.assertEqual((st.role, st.term), ("leader", term))
        for i in self.c.ids:
            wait_for(lambda: self.c.get(i, b"after", serializable=True).found, 5,
                     "node %d to apply the write" % i)

    def test_raftctl_and_identity(self):
        """raftctl works against the cluster; a data directory of another node is refused."""
        self.c.start_all()
        self.c.wait_leader()
        eps = ",".join(self.c.client[i] for i in self.c.ids)

        def ctl(*args):
            return subprocess.run([RAFTCTL, "--endpoints=" + eps] + list(args),
                                  capture_output=True, text=True, timeout=30)

        r = ctl("put", "hello", "world")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = ctl("get", "hello")
        self.assertEqual((r.returncode, r.stdout), (0, "world\n"), r.stderr)
        r = ctl("put", "--prev_kv", "hello", "again")
        self.assertEqual((r.returncode, r.stdout), (0, "OK\nworld\n"), r.stderr)
        r = ctl("put", "hello", "world")
        self.assertEqual((r.returncode, r.stdout), (0, "OK\n"), r.stderr)
        r = ctl("put", "doomed", "gone")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = ctl("del", "--prev_kv", "doomed")
        self.assertEqual((r.returncode, r.stdout), (0, "1\ngone\n"), r.stderr)
        r = ctl("cas", "hello", "world", "world")
        self.assertEqual((r.returncode, r.stdout), (0, "OK\n"), r.stderr)
        r = ctl("get", "absent")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not found", r.stderr)
        r = ctl("-w", "json", "get", "hello")
        self.assertEqual(r.returncode, 0)
        self.assertIn('"found":true', r.stdout)
        r = ctl("cas", "hello", "nope", "x")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("FAILED_PRECONDITION", r.stderr)
        r = ctl("put", "", "x")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("INVALID_ARGUMENT", r.stderr)
        r = ctl("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.strip().split("\n")
        self.assertEqual(len(lines), 4)  # header + one line per endpoint
        self.assertEqual(sum(" leader " in l for l in lines[1:]), 1)
        r = subprocess.run([RAFTCTL, "--endpoints=127.0.0.1:1", "--timeout_ms=500", "status"],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("127.0.0.1:1", r.stderr)
        r = ctl("members")
        self.assertEqual(r.returncode, 0)
        self.assertEqual(len(r.stdout.strip().split("\n")), 4)
        # Node 1 pointed at node 2's data directory must refuse to start.
        self.c.stop(1)
        self.c.stop(2)
        r = subprocess.run([RAFTD, "--id=1", "--cluster_id=7", "--initial_cluster=" + self.c.spec,
                            "--data_dir=" + self.c.data_dir(2)],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("node", r.stderr)
        # And a data directory of another cluster, too.
        r = subprocess.run([RAFTD, "--id=2", "--cluster_id=8", "--initial_cluster=" + self.c.spec,
                            "--data_dir=" + self.c.data_dir(2)],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("cluster", r.stderr)
        # Bad flags get a clear error too.
        r = subprocess.run([RAFTD, "--id=9", "--initial_cluster=" + self.c.spec,
                            "--data_dir=" + self.c.data_dir(9)],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not a member", r.stderr)

    def test_expired_calls_give_their_slot_back(self):
        """Writes and linearizable reads whose deadline passes while they cannot complete
        (two of three nodes stopped) end with DEADLINE_EXCEEDED and give their
        --max_pending_requests slot back at once, not when Raft finally answers; the node
        keeps serving and stops cleanly."""
        # A long election timeout keeps the leader leading (check-quorum steps it down
        # only after one) while the writes below expire.
        for i in self.c.ids:
            self.c.start(i, extra=["--max_pending_requests=2", "--election_ms=4000"])
        leader = self.c.wait_leader(timeout=30)
        self.c.put(leader, b"before", b"1")
        stopped = [i for i in self.c.ids if i != leader]
        for i in stopped:
            self.c.signal(i, signal.SIGSTOP)
        codes = []
        t0 = time.monotonic()
        # Bounded: 5 writes and 3 reads of 0.25 s each, well inside the election timeout.
        for n in range(5):
            try:
                self.c.put(leader, b"expired-%d" % n, b"x", timeout=0.25)
                codes.append("OK")
            except grpc.RpcError as e:
                codes.append(e.code().name)
        for n in range(3):
            try:
                self.c.get(leader, b"before", timeout=0.25)
                codes.append("OK")
            except grpc.RpcError as e:
                codes.append(e.code().name)
        if time.monotonic() - t0 < 3.5:  # the leader cannot have stepped down yet
            self.assertEqual(codes, ["DEADLINE_EXCEEDED"] * 8)
        self.assertNotIn("RESOURCE_EXHAUSTED", codes)
        self.assertNotIn("OK", codes)
        # The node still answers while its calls' waiters are parked in Raft.
        self.assertEqual(self.c.status(leader).role, "leader")
        self.assertTrue(self.c.get(leader, b"before", serializable=True).found)
        for i in stopped:
            self.c.signal(i, signal.SIGCONT)
        new = self.c.wait_leader(timeout=30)
        wait_for(lambda: self.c.put(new, b"after", b"1", timeout=2), 20, "writes to succeed again")
        for n in range(3):
            self.c.put(new, b"after-%d" % n, b"1")
        for i in self.c.ids:
            self.assertIsNone(self.c.procs[i].poll(), "node %d died" % i)
            self.c.stop(i)

    def test_sigterm_under_load_exits_cleanly(self):
        """SIGTERM while hundreds of calls are in flight (proposed, forwarded, reading):
        every node exits with status 0 within its shutdown deadline, and every call ends."""
        self.c.start_all()
        leader = self.c.wait_leader()
        follower = next(i for i in self.c.ids if i != leader)
        futures = []
        # Bounded: 3 rounds of 150 calls, spread over the leader and a follower.
        for r in range(3):
            for n in range(150):
                node = leader if n % 2 else follower
                kv = self.c.kv(node)
                if n % 3 == 0:
                    futures.append(kv.Get.future(kv_pb2.GetRequest(key=b"k%d" % n), timeout=10))
                else:
                    futures.append(kv.Put.future(
                        kv_pb2.PutRequest(key=b"k%d" % n, value=b"v" * 100), timeout=10))
        # Stop the follower first (its forwarded calls are in flight), then the leader.
        self.c.stop(follower)
        self.c.stop(leader)
        for f in futures:
            try:
                f.result(timeout=15)
            except grpc.RpcError:
                pass  # any status: the point is that each call ends
        for i in self.c.ids:
            self.c.stop(i)


class ClientsOnRaftThreadTest(ClusterTest):
    """The same tests with --kv_threads=0: each node's Raft thread serves its clients
    itself, on the peer server (which then listens on the client port too)."""

    def setUp(self):
        self.c = Cluster(node_args=["--kv_threads=0"])

    def test_the_raft_thread_serves_clients(self):
        """No KV thread runs; writes and reads on every node still work, and the client
        port answers peer streams with the same identity checks as the peer port."""
        self.c.start_all()
        leader = self.c.wait_leader()
        for i in self.c.ids:
            self.c.put(i, b"k%d" % i, b"v%d" % i)
        for i in self.c.ids:
            for j in self.c.ids:
                self.assertEqual(self.c.get(i, b"k%d" % j).kv.value, b"v%d" % j)
            names = set(thread_names(self.c.procs[i].pid))
            self.assertIn("raftkv-raft", names)
            self.assertFalse([n for n in names if n.startswith("raftkv-kv-")], names)
        with grpc.insecure_channel(self.c.client[leader]) as ch:
            with self.assertRaises(grpc.RpcError) as cm:
                raft_pb2_grpc.RaftStub(ch).Stream(
                    iter([raft_pb2.MessageBatch()]),
                    metadata=[("raftkv-cluster-id", "8"), ("raftkv-from", "2")],
                    timeout=RPC_TIMEOUT)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)


if __name__ == "__main__":
    try:
        unittest.main(verbosity=2)
    finally:
        shutil.rmtree(_STUB_DIR, ignore_errors=True)
