"""Queues: the configured named queues (one :class:`TaskScheduler` each) and their leases.

Picks the next task across queues for an executor, within each type's
concurrency limit and each owner's running quota, and keeps the timers that
wake executors when a delayed retry comes due.
"""

from __future__ import annotations

from collections.abc import Callable, Container

from ..errors import InvalidParametersError
from ..models import QueuedTask, QueueStats
from ..scheduler import Admit, LeaseRecord, SortKey, TaskScheduler
from ..settings import Settings


class Queues:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._by_name = {name: TaskScheduler(queue=name, max_queue_size=settings.max_queue_size,
                                             aging_interval_s=settings.aging_interval_s)
                         for name in settings.queues}

    def add(self, queue: str) -> TaskScheduler:
        """Serve a queue the settings no longer name (its stored tasks still run)."""
        sched = self._by_name[queue] = TaskScheduler(
            queue=queue, max_queue_size=self.settings.max_queue_size,
            aging_interval_s=self.settings.aging_interval_s)
        return sched

    def names(self) -> list[str]:
        return list(self._by_name)

    def check(self, queue: str, field: str = "queue") -> None:
        """Raises :class:`InvalidParametersError` for a queue the settings do not name."""
        if queue not in self._by_name:
            raise InvalidParametersError([{
                "field": field, "reason": f"unknown queue {queue!r}; the queues are: "
                + ", ".join(self._by_name)}])

    def __getitem__(self, queue: str) -> TaskScheduler:
        return self._by_name[queue]

    def get(self, queue: str) -> TaskScheduler | None:
        return self._by_name.get(queue)

    def push(self, item: QueuedTask, now: float) -> None:
        # admission control ran before the commit; a committed task is never refused
        self._by_name[item.queue].enqueue(item, now, force=True)

    def remove(self, queue: str, task_id: str) -> None:
        sched = self._by_name.get(queue)
        if sched is not None:
            sched.remove(task_id)

    def best(self, task_types: list[str], now: float, *,
             allowance: Callable[[str], int | None], admit: Admit,
             exclude: Container[str], skip: dict[int, int] | None = None,
             ) -> QueuedTask | None:
        """The next task to lease among ``task_types``, across queues (not taken).

        ``allowance(task_type)``: how many more tasks of the type may start (None: any);
        ``exclude`` and ``skip`` as in :meth:`TaskScheduler.peek_best`.
        """
        found: tuple[SortKey, QueuedTask] | None = None
        for sched in self._by_name.values():
            caps = {t: _cap(allowance(t), sched.running(t)) for t in task_types}
            candidate = sched.best(task_types, now, caps, admit=admit, exclude=exclude,
                                   skip=skip)
            if candidate is not None and (found is None or candidate[0] < found[0]):
                found = candidate
        return found[1] if found is not None else None

    def lease_of(self, queue: str, task_id: str) -> LeaseRecord | None:
        sched = self._by_name.get(queue)
        return sched.lease_of(task_id) if sched is not None else None

    def expired(self, now: float) -> list[tuple[str, LeaseRecord]]:
        return [(name, rec) for name, sched in self._by_name.items()
                for rec in sched.expired(now)]

    def running(self, task_type: str) -> int:
        return sum(s.running(task_type) for s in self._by_name.values())

    def stats(self, now: float) -> list[QueueStats]:
        return [s.stats(now) for s in self._by_name.values()]


def _cap(allowance: int | None, running_here: int) -> int | None:
    """A scheduler compares its cap with its own running count; the allowance is global."""
    return None if allowance is None else max(0, allowance) + running_here
