"""Out of memory: how an attempt that eats its node's memory ends, with its peak.

Two things end such an attempt, and both end it FAILED with reason ``out_of_memory``
and the attempt's peak resident memory (not as a generic ``lost``):

- **raytasks' own guard**, in the executor's monitor (it samples the attempt's memory
  every tick, as it does its CPU): a type's ceiling (``max_memory_mb``) is passed, or
  the node's memory crosses the guard line, ``memory_guard_margin_mb`` below the line
  where Ray's memory monitor starts killing (``RAY_memory_usage_threshold``), and
  this attempt alone grew by more than the node is over the guard line. The attempt is
  reported and its process replaced, as past a CPU limit: the memory is freed before
  Ray's monitor picks a victim.
- **Ray's memory monitor** killed the executor's process anyway (several attempts grew
  at once, or the guard is off). The executor keeps an :class:`AttemptRecord` of the
  attempt it runs (lease, peak so far) in a file of its node's Ray session; Ray
  restarts the executor, and the new process finds the record, asks Ray why its
  predecessor died and, when Ray says it killed it for memory, reports the attempt
  under its own lease. A restart on another node finds no record: the lease expires
  and the task is retried or fails as ``lost``.

Whether an out-of-memory attempt is retried is the type's ``retry_oom`` (default no:
the same parameters allocate the same memory again).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .messages import Report
from .models import TaskErrorInfo

MIB = 1024 * 1024

#: Ray's memory monitor's default line, a fraction of the node's memory
RAY_DEFAULT_THRESHOLD = 0.95


@dataclass(frozen=True)
class NodeMemory:
    """The node's memory as Ray's monitor counts it: total, and used (total − available)."""

    total: int
    used: int

    @classmethod
    def read(cls, meminfo: str = "/proc/meminfo") -> NodeMemory | None:
        """Now, from ``/proc/meminfo``; None where it cannot be read (not Linux)."""
        try:
            with open(meminfo, encoding="ascii") as f:
                fields = {k: int(v.split()[0]) * 1024 for k, v in
                          (line.split(":", 1) for line in f if ":" in line)}
            return cls(fields["MemTotal"], fields["MemTotal"] - fields["MemAvailable"])
        except (OSError, KeyError, ValueError):
            return None


def ray_kill_line(total: int, env: dict[str, str] | os._Environ[str] = os.environ) -> int:
    """The used bytes past which Ray's memory monitor kills workers, read as Ray reads it
    (``RAY_memory_usage_threshold``, ``RAY_min_memory_free_bytes``) from the environment
    Ray started this worker with."""
    try:
        fraction = float(env.get("RAY_memory_usage_threshold", RAY_DEFAULT_THRESHOLD))
    except ValueError:
        fraction = RAY_DEFAULT_THRESHOLD
    line = int(total * fraction)
    try:
        min_free = int(env.get("RAY_min_memory_free_bytes", "-1"))
    except ValueError:
        min_free = -1
    return max(line, total - min_free) if min_free > 0 else line


def guard_reason(rss: int, rss_at_start: int, ceiling_mb: float | None, margin_mb: float | None,
                 node: NodeMemory | None) -> str | None:
    """Why raytasks' guard stops an attempt now (None: it runs on).

    Args:
        rss: the attempt's process's resident memory now.
        rss_at_start: the same when the attempt started (its growth is the attempt's).
        ceiling_mb: the type's ``max_memory_mb``.
        margin_mb: ``memory_guard_margin_mb``; None turns the node guard off.
        node: the node's memory now.
    """
    if ceiling_mb is not None and rss > ceiling_mb * MIB:
        return f"passed its type's memory ceiling of {ceiling_mb:g} MiB (max_memory_mb)"
    if margin_mb is None or node is None:
        return None
    guard_line = ray_kill_line(node.total) - int(margin_mb * MIB)
    over = node.used - guard_line
    if over > 0 and rss - rss_at_start > over:
        return (f"the node's memory reached {node.used / MIB:,.0f} of {node.total / MIB:,.0f} "
                f"MiB, {margin_mb:g} MiB short of where Ray's memory monitor kills workers, "
                "and this attempt grew the most")
    return None


def oom_error(peak_bytes: int, why: str) -> TaskErrorInfo:
    """The stored error of an attempt ended for memory: reason, peak, what to do."""
    return TaskErrorInfo(
        type="OutOfMemoryError", reason="out_of_memory",
        message=f"out of memory: peak {peak_bytes / MIB:,.0f} MiB; {why}. Give the type "
                "more memory (max_memory_mb, a node with more memory, fewer executors per "
                "node) or make the task use less")


@dataclass(frozen=True)
class AttemptRecord:
    """What an executor's process runs now, kept in a file so that the process Ray starts
    in its place can report the attempt if Ray killed this one for memory."""

    pid: int
    task_id: str
    token: int
    peak_rss_bytes: int
    cpu_s: float
    run_s: float

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{self.pid}.tmp")
        tmp.write_text(json.dumps(asdict(self)), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> AttemptRecord | None:
        """The record at ``path``; None if there is none or it cannot be read."""
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    @staticmethod
    def clear(path: Path) -> None:
        path.unlink(missing_ok=True)


#: Why Ray killed a process, by its pid: (Ray's words, the bytes it held at death) when
#: Ray's memory monitor killed it, else None (``raytasks.runtime`` asks Ray's GCS).
DeathCause = Callable[[int], "tuple[str, int] | None"]


class MemoryWatch:
    """One executor's memory duties: its guard, and the record of the attempt it runs.

    The monitor thread calls :meth:`check` every tick; the work thread :meth:`begin`
    and :meth:`end` around each attempt. ``record`` is where the record is kept (None:
    nowhere, and a process Ray kills for memory is found out only by its lease).
    """

    def __init__(self, ceiling_mb: float | None, margin_mb: float | None,
                 record: Path | None) -> None:
        self.ceiling_mb, self.margin_mb, self.record = ceiling_mb, margin_mb, record
        self._lock = threading.Lock()
        self._current: tuple[str, int] | None = None
        self._written = 0  # the peak last written to the record

    def begin(self, task_id: str, token: int) -> None:
        with self._lock:
            self._current, self._written = (task_id, token), 0

    def end(self) -> None:
        with self._lock:
            self._current = None
            if self.record is not None:
                AttemptRecord.clear(self.record)

    def check(self, task_id: str, token: int, rss: int, rss0: int, peak: int,
              cpu_s: float, run_s: float) -> str | None:
        """Keep the record (when the peak grew by a 16th since it was written) and say
        why the guard stops the attempt now, if it does."""
        with self._lock:
            if self.record is not None and self._current == (task_id, token) \
                    and peak > self._written + self._written // 16:
                self._written = peak
                with contextlib.suppress(OSError):  # a full disk: the guard still works
                    AttemptRecord(os.getpid(), task_id, token, peak, round(cpu_s, 6),
                                  round(run_s, 6)).save(self.record)
        return guard_reason(rss, rss0, self.ceiling_mb, self.margin_mb,
                            NodeMemory.read() if self.margin_mb is not None else None)

    def recover(self, death_cause: DeathCause | None) -> Report | None:
        """The report of the attempt a previous process of this executor ran when Ray's
        memory monitor killed it; None when there was none, or it died otherwise (its
        lease then runs out, as for any death)."""
        if self.record is None:
            return None
        found = AttemptRecord.load(self.record)
        if found is None or found.pid == os.getpid():
            return None
        AttemptRecord.clear(self.record)
        cause = death_cause(found.pid) if death_cause is not None else None
        if cause is None:
            return None
        detail, at_death = cause
        peak = max(found.peak_rss_bytes, at_death)
        why = "Ray's memory monitor killed its process (" + detail.split("\n")[0][:300] + ")"
        return Report(found.task_id, found.token, "failed", error=oom_error(peak, why),
                      cpu_s=found.cpu_s, peak_rss_bytes=peak, run_s=found.run_s)
