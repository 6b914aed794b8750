"""Reading a process's or thread's /proc stat file, shared by the test and
benchmark scripts (compare_etcd.py, thread_costs.py, service/cluster_test.py,
deploy/local_cluster_test.py)."""

import os


def thread_files(pid, names=("stat",), proc="/proc"):
    """{tid: [text of each of `names`]} from /proc/<pid>/task/<tid>/ for every
    thread of `pid` whose files can all still be read: a thread that ends
    meanwhile is left out, and a process that is gone has none."""
    out = {}
    task_dir = os.path.join(proc, str(pid), "task")
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return out
    for tid in tids:
        try:
            texts = []
            for n in names:
                with open(os.path.join(task_dir, tid, n)) as f:
                    texts.append(f.read())
        except OSError:
            continue
        out[int(tid)] = texts
    return out


def cpu_ticks(stat):
    """(user, system) CPU time in clock ticks from the text of a
    /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat file. The command name,
    in parentheses, may itself hold spaces and parentheses, so the fields are
    counted from the last ')': utime and stime are fields 14 and 15 of the
    line, the 12th and 13th after the name."""
    rest = stat[stat.rindex(")") + 2:].split()
    return int(rest[11]), int(rest[12])


def name(stat):
    """The command name from the text of a stat file."""
    return stat[stat.index("(") + 1:stat.rindex(")")]


def state(stat):
    """The one-letter scheduling state (R, S, D, T for stopped, ...) from the
    text of a stat file: the first field after the name."""
    return stat[stat.rindex(")") + 2]
