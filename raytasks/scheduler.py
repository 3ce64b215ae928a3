"""TaskScheduler: per-priority FIFO lanes with aging, fair share between owners, leases.

Pure Python. Every method that depends on time takes ``now`` (seconds, any
origin), so tests drive the clock. One scheduler serves one named queue; the
TaskManager holds one per configured queue and rebuilds them from the store.

Waiting tasks sit in *lanes*, one per (task type, priority, owner), FIFO
inside a lane. A lane's head competes with an effective priority: its
priority minus one level per ``aging_interval_s`` waited, where the wait is
counted from the later of the head's enqueue time and the lane's last
service. So LOW work is never starved (its lane is not served, it keeps
aging), and one owner's backlog never shuts another owner out: a lane that
was just served starts waiting again, and the other owner's lane, waiting
longer, goes next.

Tasks with a deadline sit in lanes of their own, ordered by their latest start (the
deadline minus the predicted run time). Within an effective priority level, the head with
the least slack (latest start minus now) goes first; tasks without a deadline have
infinite slack, and among them the order is as before.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections import Counter, deque
from collections.abc import Callable, Container
from dataclasses import dataclass, field

from .errors import QueueFullError
from .models import QueuedTask, QueueStats, TaskPriority

PRIORITIES = tuple(TaskPriority)

#: Whether a task of (owner, task_type) may start now (quotas, concurrency limits).
Admit = Callable[[str | None, str], bool]
#: How a waiting task ranks (lowest first): see :meth:`TaskScheduler.key`.
SortKey = tuple[int, float, float, int, float]


@dataclass(slots=True)
class LeaseRecord:
    task_id: str
    task_type: str
    token: int
    executor_id: str
    deadline: float
    priority: TaskPriority = TaskPriority.MEDIUM
    owner: str | None = None


class _BySlack:
    """A lane's items in order of their latest start (then as they came)."""

    __slots__ = ("_items", "_keys")

    def __init__(self) -> None:
        self._items: list[QueuedTask] = []
        self._keys: list[tuple[float, float]] = []

    def append(self, item: QueuedTask) -> None:
        key = (item.latest_start, item.enqueued_at)
        at = bisect.bisect_right(self._keys, key)
        self._keys.insert(at, key)
        self._items.insert(at, item)

    def popleft(self) -> QueuedTask:
        del self._keys[0]
        return self._items.pop(0)

    def __getitem__(self, index: int) -> QueuedTask:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)


@dataclass(slots=True)
class _Lane:
    owner: str | None
    items: deque[QueuedTask] | _BySlack = field(default_factory=deque)
    served_at: float = float("-inf")


