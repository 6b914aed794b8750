#!/usr/bin/python3
"""raftkv against etcd on this machine, in one run, with the same load.

Starts a three-member etcd cluster (Debian's etcd-server: fsync on, default
settings, --logger=zap) and a three-node raftkv cluster (raftd from the build
tree), all on 127.0.0.1 with ports of their own and data under one temporary
directory; runs each workload against both systems in turn (alternating which
goes first), each run preceded by a sync and a warm-up; records every node's peak resident
memory (VmHWM) and CPU time (utime + stime) just before stopping it, and the
machine's CPU steal during each run (/proc/stat: time a hypervisor gave this
VM's vCPUs to other guests); prints one table and writes the same as JSON.

Everything it starts it stops by PID, and it removes its temporary directory,
on success, failure or interruption. The full run takes about five minutes
(workloads that would take it past 9.5 are skipped and reported); the --smoke
run (a second or two per system and workload) runs in the test suite so the
script cannot rot. It is a benchmark: its numbers never fail it; a run that
cannot start a cluster, or a bench run that fails or gets errors, does.

Usage:
  compare_etcd.py --build-dir BUILD [--smoke] [--json OUT] [--systems etcd,raftkv]
                  [--duration S] [--warmup S] [--rounds N] [--max-steal PCT]
                  [--data-root DIR] [--keep-data]

--rounds N runs each workload N times per system, alternating which goes first,
and reports each system's run of median throughput: on a virtual machine whose
disk and CPU drift, one run of a workload can be 30% off the next.

--max-steal PCT (default 5): a run during which the hypervisor gave more than
PCT percent of this VM's CPU time to other guests is made again, at most twice
and only while the time budget allows, whichever system it was: on a shared
host, bursts of 20-40% steal halved a lone client's throughput for one run and
not the next. The report counts such runs, and the JSON keeps each one replaced.
"""

import argparse
import ctypes
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proc_stat  # noqa: E402

HOST = "127.0.0.1"
TIME_BUDGET_S = 570  # the whole run stays under ten minutes

# (name, bench flags). 8-byte keys and 256-byte values unless stated; puts go
# to random keys out of 100,000, reads to one key written beforehand.
FULL_WORKLOADS = [
    ("put 1 client", ["put", "--clients=1", "--conns=1"]),
    ("put 64 clients/16 conns", ["put", "--clients=64", "--conns=16"]),
    ("put 1000 clients/100 conns leader", ["put", "--clients=1000", "--conns=100"]),
    ("put 1000 clients/100 conns all",
     ["put", "--clients=1000", "--conns=100", "--target=all"]),
    ("get-l 1 client", ["get", "--clients=1", "--conns=1", "--consistency=l", "--key-space=one"]),
    ("get-l 100 clients",
     ["get", "--clients=100", "--conns=10", "--consistency=l", "--key-space=one"]),
    ("get-s 1 client", ["get", "--clients=1", "--conns=1", "--consistency=s", "--key-space=one"]),
    ("get-s 100 clients",
     ["get", "--clients=100", "--conns=10", "--consistency=s", "--key-space=one"]),
]
SMOKE_WORKLOADS = [
    ("put 64 clients/16 conns", ["put", "--clients=64", "--conns=16"]),
    ("get-l 100 clients",
     ["get", "--clients=100", "--conns=10", "--consistency=l", "--key-space=one"]),
]
COMMON_FLAGS = ["--key-size=8", "--val-size=256", "--keys=100000", "--timeout=10s", "-w", "json"]


# What log() lines start with; ab_raftd.py, which runs on these functions,
# sets its own.
LOG_PREFIX = "compare"


