"""What the TaskManager keeps in memory of its PENDING and RUNNING tasks.

Memory follows the store: an :class:`Entry` changes only after the change it
mirrors was committed. :class:`ActiveTasks` also keeps per-owner counts, so
quotas are checked without a query.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from ..models import QueuedTask, TaskPriority, TaskStatus
from ..store.base import ActiveRow, cpu_day


@dataclass(slots=True)
class Entry:
    """One PENDING or RUNNING task."""

    task_id: str
    task_type: str
    status: TaskStatus
    priority: TaskPriority
    queue: str
    attempt: int
    max_retries: int
    timeout_s: float | None
    parameters: str  # JSON text: small, and decoded only by the executor
    owner: str | None
    queued: bool
    token: int
    created_at: float
    enqueued_at: float | None = None
    not_before: float | None = None
    cancel_requested: bool = False
    max_cpu_s: float | None = None
    deadline: float | None = None
    work_units: int | None = None
    started_at: float | None = None  # of the attempt running now
    preemptions: int = 0  # attempts preempted: they do not count against max_retries
    cached: bool = False  # it takes cached results (its handler may reuse parts of them)
    estimate_s: float = 0.0  # its predicted run time (from RunTimes, when last queued)
    estimate_samples: int = 0  # the finished runs it was learned from (0: a guess)
    estimate_learned: int = -1  # RunTimes.learned when it was predicted
    #: the run time predicted for the attempt running now, when it started (None: a guess)
    predicted_run_s: float | None = None
    preempt_at: float | None = None  # when the scheduler preempted the attempt running now
    #: why it was preempted: "deadline" (for a task's deadline) or "drain" (its node is
    #: being drained); and the grace time it was given (None: its type's)
    preempt_cause: str | None = None
    preempt_grace_s: float | None = None

    @classmethod
    def from_row(cls, row: ActiveRow) -> Entry:
        return cls(task_id=row.id, task_type=row.task_type, status=row.status,
                   priority=TaskPriority(row.priority), queue=row.queue, attempt=row.attempt,
                   max_retries=row.max_retries, timeout_s=row.timeout_s,
                   parameters=row.parameters, owner=row.owner, queued=row.queued,
                   token=row.lease_token, created_at=row.created_at,
                   enqueued_at=row.enqueued_at, not_before=row.not_before,
                   cancel_requested=row.cancel_requested, max_cpu_s=row.max_cpu_s,
                   deadline=row.deadline, work_units=row.work_units,
                   started_at=row.started_at, preemptions=row.preemptions,
                   cached=row.cached)

    @property
    def kind(self) -> str | None:
        """``parameters["kind"]`` (the built-in families' sub-type), if the task has one."""
        return kind_of(self.parameters)

    def queued_item(self) -> QueuedTask:
        """What the scheduler holds while this task waits."""
        return QueuedTask(task_id=self.task_id, task_type=self.task_type,
                          priority=self.priority, queue=self.queue,
                          enqueued_at=self.enqueued_at or self.created_at,
                          not_before=self.not_before or 0.0, attempt=self.attempt,
                          owner=self.owner, deadline=self.deadline,
                          estimate_s=self.estimate_s)


def kind_of(parameters: str) -> str | None:
    """The ``kind`` of parameters given as JSON text (decoded only when it has one)."""
    if '"kind"' not in parameters:
        return None
    kind = json.loads(parameters).get("kind")
    return kind if isinstance(kind, str) else None


class ActiveTasks:
    """PENDING and RUNNING tasks by id, with counts per owner for the quotas and per queue
    for its room."""

    def __init__(self) -> None:
        self._by_id: dict[str, Entry] = {}
        self.pending: Counter[str | None] = Counter()
        #: queued PENDING tasks per queue: ready, in a retry's backoff, or waiting for
        #: their dependencies (each takes room in its queue)
        self.waiting: Counter[str] = Counter()
        self.running: Counter[str | None] = Counter()
        self.running_by_type: Counter[tuple[str | None, str]] = Counter()

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._by_id.values())

    def get(self, task_id: str) -> Entry | None:
        return self._by_id.get(task_id)

    def add(self, entry: Entry) -> None:
        self._by_id[entry.task_id] = entry
        self._count(entry, +1)

    def remove(self, task_id: str) -> Entry | None:
        entry = self._by_id.pop(task_id, None)
        if entry is not None:
            self._count(entry, -1)
        return entry

    def set_queued(self, entry: Entry) -> None:
        """A created task was queued, keeping the counts in step."""
        self._count(entry, -1)
        entry.queued = True
        self._count(entry, +1)

    def set_status(self, entry: Entry, status: TaskStatus) -> None:
        """Change a task's status, keeping the counts in step."""
        self._count(entry, -1)
        entry.status = status
        self._count(entry, +1)

    def _count(self, entry: Entry, delta: int) -> None:
        if entry.status is TaskStatus.RUNNING:
            self.running[entry.owner] += delta
            self.running_by_type[(entry.owner, entry.task_type)] += delta
        else:
            self.pending[entry.owner] += delta
            if entry.queued:
                self.waiting[entry.queue] += delta


class Daily:
    """A total per owner for today (UTC): the CPU seconds its attempts used (what
    ``max_cpu_s_per_day`` is held against at the lease) or how often they were preempted
    (``max_preempted_per_day``). Loaded from the store at start, then kept in step with
    every report the manager accepts."""

    def __init__(self, day: str = "", by_owner: dict[str, float] | None = None) -> None:
        self.day = day
        self._by_owner: dict[str, float] = dict(by_owner or {})

    def add(self, owner: str | None, amount: float | None, now: float) -> None:
        self._roll(now)
        if amount:
            key = owner or ""
            self._by_owner[key] = self._by_owner.get(key, 0.0) + amount

    def used(self, owner: str | None, now: float) -> float:
        self._roll(now)
        return self._by_owner.get(owner or "", 0.0)

    def _roll(self, now: float) -> None:
        day = cpu_day(now)
        if day != self.day:
            self.day, self._by_owner = day, {}


class FinishedCounts:
    """Finished tasks by (owner, status): counted once from the store at start, then kept
    in step with every change, so stats and list totals never scan the tasks table."""

    def __init__(self, seed: dict[tuple[str | None, str], int] | None = None) -> None:
        self._n: Counter[tuple[str | None, str]] = Counter(seed or {})

    def add(self, owner: str | None, status: TaskStatus, n: int = 1) -> None:
        key = (owner, status.value)
        self._n[key] += n
        if self._n[key] <= 0:
            del self._n[key]

    def by_status(self, owners: set[str | None] | None = None) -> Counter[str]:
        """Counts by status, of every owner or of ``owners``."""
        out: Counter[str] = Counter()
        for (owner, status), n in self._n.items():
            if owners is None or owner in owners:
                out[status] += n
        return out