@dataclass
class TaskScheduler:
    """The waiting and leased tasks of one named queue."""

    queue: str = "default"
    max_queue_size: int = 100_000
    aging_interval_s: float = 30.0
    _lanes: dict[tuple[str, TaskPriority, str | None, bool], _Lane] = \
        field(default_factory=dict)
    _by_type: dict[str, list[_Lane]] = field(default_factory=dict)
    _delayed: list[tuple[float, int, QueuedTask]] = field(default_factory=list)
    _waiting: dict[str, QueuedTask] = field(default_factory=dict)
    _leases: dict[str, LeaseRecord] = field(default_factory=dict)
    _running: Counter[str] = field(default_factory=Counter)
    _counts: Counter[tuple[TaskPriority, str]] = field(default_factory=Counter)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    # -- waiting ---------------------------------------------------------------

    def __len__(self) -> int:
        """Tasks waiting (ready or delayed), not counting leased ones."""
        return len(self._waiting)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._waiting or task_id in self._leases

    def enqueue(self, item: QueuedTask, now: float, *, force: bool = False) -> None:
        """Add a task; ``force`` skips admission control (recovery after a restart).

        Raises:
            QueueFullError: the queue holds ``max_queue_size`` tasks already.
        """
        if item.task_id in self._waiting or item.task_id in self._leases:
            return
        if not force and len(self._waiting) >= self.max_queue_size:
            raise QueueFullError(self.queue, len(self._waiting), self.max_queue_size)
        self._waiting[item.task_id] = item
        self._counts[(item.priority, item.task_type)] += 1
        if item.not_before > now:
            heapq.heappush(self._delayed, (item.not_before, next(self._seq), item))
        else:
            self._lane(item).items.append(item)

    def waiting(self, task_id: str) -> QueuedTask | None:
        return self._waiting.get(task_id)

    def waiting_of(self, task_type: str) -> list[QueuedTask]:
        """Every task of ``task_type`` waiting here (ready or delayed), in no order."""
        return [item for item in self._waiting.values() if item.task_type == task_type]

    def remove(self, task_id: str) -> bool:
        """Forget a waiting task (cancel, delete). Its lane entry is skipped later."""
        item = self._waiting.pop(task_id, None)
        if item is None:
            return False
        self._counts[(item.priority, item.task_type)] -= 1
        return True

    def reprioritise(self, task_id: str, priority: TaskPriority, now: float) -> bool:
        item = self._waiting.get(task_id)
        if item is None or not self.remove(task_id):
            return False
        item = QueuedTask(item.task_id, item.task_type, priority, item.queue, item.enqueued_at,
                          item.not_before, item.attempt, item.owner, item.deadline,
                          item.estimate_s)
        self.enqueue(item, now, force=True)
        return True

    def _lane(self, item: QueuedTask) -> _Lane:
        key = (item.task_type, item.priority, item.owner, item.deadline is not None)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(
                item.owner, _BySlack() if item.deadline is not None else deque())
            self._by_type.setdefault(item.task_type, []).append(lane)
        return lane

    def _promote_due(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            _, _, item = heapq.heappop(self._delayed)
            if self._waiting.get(item.task_id) is item:
                self._lane(item).items.append(item)

    def _head(self, lane: _Lane, exclude: Container[str],
              skip: dict[int, int] | None = None) -> QueuedTask | None:
        """The first live item of ``lane`` not in ``exclude``; drops stale entries on the way.

        ``skip`` (per lane, by ``id``) counts the items at the lane's front that an earlier
        call with the same ``exclude`` found excluded or stale: the scan starts after them
        and records how far it got, so choosing many tasks in one round scans each once.
        """
        items = lane.items
        start = skip.get(id(lane), 0) if skip is not None else 0
        if not start:
            while items and self._waiting.get(items[0].task_id) is not items[0]:
                items.popleft()  # removed or re-enqueued since: drop the stale entry
        for i in range(start, len(items)):
            item = items[i]
            if self._waiting.get(item.task_id) is item and item.task_id not in exclude:
                if skip is not None:
                    skip[id(lane)] = i
                return item
        if skip is not None:
            skip[id(lane)] = len(items)
        return None

    def effective_priority(self, item: QueuedTask, now: float,
                           served_at: float = float("-inf")) -> float:
        """Priority value minus one level per ``aging_interval_s`` waited (lower runs first).

        The wait counts from the latest of the task's enqueue time, its ``not_before``
        and ``served_at`` (when its lane last had a task leased).
        """
        waited = max(0.0, now - max(item.enqueued_at, item.not_before, served_at))
        return float(item.priority) - waited / self.aging_interval_s

    def peek_best(self, task_types: list[str], now: float,
                  limits: dict[str, int | None] | None = None,
                  *, admit: Admit | None = None,
                  exclude: Container[str] = (),
                  skip: dict[int, int] | None = None) -> QueuedTask | None:
        """The task to lease next among ``task_types``, without taking it.

        ``limits`` caps RUNNING tasks per type in this queue; ``admit`` refuses owners
        or types at a quota; ``exclude`` skips tasks already chosen in this round, and
        ``skip`` (an empty dict per round, passed to every call with that ``exclude``)
        lets the calls of one round scan each lane once.
        """
        found = self.best(task_types, now, limits, admit=admit, exclude=exclude, skip=skip)
        return found[1] if found else None

    def key(self, item: QueuedTask, now: float, served_at: float = float("-inf")) -> SortKey:
        """What ``item`` competes with, lowest first: its effective priority level, its
        slack (infinite without a deadline), its effective priority, its priority, and
        when it was queued."""
        effective = self.effective_priority(item, now, served_at)
        return (math.ceil(effective - 1e-9), item.latest_start - now, effective,
                int(item.priority), item.enqueued_at)

    def best(self, task_types: list[str], now: float,
             limits: dict[str, int | None] | None = None, *, admit: Admit | None = None,
             exclude: Container[str] = (), skip: dict[int, int] | None = None,
             ) -> tuple[SortKey, QueuedTask] | None:
        """Like :meth:`peek_best`, with the winner's sort key (to compare across queues)."""
        self._promote_due(now)
        best: QueuedTask | None = None
        best_key: SortKey | None = None
        for task_type in task_types:
            limit = (limits or {}).get(task_type)
            if limit is not None and self._running[task_type] >= limit:
                continue
            for lane in self._by_type.get(task_type, ()):
                head = self._head(lane, exclude, skip)
                if head is None or (admit is not None and not admit(lane.owner, task_type)):
                    continue
                key = self.key(head, now, lane.served_at)
                if best_key is None or key < best_key:
                    best, best_key = head, key
        return (best_key, best) if best is not None and best_key is not None else None

    def pop(self, item: QueuedTask, now: float = float("-inf")) -> None:
        """Take ``item`` (as returned by ``peek_best``) out of the waiting set."""
        lane = self._lane(item)
        if lane.items and lane.items[0] is item:
            lane.items.popleft()
        lane.served_at = max(lane.served_at, now)
        del self._waiting[item.task_id]
        self._counts[(item.priority, item.task_type)] -= 1

    # -- leases ----------------------------------------------------------------

    def grant(self, item: QueuedTask, token: int, executor_id: str, deadline: float) -> None:
        self._leases[item.task_id] = LeaseRecord(
            item.task_id, item.task_type, token, executor_id, deadline, item.priority,
            item.owner)
        self._running[item.task_type] += 1

    def lease_of(self, task_id: str) -> LeaseRecord | None:
        return self._leases.get(task_id)

    def running(self, task_type: str) -> int:
        return self._running[task_type]

    def renew(self, task_id: str, token: int, deadline: float) -> bool:
        """Push a lease's deadline out; False when the token is not the current lease."""
        rec = self._leases.get(task_id)
        if rec is None or rec.token != token:
            return False
        rec.deadline = max(rec.deadline, deadline)
        return True

    def release(self, task_id: str, token: int | None = None) -> LeaseRecord | None:
        """End a lease (the task finished or went back to waiting)."""
        rec = self._leases.get(task_id)
        if rec is None or (token is not None and rec.token != token):
            return None
        del self._leases[task_id]
        self._running[rec.task_type] -= 1
        return rec

    def expired(self, now: float) -> list[LeaseRecord]:
        """Leases whose deadline passed; they stay until released."""
        return [rec for rec in self._leases.values() if rec.deadline < now]

    def leases(self) -> list[LeaseRecord]:
        return list(self._leases.values())

    # -- reporting -------------------------------------------------------------

    def stats(self, now: float) -> QueueStats:
        """Counts kept as tasks come and go: the cost follows the delayed tasks and the
        lanes, not the (possibly hundreds of thousands of) waiting ones."""
        self._promote_due(now)
        counts = Counter(self._counts)
        delayed = 0
        for _, _, item in self._delayed:
            if self._waiting.get(item.task_id) is item:
                delayed += 1
                counts[(item.priority, item.task_type)] -= 1
        waiting: Counter[str] = Counter()
        by_type: Counter[str] = Counter()
        for (priority, task_type), n in counts.items():
            if n > 0:
                waiting[priority.name] += n
                by_type[task_type] += n
        heads = (self._head(lane, ()) for lanes in self._by_type.values() for lane in lanes)
        oldest = min((h.enqueued_at for h in heads if h is not None), default=now)
        return QueueStats(
            queue=self.queue,
            waiting={p.name: waiting.get(p.name, 0) for p in PRIORITIES},
            delayed=delayed,
            leased=len(self._leases),
            max_queue_size=self.max_queue_size,
            oldest_wait_s=max(0.0, now - oldest),
            waiting_by_type=dict(by_type),
            leased_by_type={t: n for t, n in self._running.items() if n > 0},
        )
