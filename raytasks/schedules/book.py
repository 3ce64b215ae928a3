"""Which schedules are due, and which runs they make: pure, with ``now`` passed in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .models import Schedule
from .rules import fires_between, next_fire, next_ready_by, zone

#: A run found this late is still the current one under ``catch_up="skip"``.
GRACE_S = 60.0
#: ``catch_up="all"`` makes at most this many runs at once.
MAX_CATCH_UP = 100


@dataclass(frozen=True)
class Firing:
    """Runs to create now for one schedule, and where its clock stands after them."""

    schedule_id: str
    runs: list[float]
    last_run_at: float | None
    next_run_at: float | None


def due(schedule: Schedule, now: float) -> Firing | None:
    """The runs of ``schedule`` due at ``now`` under its catch-up policy (None: none due).

    Runs are those after its last run (or its creation) up to ``now``. ``skip`` keeps only
    a run that is at most ``GRACE_S`` late; ``once`` keeps the latest; ``all`` keeps every
    one (at most ``MAX_CATCH_UP``, the latest).
    """
    if schedule.paused:
        return None
    since = (schedule.last_run_at or schedule.created_at).timestamp()
    anchor = schedule.created_at.timestamp()
    end = schedule.end_at.timestamp() if schedule.end_at else None
    until = now if end is None else min(now, end)
    missed = fires_between(schedule.rule, schedule.timezone, since, until, anchor=anchor,
                           limit=100_000)
    if not missed:
        return None
    if schedule.catch_up == "all":
        runs = missed[-MAX_CATCH_UP:]
    elif schedule.catch_up == "once":
        runs = missed[-1:]
    else:
        runs = [t for t in missed[-1:] if now - t <= GRACE_S]
    upcoming = next_fire(schedule.rule, schedule.timezone, now, anchor=anchor)
    if end is not None and upcoming is not None and upcoming > end:
        upcoming = None
    return Firing(schedule.id, runs, missed[-1], upcoming)


def run_key(schedule_id: str, run_at: float) -> str:
    """The idempotency key of one run: a second manager, or a restart, makes no second."""
    return f"schedule:{schedule_id}:{round(run_at)}"


def deadline(schedule: Schedule, run_at: float) -> datetime | None:
    """When the task of the run at ``run_at`` must be done: the schedule's first ``ready_by``
    after the run (on a session for a trading rule), in its zone; None without ``ready_by``.

    It counts from the run's time, not from when it was made, so a run caught up late is
    due when it would have been (and the same run always gets the same deadline).
    """
    if schedule.ready_by is None:
        return None
    due_at = next_ready_by(schedule.ready_by, schedule.timezone, run_at,
                           sessions_only=schedule.rule.trading is not None)
    return None if due_at is None else datetime.fromtimestamp(due_at, tz=zone(schedule.timezone))
