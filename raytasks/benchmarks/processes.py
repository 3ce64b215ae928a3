"""What the processes a benchmark started use, read from /proc: their tree, memory and CPU.

Both :mod:`.core` and :mod:`.footprint` measure this process and every process it
started (an embedded Ray's), so the readers live here, apart from either benchmark.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(p) for p in task.read_text().split()]
        except OSError:
            continue
    return out


def descendants(pid: int) -> list[int]:
    """Every process ``pid`` started, and the processes those started, at any depth."""
    found, todo = [], _children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo += _children(child)
    return found


def pss_mb(pids: list[int]) -> float:
    """The summed PSS of ``pids`` in MB (a process that ended meanwhile counts nothing)."""
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
                    break
        except OSError:
            continue
    return total_kb / 1024


def cpu_s_by_process(others: list[int], own_last: bool = False
                     ) -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by this process and ``others`` (the processes it started:
    an embedded Ray's), with each one's name; empty where there is no /proc. This
    process is read first, or with ``own_last`` last: a measurement reads it last before
    and first after, so its own reading of /proc stays out."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in [*others, os.getpid()] if own_last else [os.getpid(), *others]:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            name = Path(f"/proc/{pid}/cmdline").read_text().split("\0")[0]
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # utime and stime are fields 14, 15
        out[pid] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_ms_per_task(before: dict[int, tuple[str, float]],
                    after: dict[int, tuple[str, float]], tasks: int) -> dict[str, float]:
    """CPU milliseconds per task between two snapshots, by process kind: ``client`` (this
    process), an actor's class (``Manager``, ``PooledExecutor``, ...) or a program's name."""
    by: defaultdict[str, float] = defaultdict(float)
    for pid, (name, used) in after.items():
        start = before.get(pid, (name, 0.0))[1]  # started meanwhile: all of it counts
        kind = "client" if pid == os.getpid() else \
            name[len("ray::"):].split(".")[0] if name.startswith("ray::") else Path(name).name
        by[kind] += (used - start) * 1000 / tasks
    return dict(by)


def rss_mb(pid: int) -> float:
    """The resident memory (RSS) of ``pid`` in MB; 0.0 when it ended."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
