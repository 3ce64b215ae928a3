"""Why a task waits, and when it should start and finish: every statement read from the
manager's state (its queues, leases, quotas, dependencies and executors) at the moment it
is asked, and run times from :class:`~raytasks.manager.estimates.RunTimes`.

Start times are a simulation: the tasks of a type waiting ahead of one (in the order the
scheduler would lease them) are laid on its executors, each starting when the earliest
becomes free (see :mod:`~raytasks.manager.forecast`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from ..models import QueuedTask, TaskExplanation, TaskStatus
from . import forecast
from .parts import Parts
from .state import Entry


def explain(parts: Parts, entry: Entry | None, task_id: str, status: TaskStatus, now: float,
            limit: Callable[[str], int | None], progress: float | None = None,
            starting: int = 0) -> TaskExplanation:
    """The explanation of one task (``entry``: its memory, None once it finished).

    ``limit`` gives a type's concurrency limit; ``progress`` is a RUNNING task's latest
    fraction done; ``starting`` counts executors of its type still starting (from the
    engine, where the caller knows it).
    """
    out = TaskExplanation(task_id=task_id, status=status)
    if entry is None:
        out.causes, out.reasons = ["finished"], [f"it is {status.value}"]
        return out
    estimate = parts.run_times.estimate(entry.task_type, entry.kind, entry.work_units or 1)
    out.estimate_s, out.estimate_error = estimate.seconds, estimate.error
    out.deadline = _dt(entry.deadline)
    out.executors = {"idle": parts.arrivals.idle(entry.task_type),
                     "busy": parts.queues.running(entry.task_type), "starting": starting}
    if entry.status is TaskStatus.RUNNING:
        return _running(out, entry, now, estimate.seconds, progress)
    _pending(parts, out, entry, now, limit)
    starts = forecast.starts(parts, entry.task_type, now)
    start = starts.get(entry.task_id)
    if start is not None:
        out.predicted_start = _dt(start)
        out.predicted_finish = _dt(start + estimate.seconds)
    return out


def etas(parts: Parts, entries: list[Entry], now: float) -> dict[str, tuple[float, float]]:
    """Predicted (start, finish) of active tasks, where it can be told: running ones by
    their run-time estimate, queued ones by their place."""
    out: dict[str, tuple[float, float]] = {}
    starts: dict[str, dict[str, float]] = {}
    for entry in entries:
        if entry.status is TaskStatus.RUNNING:
            begun = entry.started_at or now
            out[entry.task_id] = (begun, forecast.free_at(parts, entry, now))
            continue
        of_type = starts.get(entry.task_type)
        if of_type is None:
            of_type = starts[entry.task_type] = forecast.recent_starts(
                parts, entry.task_type, now, entry.task_id)
        start = of_type.get(entry.task_id)
        if start is not None:
            out[entry.task_id] = (start, start + parts.estimate(entry))
    return out


def _running(out: TaskExplanation, entry: Entry, now: float, estimate_s: float,
             progress: float | None) -> TaskExplanation:
    begun = entry.started_at or now
    elapsed = max(1e-6, now - begun)
    out.causes = ["running"]
    finish = begun + estimate_s
    if progress:  # its own pace beats the type's history
        out.progress_rate = progress / elapsed
        finish = begun + elapsed / progress
    finish = max(finish, now)
    out.predicted_start, out.predicted_finish = _dt(begun), _dt(finish)
    out.reasons = [f"it has run {elapsed:.0f} s of an estimated {estimate_s:.0f} s"
                   + (f" and is {progress:.0%} done" if progress else "")]
    return out


def _pending(parts: Parts, out: TaskExplanation, entry: Entry, now: float,
             limit: Callable[[str], int | None]) -> None:
    """The causes that hold a PENDING task, in the order a researcher acts on them."""
    def held(cause: str, reason: str) -> None:
        out.causes.append(cause)
        out.reasons.append(reason)

    if not entry.queued:
        held("not_queued", "it is created but not queued (TaskQueueManager.submit_task "
                           "queues it)")
    waiting_for = parts.deps.waiting_for(entry.task_id)
    if waiting_for:
        out.dependencies = waiting_for
        held("dependencies", f"it waits for {len(waiting_for)} task(s) it depends on: "
                             + ", ".join(waiting_for[:5]))
    if entry.not_before and entry.not_before > now:
        out.not_before = _dt(entry.not_before)
        held("backoff", f"it is in a retry's backoff for {entry.not_before - now:.1f} s more")
    quota = parts.settings.quota_for(entry.owner)
    if quota is not None and entry.owner is not None:
        active = parts.active
        if quota.max_running is not None and active.running[entry.owner] >= quota.max_running:
            held("quota", f"its owner runs {quota.max_running} task(s) already, its quota "
                          f"max_running")
        per_type = quota.max_running_per_type.get(entry.task_type)
        if per_type is not None and \
                active.running_by_type[(entry.owner, entry.task_type)] >= per_type:
            held("quota", f"its owner runs {per_type} {entry.task_type} task(s) already, its "
                          "quota max_running_per_type")
        if quota.max_cpu_s_per_day is not None and \
                parts.cpu.used(entry.owner, now) >= quota.max_cpu_s_per_day:
            held("quota", f"its owner used its {quota.max_cpu_s_per_day:g} CPU seconds of "
                          "the day (max_cpu_s_per_day): it starts tomorrow (UTC)")
    cap = limit(entry.task_type)
    if cap is not None and parts.queues.running(entry.task_type) >= cap:
        held("type_limit", f"{cap} {entry.task_type} task(s) run already, the type's "
                           "max_concurrency")
    sched = parts.queues.get(entry.queue)
    item = sched.waiting(entry.task_id) if sched is not None else None
    if item is not None:
        ahead = _ahead(parts, item, now)
        out.ahead = {p: n for p, n in ahead.items() if n}
        out.place = sum(ahead.values()) + 1
        if out.place > 1:
            held("behind", f"{out.place - 1} {entry.task_type} task(s) go before it: "
                           + ", ".join(f"{n} {p}" for p, n in out.ahead.items()))
    idle, busy, starting = (out.executors[k] for k in ("idle", "busy", "starting"))
    if starting:
        held("executors_starting", f"{starting} executor(s) of its type are starting (or "
                                   "waiting for a node)")
    elif not idle and busy:
        held("executors_busy", f"every {entry.task_type} executor is busy ({busy})")
    elif not idle and not busy:
        held("no_executor", f"no {entry.task_type} executor runs yet: its pool starts one "
                            "(it may wait for the autoscaler to add a node)")


def _ahead(parts: Parts, item: QueuedTask, now: float) -> Counter[str]:
    """Tasks of ``item``'s type that would be leased before it, by priority name."""
    ahead: Counter[str] = Counter()
    for other in forecast.order(parts, item.task_type, now):
        if other.task_id == item.task_id:
            break
        if other.not_before <= now:
            ahead[other.priority.name] += 1
    return ahead


def _dt(at: float | None) -> datetime | None:
    return None if at is None else datetime.fromtimestamp(at, tz=UTC)
