"""Preemption: which running tasks the scheduler stops so that a task meets its deadline.

Priority is otherwise decided only at the lease, so once LOW work holds every executor
of a type, HIGH work waits for the longest of it to end. Here, as Slurm's preemption
with a grace time, or Kubernetes' PriorityClass preemption, a waiting task with a
deadline that the executors freeing up in time cannot meet (by the
:mod:`~raytasks.manager.forecast`) takes the executor of a running task of its type:

- only of a type marked preemptible, and only of *lower* priority than its own, never
  HIGH;
- the victim with the most slack first (no deadline is infinite slack), then the lowest
  priority, then the one that started last (the least work lost);
- never one that would end within the grace time anyway, one preempted
  ``max_preemptions_per_task`` times already (no task starves), or one whose owner's
  ``max_preempted_per_day`` is spent.

A victim is asked to stop (its executor is told at once, and its heartbeats repeat it);
it has the type's grace time to save a checkpoint, and is forced after it. It goes back
to PENDING under a new attempt that resumes from the checkpoint, without spending a retry
(:mod:`~raytasks.manager.outcomes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..models import TaskPriority, TaskStatus
from . import forecast
from .parts import Parts
from .state import Entry

#: Most attempts preempted in one decision (the next tick decides again).
MOST_PER_TICK = 32


@dataclass(frozen=True, slots=True)
class Preemption:
    """A running attempt to stop, for ``for_task``'s deadline."""

    victim: Entry
    for_task: str
    grace_s: float


def choose(parts: Parts, now: float) -> list[Preemption]:
    """The attempts to preempt now (marked preempted in memory: ``preempt_at``)."""
    if not parts.settings.preemption:
        return []
    late_types = {e.task_type for e in parts.active
                  if e.deadline is not None and e.status is TaskStatus.PENDING and e.queued}
    out: list[Preemption] = []
    for task_type in sorted(late_types):
        if not parts.preemptible(task_type):
            continue
        while len(out) < MOST_PER_TICK:
            found = next(((late, victim) for late in _late(parts, task_type, now)
                          if (victim := _victim(parts, task_type, late, now)) is not None),
                         None)
            if found is None:
                break
            late, victim = found
            victim.preempt_at, victim.preempt_cause = now, "deadline"
            out.append(Preemption(victim, late.task_id, parts.grace_s(task_type)))
    return out


def _late(parts: Parts, task_type: str, now: float) -> list[Entry]:
    """The waiting tasks of ``task_type`` (in lease order) predicted to miss their
    deadlines that an executor freed now would start sooner (they would start after a
    preempted attempt's grace time), and whose owners may start them."""
    starts = forecast.starts(parts, task_type, now)
    soonest = now + parts.grace_s(task_type)
    out = []
    for item in forecast.order(parts, task_type, now):
        start = starts.get(item.task_id)
        entry = parts.active.get(item.task_id)
        if item.deadline is None or start is None or entry is None or start <= soonest \
                or start + parts.estimate(entry) <= item.deadline:
            continue
        if _may_start(parts, entry):
            out.append(entry)
    return out


def _may_start(parts: Parts, entry: Entry) -> bool:
    """Whether the owner's running quotas let ``entry`` start (else an executor freed for
    it would run something else)."""
    quota = parts.settings.quota_for(entry.owner)
    if quota is None:
        return True
    active = parts.active
    if quota.max_running is not None and active.running[entry.owner] >= quota.max_running:
        return False
    per_type = quota.max_running_per_type.get(entry.task_type)
    return per_type is None or active.running_by_type[(entry.owner, entry.task_type)] \
        < per_type


def _victim(parts: Parts, task_type: str, late: Entry, now: float) -> Entry | None:
    """The running task of ``task_type`` to preempt for ``late``, if any may be."""
    settings = parts.settings
    grace = parts.grace_s(task_type)
    best: tuple[float, int, float] | None = None
    chosen = None
    asked = _asked_today(parts)
    for entry in parts.active:
        if entry.task_type != task_type or entry.status is not TaskStatus.RUNNING \
                or entry.preempt_at is not None or entry.cancel_requested:
            continue
        if entry.priority is TaskPriority.HIGH or entry.priority <= late.priority:
            continue  # only lower priority than the task waiting, never HIGH
        if entry.preemptions >= settings.max_preemptions_per_task:
            continue
        quota = settings.quota_for(entry.owner)
        if quota is not None and quota.max_preempted_per_day is not None and \
                parts.preempted.used(entry.owner, now) + asked.get(entry.owner, 0) \
                >= quota.max_preempted_per_day:
            continue
        end = (entry.started_at or now) + parts.estimate(entry)
        if end <= now + grace:
            continue  # it ends within the grace time anyway
        slack = entry.deadline - end if entry.deadline is not None else math.inf
        key = (slack, int(entry.priority), entry.started_at or now)
        if best is None or key > best:
            best, chosen = key, entry
    return chosen


def _asked_today(parts: Parts) -> dict[str | None, int]:
    """Attempts preempted whose report has not landed yet, by owner (the budget counts
    them already)."""
    out: dict[str | None, int] = {}
    for entry in parts.active:
        if entry.preempt_at is not None and entry.status is TaskStatus.RUNNING:
            out[entry.owner] = out.get(entry.owner, 0) + 1
    return out
