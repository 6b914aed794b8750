"""Reading a process's or thread's /proc stat file, shared by the test and
benchmark scripts (compare_etcd.py, thread_costs.py, service/cluster_test.py)."""


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