def log(msg):
    print(f"[{LOG_PREFIX} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Failure(Exception):
    pass


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (held open together while chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


def wait_until(what, predicate, timeout_s, poll_s=0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise Failure(f"timed out after {timeout_s}s waiting for {what}")


def proc_usage(pid):
    """Peak RSS (KiB) and CPU seconds of a live process, from /proc."""
    hwm_kb = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm_kb = int(line.split()[1])
    with open(f"/proc/{pid}/stat") as f:
        user, system = proc_stat.cpu_ticks(f.read())
    return hwm_kb, (user + system) / os.sysconf("SC_CLK_TCK")


_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # Runs in the child before exec: if this script is killed outright
    # (SIGKILL), the kernel still sends the server SIGTERM.
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Node:
    """One server process we started; stopped by its PID."""

    def __init__(self, name, argv, log_path, client_port):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.client_port = client_port
        self.proc = None
        self.usage = None  # (peak_rss_kb, cpu_s), taken just before stopping

    def start(self):
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise Failure(f"{self.name} (pid {self.proc.pid}) exited with {self.proc.returncode};"
                          f" log tail:\n{tail(self.log_path)}")

    def stop(self):
        if self.proc is None:
            return
        if self.alive():
            try:
                self.usage = proc_usage(self.proc.pid)
            except (OSError, ValueError):
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.proc.pid}) ignored SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log_file.close()
        self.proc = None


def tail(path, lines=15):
    try:
        with open(path, "rb") as f:
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Cluster:
    def __init__(self, system):
        self.system = system
        self.nodes = []

    def endpoints(self):
        return [f"{HOST}:{n.client_port}" for n in self.nodes]

    def check_alive(self):
        for n in self.nodes:
            n.check_alive()

    def stop(self):
        for n in self.nodes:
            n.stop()

    def cpu_s(self):
        """CPU seconds the cluster's running servers have used so far."""
        total = 0.0
        for n in self.nodes:
            if n.alive():
                try:
                    total += proc_usage(n.proc.pid)[1]
                except (OSError, ValueError):
                    pass  # exited just now; check_alive() reports it
        return total

    def usage(self):
        out = {}
        for n in self.nodes:
            if n.usage:
                out[n.name] = {"peak_rss_mb": round(n.usage[0] / 1024, 1),
                               "cpu_s": round(n.usage[1], 2)}
        return out


def ensure_etcd():
    if shutil.which("etcd") and shutil.which("etcdctl"):
        return
    log("installing etcd-server and etcd-client from Debian")
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(prefix + ["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(prefix + ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                             "etcd-server", "etcd-client"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    if not (shutil.which("etcd") and shutil.which("etcdctl")):
        raise Failure("etcd-server / etcd-client installed but etcd or etcdctl not on PATH")


def start_etcd(root, ports):
    cluster = Cluster("etcd")
    client_ports, peer_ports = ports[:3], ports[3:6]
    names = [f"etcd{i + 1}" for i in range(3)]
    initial = ",".join(f"{names[i]}=http://{HOST}:{peer_ports[i]}" for i in range(3))
    for i in range(3):
        data = os.path.join(root, "etcd", names[i])
        os.makedirs(data)
        argv = ["etcd", "--name", names[i], "--data-dir", data,
                "--listen-client-urls", f"http://{HOST}:{client_ports[i]}",
                "--advertise-client-urls", f"http://{HOST}:{client_ports[i]}",
                "--listen-peer-urls", f"http://{HOST}:{peer_ports[i]}",
                "--initial-advertise-peer-urls", f"http://{HOST}:{peer_ports[i]}",
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", "raftkv-compare", "--logger=zap",
                "--log-outputs", os.path.join(root, "etcd", f"{names[i]}.zap.log")]
        cluster.nodes.append(Node(names[i], argv, os.path.join(root, "etcd", f"{names[i]}.out"),
                                  client_ports[i]))
    for n in cluster.nodes:
        n.start()
    return cluster


def etcd_leader(cluster, timeout_s=30):
    """The client endpoint of etcd's leader, from `etcdctl endpoint status`."""
    found = {}

    def ready():
        cluster.check_alive()
        r = subprocess.run(["etcdctl", "--endpoints", ",".join(cluster.endpoints()),
                            "--command-timeout=2s", "endpoint", "status", "-w", "json"],
                           capture_output=True, text=True, env=dict(os.environ, ETCDCTL_API="3"))
        if r.returncode != 0:
            return False
        try:
            statuses = json.loads(r.stdout)
        except json.JSONDecodeError:
            return False
        if len(statuses) != 3:
            return False
        for s in statuses:
            st = s["Status"]
            if st.get("leader") and st["header"]["member_id"] == st["leader"]:
                found["leader"] = s["Endpoint"].replace("http://", "")
                return True
        return False

    wait_until("an etcd leader", ready, timeout_s, poll_s=0.3)
    return found["leader"]


def find_raftd(build_dir):
    return find_program(build_dir, "raftd")


def find_program(build_dir, name):
    for rel in (f"service/{name}", name):
        p = os.path.join(build_dir, rel)
        if os.access(p, os.X_OK):
            return p
    raise Failure(f"no {name} under {build_dir} (build the {name} target first)")


def raftkv_leader(cluster, raftctl, timeout_s=30):
    """The id of raftkv's leader once every node names it (`raftctl status`).
    A fresh cluster elects one only after an election timeout (a second or
    two), and until then a node answers writes with "no leader": a load
    spread over all nodes would measure that instead of the system."""
    found = {}

    def ready():
        cluster.check_alive()
        r = subprocess.run([raftctl, "--endpoints=" + ",".join(cluster.endpoints()),
                            "--timeout_ms=2000", "-w", "json", "status"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return False
        try:
            leaders = {s["status"].get("leader_id", "0") for s in json.loads(r.stdout)}
        except (json.JSONDecodeError, KeyError, TypeError):
            return False
        if len(leaders) != 1 or "0" in leaders:
            return False
        found["leader"] = leaders.pop()
        return True

    wait_until("a raftkv leader known to every node", ready, timeout_s, poll_s=0.2)
    return found["leader"]


def start_raftkv(root, raftd, ports, extra_args):
    cluster = Cluster("raftkv")
    client_ports, peer_ports = ports[:3], ports[3:6]
    initial = ",".join(f"{i + 1}={HOST}:{peer_ports[i]}/{HOST}:{client_ports[i]}"
                       for i in range(3))
    for i in range(3):
        data = os.path.join(root, "raftkv", f"node{i + 1}")
        os.makedirs(data)
        argv = [raftd, f"--id={i + 1}", f"--initial_cluster={initial}", f"--data_dir={data}",
                "--log_level=warn"] + extra_args
        cluster.nodes.append(Node(f"raftd{i + 1}", argv,
                                  os.path.join(root, "raftkv", f"node{i + 1}.log"),
                                  client_ports[i]))
    for n in cluster.nodes:
        n.start()
    return cluster


def wait_ports(cluster, timeout_s=30):
    def ready():
        cluster.check_alive()
        return all(port_open(n.client_port) for n in cluster.nodes)
    wait_until(f"{cluster.system}'s client ports", ready, timeout_s)


def run_bench(bench, system, endpoints, flags, duration_s, warmup_s, on_measure=None):
    """Runs the load generator and returns its JSON result. `on_measure`, if
    given, is called once the warm-up is over, when the measured part begins.
    That is timed from the bench's start, so the call comes early by the few
    milliseconds the bench takes to connect and find the leader."""
    api = "etcd" if system == "etcd" else "raftkv"
    argv = [bench] + flags[:1] + [f"--api={api}", "--endpoints=" + ",".join(endpoints)] + \
        flags[1:] + COMMON_FLAGS + [f"--duration={duration_s}s", f"--warmup={warmup_s}s"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if on_measure is not None:
            try:
                proc.wait(timeout=warmup_s)  # returns at once if the bench failed early
            except subprocess.TimeoutExpired:
                on_measure()
        stdout, stderr = proc.communicate(timeout=duration_s + warmup_s + 120)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = None
    if stdout.strip():
        try:
            result = json.loads(stdout.strip().splitlines()[-1])
        except json.JSONDecodeError:
            result = None
    if result is None:
        raise Failure(f"bench failed (exit {proc.returncode}): {' '.join(argv)}\n"
                      f"{stderr.strip()}")
    result["exit_code"] = proc.returncode
    # The load generator shares the machine's cores with the servers.
    result["bench_cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime -
                                  before.ru_stime, 2)
    return result


def synced_appends_us(directory, n, size, preallocate):
    """The time of each of `n` appends of `size` bytes to a new file in
    `directory`, each followed by fdatasync, in microseconds; the file is
    allocated up front when `preallocate`, and removed afterwards."""
    path = os.path.join(directory, "fdatasync.probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if preallocate:
            os.posix_fallocate(fd, 0, n * size)
            os.fsync(fd)
        block = b"x" * size
        times = []
        for _ in range(n):
            start = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            times.append((time.perf_counter() - start) * 1e6)
        return times
    finally:
        os.close(fd)
        os.unlink(path)


def fdatasync_us(directory, n=200):
    """Mean time of a 4 KiB append + fdatasync to a growing file (the probe
    every run of the script has reported since its first version)."""
    return sum(synced_appends_us(directory, n, 4096, preallocate=False)) / n


def append_sync_us(directory, n=40, size=300):
    """Median time of `n` appends of `size` bytes, each followed by fdatasync,
    into a file allocated up front: the shape of a small put's log write.
    Taken around every run: on a shared host the disk's latency drifts (it
    doubled and halved again within a minute on one VM), and a lone
    client's puts follow it."""
    times = sorted(synced_appends_us(directory, n, size, preallocate=True))
    return round(times[(n - 1) // 2], 1)


def cpu_jiffies(path="/proc/stat"):
    """(steal, total) CPU time of the whole machine so far, in jiffies, from the
    first line of /proc/stat; None where there is no such file."""
    try:
        with open(path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest time is already
    # counted in user and nice).
    values = [int(v) for v in fields[1:9]]
    values += [0] * (8 - len(values))
    return values[7], sum(values)


def steal_pct(before, after):
    """The share of the machine's CPU time between two cpu_jiffies() readings
    that the hypervisor gave to something else (steal), in percent."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round(100.0 * (after[0] - before[0]) / (after[1] - before[1]), 1)


def cpu_per_op_us(cpu_before_s, cpu_after_s, ops):
    """Server CPU time per completed call, in microseconds; None without calls."""
    if not ops or cpu_after_s < cpu_before_s:
        return None
    return round((cpu_after_s - cpu_before_s) / ops * 1e6, 1)


def core_share_pct(cpu_before_s, cpu_after_s, wall_s):
    """CPU time used over a wall-clock interval, in percent of one core."""
    if wall_s <= 0 or cpu_after_s < cpu_before_s:
        return None
    return round(100.0 * (cpu_after_s - cpu_before_s) / wall_s, 1)


def run_one(clusters, bench, system, targets, name, flags, duration, warmup, failures,
            probe_dir=None):
    """One bench run of one workload on one system; None (and a failure noted) if it failed.

    Besides the load generator's figures it records the CPU time the measured
    system's servers used per completed call, how busy the other system's
    idle servers were meanwhile (they share the cores), and, with `probe_dir`,
    the disk's small-append fdatasync latency just before and just after."""
    cluster = clusters[system]
    cluster.check_alive()
    target = "all" if "--target=all" in flags else "leader"
    # Each run starts with no dirty pages left by the run before (the other
    # system's, or this one's earlier workload): their writeback would compete
    # with this run's fsyncs. On a 2-core VM, 2-20 MB were dirty before a run;
    # with the sync, loaded puts ran 8-40% faster, for both systems (one run
    # with, two without).
    os.sync()
    disk_before = append_sync_us(probe_dir) if probe_dir else None
    jiffies = cpu_jiffies()
    marks = {}

    def measure_starts():
        marks["wall"] = time.monotonic()
        marks["cpu"] = {s: c.cpu_s() for s, c in clusters.items()}

    try:
        res = run_bench(bench, system, targets[system][target], flags, duration, warmup,
                        on_measure=measure_starts)
    except (Failure, subprocess.TimeoutExpired) as e:
        failures.append(f"{name} on {system}: {e}")
        log(f"FAILED {name} on {system}: {e}")
        return None
    if res["failed"] or res["exit_code"] != 0 or res["ok"] == 0:
        failures.append(f"{name} on {system}: {res['ok']} ok, {res['failed']} failed,"
                        f" exit {res['exit_code']}, errors {res['errors']}")
    # On a shared host the hypervisor may run other guests on this VM's
    # vCPUs; a run that lost a quarter of its CPU time that way measured the
    # host, not the system.
    steal = steal_pct(jiffies, cpu_jiffies())
    steal_text = "unknown" if steal is None else f"{steal}%"
    disk_us = None
    if disk_before is not None:
        disk_us = round((disk_before + append_sync_us(probe_dir)) / 2, 1)
    server_us = other_pct = None
    if marks:
        wall = time.monotonic() - marks["wall"]
        cpu = {s: c.cpu_s() for s, c in clusters.items()}
        server_us = cpu_per_op_us(marks["cpu"][system], cpu[system], res["ok"])
        others = [s for s in clusters if s != system]
        if others:
            other_pct = core_share_pct(sum(marks["cpu"][s] for s in others),
                                       sum(cpu[s] for s in others), wall)
    log(f"{name:36s} {system:6s} {res['throughput']:10.0f} ops/s  "
        f"p99 {res['latency_ms']['p99']:8.2f} ms  failed {res['failed']}  "
        f"bench cpu {res['bench_cpu_s']:.1f} s  steal {steal_text}  "
        f"servers {fmt(server_us, 0)} us cpu/op  other system {fmt(other_pct)}% of a core  "
        f"disk {fmt(disk_us, 0)} us")
    return {"throughput": res["throughput"], "p99_ms": res["latency_ms"]["p99"], "ok": res["ok"],
            "failed": res["failed"], "latency_ms": res["latency_ms"], "errors": res["errors"],
            "bench_cpu_s": res["bench_cpu_s"], "steal_pct": steal,
            "server_cpu_us_per_op": server_us, "other_system_cpu_pct": other_pct,
            "disk_sync_us": disk_us}


def rerun_fits(elapsed_s, worst_run_s, est_run_s, runs_left_here, later_workloads,
               runs_per_workload, budget_s=TIME_BUDGET_S):
    """Whether one more run of the current workload leaves every later workload
    room to start: a workload starts only if its runs, each at its worst
    (`worst_run_s`: warm-up, duration and the call timeout), fit in the
    budget. The extra run counts at its worst, the runs still planned at
    `est_run_s` (the longest run so far), and the later workloads' starts are
    checked in turn, the last one being the tightest."""
    t = elapsed_s + worst_run_s + runs_left_here * est_run_s
    for _ in range(later_workloads):
        if t + runs_per_workload * worst_run_s > budget_s:
            return False
        t += runs_per_workload * est_run_s
    return t <= budget_s


def run_without_steal(run, max_steal_pct, may_rerun, max_reruns=2, label=""):
    """Calls `run()` (one bench run: a result dict or None) and runs it again,
    at most `max_reruns` times and while `may_rerun()` allows (the time
    budget), as long as the hypervisor took more than `max_steal_pct` of the
    vCPUs during it: such a run measures the other guests on the host as much
    as the system, and both systems get the same treatment. Returns the last
    run, with the runs it replaced under "discarded_for_steal"."""
    discarded = []
    while True:
        res = run()
        steal = None if res is None else res.get("steal_pct")
        if (steal is None or steal <= max_steal_pct or len(discarded) == max_reruns
                or not may_rerun()):
            break
        discarded.append({"throughput": res["throughput"], "p99_ms": res["p99_ms"],
                          "steal_pct": steal})
        log(f"{label}: {steal}% of the vCPUs stolen, over --max-steal {max_steal_pct:g}%:"
            " running it again")
    if res is not None and discarded:
        res = dict(res, discarded_for_steal=discarded)
    return res


def summarize(runs):
    """A system's result for one workload: with several rounds, the run of median
    throughput (its latencies and counts), plus every round's throughput and p99,
    so that one lucky or unlucky run does not decide the table."""
    ranked = sorted(runs, key=lambda r: r["throughput"])
    out = dict(ranked[(len(ranked) - 1) // 2])
    if len(runs) > 1:
        out["rounds"] = [{"throughput": r["throughput"], "p99_ms": r["p99_ms"],
                          "steal_pct": r.get("steal_pct"),
                          "server_cpu_us_per_op": r.get("server_cpu_us_per_op"),
                          "other_system_cpu_pct": r.get("other_system_cpu_pct"),
                          "disk_sync_us": r.get("disk_sync_us")}
                         for r in runs]
    discarded = [d for r in runs for d in r.get("discarded_for_steal", [])]
    out.pop("discarded_for_steal", None)
    if discarded:
        out["discarded_for_steal"] = discarded
    return out


def ratio(a, b):
    return round(a / b, 2) if a and b else None


def fmt(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"


def runs_summary(rows, systems, field):
    """Median and highest `field` (a per-run figure such as "steal_pct") over
    every run in `rows`, and which run had the highest; None when no run has
    a figure."""
    seen = []
    for r in rows:
        for system in systems:
            res = r.get(system)
            if not res:
                continue
            for run in res.get("rounds", [res]):
                if run.get(field) is not None:
                    seen.append((run[field], f"{r['workload']} on {system}"))
    if not seen:
        return None
    values = sorted(v for v, _ in seen)
    top = max(seen)
    return {"median": values[(len(values) - 1) // 2], "max": top[0], "max_run": top[1]}


SINGLE_PUT = "put 1 client"


def single_put_vs_fsync(rows, systems, sync_us):
    """For each system, a lone client's mean put latency (from the run the
    table shows) in ms and as a multiple of the 4 KiB fdatasync probe: the
    issue's latency target is raftkv's within 3 such fsyncs. None where the
    workload, its latency or the probe is missing.

    The disk's latency drifts within a run (it can double and halve again
    within a minute), and a lone put follows it: where that run's own
    300-byte append + fdatasync probe was taken, the latency is also given
    as a multiple of it ("run_appends", with the probe as "run_disk_us"), so
    that each system's figure can be read against the disk it ran on."""
    row = next((r for r in rows if r["workload"] == SINGLE_PUT), None)
    if row is None or not sync_us:
        return None
    out = {}
    for system in systems:
        result = row.get(system) or {}
        avg_ms = (result.get("latency_ms") or {}).get("avg")
        if avg_ms is None:
            continue
        out[system] = {"avg_ms": avg_ms, "fsyncs": round(avg_ms * 1000 / sync_us, 2)}
        run_disk_us = result.get("disk_sync_us")
        if run_disk_us:
            out[system]["run_disk_us"] = run_disk_us
            out[system]["run_appends"] = round(avg_ms * 1000 / run_disk_us, 2)
    return out or None


def print_table(rows, systems, rounds=1):
    header = ["workload", "etcd ops/s", "raftkv ops/s", "ratio", "etcd p99 ms", "raftkv p99 ms",
              "ratio", "etcd cpu us/op", "raftkv cpu us/op"]
    lines = []
    for r in rows:
        e = r.get("etcd") or {}
        k = r.get("raftkv") or {}
        lines.append([r["workload"], fmt(e.get("throughput"), 0), fmt(k.get("throughput"), 0),
                      fmt(r.get("throughput_ratio"), 2), fmt(e.get("p99_ms"), 2),
                      fmt(k.get("p99_ms"), 2), fmt(r.get("p99_ratio"), 2),
                      fmt(e.get("server_cpu_us_per_op"), 0),
                      fmt(k.get("server_cpu_us_per_op"), 0)])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    out = []
    for row in [header] + lines:
        out.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths))))
        if row is header:
            out.append("  ".join("-" * w for w in widths))
    print("\n".join(out))
    print("(ratio: raftkv / etcd; throughput higher is better, p99 lower is better;"
          " cpu us/op: the three servers' CPU time per call, load generator not included)")
    if rounds > 1:
        print(f"(each system's run of median throughput out of {rounds}; the lower middle one"
              " when even; every round is in the JSON)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", required=True, help="raftkv build tree (raftkv-bench, raftd)")
    ap.add_argument("--bench", help="raftkv-bench (default: BUILD/bench/raftkv-bench)")
    ap.add_argument("--raftd", help="raftd (default: BUILD/service/raftd)")
    ap.add_argument("--raftd-arg", action="append", default=[],
                    help="extra raftd flag, e.g. --raftd-arg=--heartbeat_ms=50 (repeatable)")
    ap.add_argument("--bench-arg", action="append", default=[],
                    help="extra load-generator flag for every run of both systems, e.g. "
                         "--bench-arg=--coalesce-sends=false (repeatable)")
    ap.add_argument("--smoke", action="store_true", help="a short run for the test suite")
    ap.add_argument("--json", help="write the results here as JSON")
    ap.add_argument("--systems", default="etcd,raftkv", help="comma-separated: etcd, raftkv")
    ap.add_argument("--duration", type=float, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, help="warm-up seconds before each run")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of each workload per system, alternating; the table shows the"
                         " run of median throughput (default 1)")
    ap.add_argument("--max-steal", type=float, default=5.0,
                    help="a run during which the hypervisor took more than this percentage of"
                         " the vCPUs (steal) is run again, at most twice and within the time"
                         " budget, for either system (default 5; 100: never)")
    ap.add_argument("--workloads", help="comma-separated workload names to run (default all)")
    ap.add_argument("--data-root", help="parent of the temporary data directory")
    ap.add_argument("--keep-data", action="store_true", help="keep data and logs (debugging)")
    args = ap.parse_args()

    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in ("etcd", "raftkv"):
            ap.error(f"unknown system {s!r}")
    workloads = SMOKE_WORKLOADS if args.smoke else FULL_WORKLOADS
    if args.workloads:
        wanted = set(args.workloads.split(","))
        workloads = [w for w in FULL_WORKLOADS + SMOKE_WORKLOADS if w[0] in wanted]
        workloads = list(dict(workloads).items())
        if not workloads:
            ap.error("no workload matches --workloads")
    duration = args.duration or (1.0 if args.smoke else 12.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if args.smoke else 3.0)
    bench = args.bench or os.path.join(args.build_dir, "bench", "raftkv-bench")
    if not os.access(bench, os.X_OK):
        raise Failure(f"no raftkv-bench at {bench} (build the raftkv-bench target first)")
    raftd = raftctl = None
    if "raftkv" in systems:
        raftd = args.raftd or find_raftd(args.build_dir)
        if not os.access(raftd, os.X_OK):
            raise Failure(f"raftd {raftd} is not an executable")
        raftctl = find_program(args.build_dir, "raftctl")
    if "etcd" in systems:
        ensure_etcd()

    root = tempfile.mkdtemp(prefix="raftkv-compare-", dir=args.data_root)
    clusters = {}
    started = time.monotonic()

    def cleanup():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for c in clusters.values():
            c.stop()
        if args.keep_data:
            log(f"data and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    failures = []
    rows = []
    sync_us = None
    try:
        sync_us = fdatasync_us(root)
        log(f"data under {root}; fdatasync of 4 KiB takes {sync_us:.0f} us on average")
        ports = free_ports(12)  # all at once, so that no two are the same
        if "etcd" in systems:
            clusters["etcd"] = start_etcd(root, ports[:6])
        if "raftkv" in systems:
            clusters["raftkv"] = start_raftkv(root, raftd, ports[6:], args.raftd_arg)
        targets = {}
        if "etcd" in systems:
            wait_ports(clusters["etcd"])
            leader = etcd_leader(clusters["etcd"])
            # The etcd driver takes the first endpoint as the leader.
            others = [e for e in clusters["etcd"].endpoints() if e != leader]
            targets["etcd"] = {"leader": [leader], "all": [leader] + others}
            log(f"etcd {clusters['etcd'].endpoints()} up, leader {leader}")
        if "raftkv" in systems:
            wait_ports(clusters["raftkv"])
            leader = raftkv_leader(clusters["raftkv"], raftctl)
            # raftkv-bench finds the leader itself through Cluster/Status.
            eps = clusters["raftkv"].endpoints()
            targets["raftkv"] = {"leader": eps, "all": eps}
            log(f"raftkv {eps} up, leader node {leader}")

        # A bench run takes at most warm-up + duration + the call timeout.
        worst_run = warmup + duration + 10 + 5
        runs_per_workload = args.rounds * len(systems)
        longest_run = 0.0  # wall seconds of the longest run so far

        def may_rerun(workload_index, runs_left_here):
            return rerun_fits(time.monotonic() - started, worst_run, longest_run or worst_run,
                              runs_left_here, len(workloads) - 1 - workload_index,
                              runs_per_workload)

        def timed(run):
            def wrapper():
                nonlocal longest_run
                t0 = time.monotonic()
                res = run()
                longest_run = max(longest_run, time.monotonic() - t0)
                return res
            return wrapper

        for i, (name, flags) in enumerate(workloads):
            worst = runs_per_workload * worst_run
            if time.monotonic() - started + worst > TIME_BUDGET_S:
                failures.append(f"{name}: skipped, the run would exceed {TIME_BUDGET_S} s")
                continue
            runs_left_here = runs_per_workload
            row = {"workload": name, "flags": flags}
            runs = {system: [] for system in systems}
            for round_ in range(args.rounds):
                # Alternate which system goes first, across workloads and rounds.
                order = systems if (i + round_) % 2 == 0 else list(reversed(systems))
                for system in order:
                    runs_left_here -= 1
                    res = run_without_steal(
                        timed(lambda: run_one(clusters, bench, system, targets, name,
                                              flags + args.bench_arg, duration, warmup,
                                              failures, probe_dir=root)),
                        args.max_steal, lambda left=runs_left_here: may_rerun(i, left),
                        label=f"{name} on {system}")
                    if res is not None:
                        runs[system].append(res)
            for system in systems:
                if runs[system]:
                    row[system] = summarize(runs[system])
            e, k = row.get("etcd"), row.get("raftkv")
            if e and k:
                row["throughput_ratio"] = ratio(k["throughput"], e["throughput"])
                row["p99_ratio"] = ratio(k["p99_ms"], e["p99_ms"])
            rows.append(row)

        for c in clusters.values():
            c.check_alive()
    except Failure as e:
        failures.append(str(e))
    except KeyboardInterrupt as e:
        failures.append(f"interrupted ({e})")
    finally:
        cleanup()

    usage = {name: c.usage() for name, c in clusters.items()}
    print_table(rows, systems, args.rounds)
    for name, nodes in usage.items():
        if nodes:
            rss = sum(n["peak_rss_mb"] for n in nodes.values())
            cpu = sum(n["cpu_s"] for n in nodes.values())
            per = ", ".join(f"{k} {v['peak_rss_mb']} MB/{v['cpu_s']} s" for k, v in nodes.items())
            print(f"{name}: peak RSS {rss:.1f} MB total, CPU {cpu:.1f} s total ({per})")
    steal = runs_summary(rows, systems, "steal_pct")
    if steal:
        print(f"host CPU steal (time the hypervisor gave this VM's vCPUs to others) per run:"
              f" median {steal['median']}%, highest {steal['max']}% ({steal['max_run']});"
              " runs that lost more than a few percent measure the host as much as the systems")
    reruns = {s: sum(len(r[s].get("discarded_for_steal", [])) for r in rows if s in r)
              for s in systems}
    if any(reruns.values()):
        print(f"runs made again because more than {args.max_steal:g}% of the vCPUs were stolen"
              " during them: " + ", ".join(f"{s} {n}" for s, n in reruns.items()) +
              " (the runs they replaced are in the JSON)")
    idle = runs_summary(rows, systems, "other_system_cpu_pct")
    if idle:
        print(f"the other system's idle servers, while one system ran: median {idle['median']}%"
              f" of a core, highest {idle['max']}% (during {idle['max_run']})")
    disk = {s: runs_summary(rows, [s], "disk_sync_us") for s in systems}
    if any(disk.values()):
        print("disk, a 300-byte append + fdatasync timed just before and just after each run"
              " (the mean of the two probes' medians): " + "; ".join(
                  f"{s}'s runs median {fmt(d['median'], 0)} us, highest {fmt(d['max'], 0)} us"
                  for s, d in disk.items() if d) +
              " (every run's in the JSON)")
    single_put = single_put_vs_fsync(rows, systems, sync_us)
    if single_put:
        def around_run(v):
            if "run_appends" not in v:
                return ""
            return (f" ({v['run_appends']:.1f} times the 300-byte append + fdatasync probed"
                    f" around that run, {fmt(v['run_disk_us'], 0)} us)")
        print(f"{SINGLE_PUT}, mean latency: " + "; ".join(
            f"{s} {v['avg_ms']:.2f} ms, {v['fsyncs']:.1f} times the 4 KiB fdatasync probe"
            + around_run(v) for s, v in single_put.items()) +
            " (target: raftkv's within 3 times the 4 KiB probe)")
    elapsed = time.monotonic() - started
    print(f"fdatasync (4 KiB) {fmt(sync_us, 0)} us on average; the run took {elapsed:.0f} s")
    report = {"mode": "smoke" if args.smoke else "full", "duration_s": duration,
              "rounds": args.rounds, "max_steal_pct": args.max_steal,
              "reruns_for_steal": reruns,
              "warmup_s": warmup, "elapsed_s": round(elapsed, 1), "workloads": rows,
              "resources": usage, "failures": failures, "steal_pct": steal,
              "other_system_cpu_pct": idle, "disk_sync_us": disk,
              "fdatasync_us": None if sync_us is None else round(sync_us, 1),
              "single_put_vs_fsync": single_put}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    if failures:
        print("FAILURES:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as e:
        print(f"compare_etcd: {e}", file=sys.stderr)
        sys.exit(1)
