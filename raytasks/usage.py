"""What one attempt uses: CPU seconds (its process's threads and the children it waited
for) and peak resident memory, measured in the executor's process."""

from __future__ import annotations

import os
import resource
import time
from typing import Any


class Usage:
    """What one attempt uses, from its start: CPU seconds of this process (every thread)
    and of the child processes it waited for, and the peak resident memory, sampled by
    the monitor (a child's own peak counts once it has ended)."""

    def __init__(self) -> None:
        self._cpu0 = _cpu_s()
        self._children_peak0 = _children_peak()
        self.peak = self.rss0 = _rss()

    def cpu_s(self) -> float:
        return max(0.0, _cpu_s() - self._cpu0)

    def sample(self) -> int:
        """The process's resident memory now (the peak follows it)."""
        rss = _rss()
        self.peak = max(self.peak, rss)
        return rss

    def measured(self) -> dict[str, Any]:
        """The report's usage fields."""
        self.sample()
        children = _children_peak()
        peak = max(self.peak, children) if children > self._children_peak0 else self.peak
        return {"cpu_s": round(self.cpu_s(), 6), "peak_rss_bytes": peak}


def _cpu_s() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _rss() -> int:
    """This process's resident memory now (bytes)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:  # not Linux: the process's peak so far
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _children_peak() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


_PAGE = os.sysconf("SC_PAGE_SIZE")
