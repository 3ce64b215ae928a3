"""When the waiting tasks of a type should start: a simulation of the scheduler's next
leases, read from the manager's state.

The tasks of a type waiting (in the order the scheduler would lease them) are laid on
its executors, each starting when the earliest is free: an idle one now, a running
task's at its predicted end, a preempted task's at the end of its grace time at the
latest. :mod:`~raytasks.manager.explain` tells a researcher these times;
:mod:`~raytasks.manager.preempt` decides from them whether a deadline needs an executor
freed.
"""

from __future__ import annotations

import heapq

from ..models import QueuedTask, TaskStatus
from ..scheduler import SortKey
from .parts import Parts
from .state import Entry

#: Waiting tasks of one type laid out at most, per question (the rest: too far to tell).
SIMULATED = 10_000
#: How old a layout the read paths take (task pages, the WebSocket's ETAs): laying a long
#: queue out again for every page read made each ``GET /tasks`` cost O(queue)
READ_TTL_S = 1.0


def order(parts: Parts, task_type: str, now: float) -> list[QueuedTask]:
    """The waiting tasks of ``task_type`` in the order the scheduler leases them (by their
    sort key; among equals, as they came)."""
    waiting: list[tuple[SortKey, int, QueuedTask]] = []
    for name in parts.queues.names():
        sched = parts.queues[name]
        waiting += [(sched.key(item, now), len(waiting) + i, item)
                    for i, item in enumerate(sched.waiting_of(task_type))]
    waiting.sort(key=lambda t: t[:2])
    return [item for _key, _i, item in waiting]


def starts(parts: Parts, task_type: str, now: float) -> dict[str, float]:
    """When each waiting task of ``task_type`` should start."""
    free = [free_at(parts, entry, now) for entry in parts.active
            if entry.task_type == task_type and entry.status is TaskStatus.RUNNING]
    free += [now] * max(parts.arrivals.idle(task_type), 0 if free else 1)
    heapq.heapify(free)
    out = {}
    for item in order(parts, task_type, now)[:SIMULATED]:
        at = max(heapq.heappop(free), item.not_before, now)
        out[item.task_id] = at
        entry = parts.active.get(item.task_id)
        heapq.heappush(free, at + (parts.estimate(entry) if entry else item.estimate_s))
    return out


def recent_starts(parts: Parts, task_type: str, now: float,
                  wanted: str | None = None) -> dict[str, float]:
    """:func:`starts` as laid out within the last :data:`READ_TTL_S`, or anew when older,
    or when it lacks ``wanted`` (a task queued since)."""
    kept = parts.forecasts.get(task_type)
    if kept is not None and 0 <= now - kept[0] < READ_TTL_S \
            and (wanted is None or wanted in kept[1]):
        return kept[1]
    out = starts(parts, task_type, now)
    parts.forecasts[task_type] = (now, out)
    return out


def free_at(parts: Parts, entry: Entry, now: float) -> float:
    """When the executor running ``entry`` (a RUNNING task) should be free."""
    end = max(now, (entry.started_at or now) + parts.estimate(entry))
    if entry.preempt_at is not None:
        end = min(end, max(now, entry.preempt_at + parts.grace_s(entry.task_type)))
    return end
