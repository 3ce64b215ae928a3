"""TaskScheduler: per-priority FIFO queues with aging, delayed retries and leases.

Pure Python. Every method that depends on time takes ``now`` (seconds, any
monotonic origin), so tests drive the clock. One scheduler serves one named
queue; the TaskManager holds one per queue and rebuilds them from the store.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from dataclasses import dataclass, field

from .errors import QueueFullError
from .models import QueuedTask, QueueStats, TaskPriority

PRIORITIES = tuple(TaskPriority)


@dataclass
class LeaseRecord:
    task_id: str
    task_type: str
    token: int
    executor_id: str
    deadline: float
    priority: TaskPriority = TaskPriority.MEDIUM


@dataclass
class TaskScheduler:
    """The waiting and leased tasks of one named queue."""

    queue: str = "default"
    max_queue_size: int = 100_000
    aging_interval_s: float = 30.0
    _ready: dict[str, dict[TaskPriority, deque[QueuedTask]]] = field(default_factory=dict)
    _delayed: list[tuple[float, int, QueuedTask]] = field(default_factory=list)
    _waiting: dict[str, QueuedTask] = field(default_factory=dict)
    _leases: dict[str, LeaseRecord] = field(default_factory=dict)
    _running: Counter[str] = field(default_factory=Counter)
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
        if item.not_before > now:
            heapq.heappush(self._delayed, (item.not_before, next(self._seq), item))
        else:
            self._ready_deque(item.task_type, item.priority).append(item)

    def free_slots(self) -> int:
        return self.max_queue_size - len(self._waiting)

    def remove(self, task_id: str) -> bool:
        """Forget a waiting task (cancel, delete). Its deque entry is skipped later."""
        return self._waiting.pop(task_id, None) is not None

    def reprioritise(self, task_id: str, priority: TaskPriority, now: float) -> bool:
        item = self._waiting.pop(task_id, None)
        if item is None:
            return False
        self.enqueue(item.model_copy(update={"priority": priority}), now, force=True)
        return True

    def _ready_deque(self, task_type: str, priority: TaskPriority) -> deque[QueuedTask]:
        by_priority = self._ready.get(task_type)
        if by_priority is None:
            by_priority = self._ready[task_type] = {p: deque() for p in PRIORITIES}
        return by_priority[priority]

    def _promote_due(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            _, _, item = heapq.heappop(self._delayed)
            if self._waiting.get(item.task_id) is item:
                self._ready_deque(item.task_type, item.priority).append(item)

    def _head(self, dq: deque[QueuedTask]) -> QueuedTask | None:
        while dq:
            head = dq[0]
            if self._waiting.get(head.task_id) is head:
                return head
            dq.popleft()  # removed or re-enqueued since: drop the stale entry
        return None

    def effective_priority(self, item: QueuedTask, now: float) -> float:
        """Priority value minus one level per ``aging_interval_s`` waited (lower runs first)."""
        waited = max(0.0, now - max(item.enqueued_at, item.not_before))
        return float(item.priority) - waited / self.aging_interval_s

    def peek_best(self, task_types: list[str], now: float,
                  limits: dict[str, int | None] | None = None) -> QueuedTask | None:
        """The task ``pop_best`` would return, without taking it."""
        self._promote_due(now)
        best: QueuedTask | None = None
        best_key: tuple[float, int, float] | None = None
        for task_type in task_types:
            limit = (limits or {}).get(task_type)
            if limit is not None and self._running[task_type] >= limit:
                continue
            for dq in self._ready.get(task_type, {}).values():
                head = self._head(dq)
                if head is None:
                    continue
                key = (self.effective_priority(head, now), int(head.priority), head.enqueued_at)
                if best_key is None or key < best_key:
                    best, best_key = head, key
        return best

    def pop(self, item: QueuedTask) -> None:
        """Take ``item`` (as returned by ``peek_best``) out of the waiting set."""
        dq = self._ready[item.task_type][item.priority]
        if dq and dq[0] is item:
            dq.popleft()
        del self._waiting[item.task_id]

    # -- leases ----------------------------------------------------------------

    def grant(self, item: QueuedTask, token: int, executor_id: str, deadline: float) -> None:
        self._leases[item.task_id] = LeaseRecord(
            item.task_id, item.task_type, token, executor_id, deadline, item.priority
        )
        self._running[item.task_type] += 1

    def lease_of(self, task_id: str) -> LeaseRecord | None:
        return self._leases.get(task_id)

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
        self._promote_due(now)
        waiting: Counter[str] = Counter()
        delayed = 0
        oldest = now
        for item in self._waiting.values():
            if item.not_before > now:
                delayed += 1
                continue
            waiting[item.priority.name] += 1
            oldest = min(oldest, item.enqueued_at)
        return QueueStats(
            queue=self.queue,
            waiting={p.name: waiting.get(p.name, 0) for p in PRIORITIES},
            delayed=delayed,
            leased=len(self._leases),
            max_queue_size=self.max_queue_size,
            oldest_wait_s=max(0.0, now - oldest),
        )
