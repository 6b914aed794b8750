#!/usr/bin/python3
"""What each thread of some processes costs per call while a load runs.

    tests/bench/thread_costs.py --pids 1234,1235,1236 [--syscalls] -- \\
        build/bench/raftkv-bench put --clients=1 --duration=5s -w json

Runs the command (a load generator), reads every thread's CPU time and
context switches from /proc before and after it, and prints them per call:
the calls are the "ok" count of the command's JSON result (raftkv-bench -w
json), or --calls. With --syscalls, `perf record` also counts each thread's
system calls by name (x86-64 numbering) over the same window.

On a small VM a call's cost is mostly wake-ups and system calls, spread over
threads of several processes; this gives the per-thread picture that the
analyses in docs/benchmarks.md quote, for raftd or any other server. Give
the load generator no warm-up: the window is its whole run.
"""

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proc_stat  # noqa: E402

# x86-64 system call numbers of the calls a server's threads make most.
SYSCALL_NAMES = {
    0: "read", 1: "write", 3: "close", 7: "poll", 9: "mmap", 10: "mprotect", 11: "munmap",
    17: "pread64", 18: "pwrite64", 19: "readv", 20: "writev", 24: "sched_yield",
    28: "madvise", 35: "nanosleep", 44: "sendto", 45: "recvfrom", 46: "sendmsg",
    47: "recvmsg", 75: "fdatasync", 74: "fsync", 202: "futex", 228: "clock_gettime",
    230: "clock_nanosleep", 232: "epoll_wait", 233: "epoll_ctl", 257: "openat",
    281: "epoll_pwait", 290: "eventfd2", 291: "epoll_create1", 441: "epoll_pwait2",
}


def thread_stats(pid, proc="/proc"):
    """{tid: (name, user_ticks, system_ticks, voluntary_switches,
    involuntary_switches)} for every thread of `pid` that can still be read."""
    out = {}
    for tid, (stat, status) in proc_stat.thread_files(pid, ("stat", "status"), proc).items():
        user, system = proc_stat.cpu_ticks(stat)
        switches = {}
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                switches[key] = int(value)
        out[tid] = (proc_stat.name(stat), user, system,
                    switches.get("voluntary_ctxt_switches", 0),
                    switches.get("nonvoluntary_ctxt_switches", 0))
    return out


def costs(before, after, pid_of, calls, ticks_per_s):
    """Rows of (pid, tid, name, user_us, system_us, switches) per call (or in
    total when `calls` is 0) for threads that used CPU or switched at least
    once per hundred calls between the two thread_stats() snapshots, busiest
    first. A thread born in between counts from zero."""
    rows = []
    per = calls if calls else 1
    for tid, (name, user, system, vol, invol) in after.items():
        b = before.get(tid, (name, 0, 0, 0, 0))
        d_user, d_sys = user - b[1], system - b[2]
        d_switches = (vol - b[3]) + (invol - b[4])
        if d_user <= 0 and d_sys <= 0 and d_switches < per / 100:
            continue
        rows.append((pid_of[tid], tid, name, d_user / ticks_per_s * 1e6 / per,
                     d_sys / ticks_per_s * 1e6 / per, d_switches / per))
    rows.sort(key=lambda r: -(r[3] + r[4]))
    return rows


def per_process(rows):
    """{pid: (user_us, system_us, switches)} summed over `rows`."""
    out = {}
    for pid, _, _, user, system, switches in rows:
        u, s, w = out.get(pid, (0.0, 0.0, 0.0))
        out[pid] = (u + user, s + system, w + switches)
    return out


def count_syscalls(perf_script_lines):
    """{tid: Counter(name -> count)} from `perf script -F tid,trace` output of
    raw_syscalls:sys_enter, whose trace reads "NR 7 (...)"."""
    counts = collections.defaultdict(collections.Counter)
    for line in perf_script_lines:
        parts = line.split()
        if len(parts) < 3 or parts[1] != "NR":
            continue
        nr = int(parts[2])
        counts[int(parts[0])][SYSCALL_NAMES.get(nr, f"nr{nr}")] += 1
    return counts


def warmup_flag(command):
    """The value of a --warmup flag in `command` that is not zero, else None.
    The calls this tool divides by (the JSON's "ok") are those of the measured
    part only, while the CPU it reads covers the whole run: with a warm-up the
    figures per call would come out too high by the warm-up's share."""
    for i, arg in enumerate(command):
        if arg.startswith("--warmup="):
            value = arg.split("=", 1)[1]
        elif arg == "--warmup" and i + 1 < len(command):
            value = command[i + 1]
        else:
            continue
        if value.rstrip("mnuµs") not in ("0", "0.0", ""):
            return value
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pids", required=True, help="comma-separated process ids to watch")
    ap.add_argument("--calls", type=int, help="calls completed (default: the command's JSON ok)")
    ap.add_argument("--syscalls", action="store_true", help="count system calls with perf")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- the load to run")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the load to run after --")
    warmup = warmup_flag(command)
    if args.calls is None and warmup is not None:
        ap.error(f"the load has a warm-up ({warmup}) but its \"ok\" counts only"
                 " the calls after it: run it with no warm-up, or pass --calls")
    pids = [int(p) for p in args.pids.split(",") if p]
    for pid in pids:
        if not os.path.isdir(f"/proc/{pid}"):
            ap.error(f"no process {pid}")

    perf = perf_data = None
    if args.syscalls:
        # perf attaches within a fraction of a second of its start, so the
        # counts cover a load of a few seconds nearly whole.
        perf_data = tempfile.NamedTemporaryFile(suffix=".perf", delete=False).name
        try:
            perf = subprocess.Popen(["perf", "record", "-q", "-e", "raw_syscalls:sys_enter",
                                     "-p", ",".join(map(str, pids)), "-o", perf_data],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except FileNotFoundError:
            os.unlink(perf_data)
            ap.error("--syscalls needs perf (Debian's linux-perf)")
    try:
        pid_of, before = {}, {}
        for pid in pids:
            for tid, st in thread_stats(pid).items():
                before[tid], pid_of[tid] = st, pid
        load = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        after = {}
        for pid in pids:
            for tid, st in thread_stats(pid).items():
                after[tid], pid_of[tid] = st, pid
    finally:
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            # Debian's perf is a wrapper script, which the interrupt may end
            # before perf itself has finished writing: both are success.
            if perf.wait(timeout=30) not in (0, -signal.SIGINT):
                print(f"thread_costs: perf record exited with {perf.returncode}; no system"
                      " calls counted (is raw_syscalls:sys_enter readable here?)", file=sys.stderr)

    calls = args.calls
    if calls is None:
        try:
            calls = int(json.loads(load.stdout.strip().splitlines()[-1])["ok"])
        except (IndexError, ValueError, KeyError, TypeError):
            sys.exit("thread_costs: the command printed no JSON result with an \"ok\" count;"
                     " pass --calls or -w json")
    if load.returncode != 0:
        print(f"thread_costs: the load exited with {load.returncode}", file=sys.stderr)

    syscalls = {}
    if perf_data is not None:
        script = subprocess.run(["perf", "script", "-i", perf_data, "-F", "tid,trace"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        os.unlink(perf_data)
        syscalls = count_syscalls(script.stdout.splitlines())

    unit = "per call" if calls else "in total (no calls)"
    print(f"{calls} calls; CPU in us and context switches {unit}")
    print(f"{'pid':>7} {'tid':>7} {'thread':16} {'user':>8} {'system':>8} {'switches':>8}"
          + ("  system calls" if args.syscalls else ""))
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    rows = costs(before, after, pid_of, calls, ticks_per_s)
    for pid, tid, name, user, system, switches in rows:
        line = f"{pid:>7} {tid:>7} {name:16} {user:8.1f} {system:8.1f} {switches:8.2f}"
        if args.syscalls:
            top = syscalls.get(tid, collections.Counter()).most_common(8)
            line += "  " + " ".join(f"{n} {c / (calls or 1):.2f}" for n, c in top)
        print(line)
    for pid, (user, system, switches) in sorted(per_process(rows).items()):
        print(f"{pid:>7} {'all':>7} {'(process)':16} {user:8.1f} {system:8.1f} {switches:8.2f}")
    print(f"(/proc counts CPU time in clock ticks of {1000 / ticks_per_s:g} ms, so a thread's"
          " figure is close only over many calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
