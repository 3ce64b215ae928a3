"""ScheduleRunner: the manager's part that keeps schedules and fires their runs.

Schedules live in the store (memory follows it: a change is written, then applied).
Every tick, a schedule whose next run has come is asked :func:`~raytasks.schedules.book.due`
what to create under its catch-up policy; each run's task is created like any other
(validation, tenancy, quotas) with the idempotency key of the run, so a manager that
restarts at the firing instant, or a second manager, never creates a run twice, and
with the deadline the schedule's ``ready_by`` gives that run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ..errors import (
    InvalidParametersError,
    QuotaExceededError,
    RaytasksError,
    ScheduleNotFoundError,
)
from ..models import Task, TaskCreateRequest
from ..schedules.book import deadline, due, run_key
from ..schedules.models import Schedule, ScheduleCreateRequest
from ..schedules.rules import next_fire, preview
from .parts import Parts

#: how a run's task is created: as any create (``TaskManagerCore.create``)
Create = Callable[[list[TaskCreateRequest], list[str], bool], Awaitable[list[Task]]]

log = logging.getLogger(__name__)


class ScheduleRunner:
    def __init__(self, parts: Parts, create: Create) -> None:
        self.parts = parts
        self._create = create
        self.by_id: dict[str, Schedule] = {}

    def load(self) -> None:
        """Read every schedule from the store (at start)."""
        self.by_id = {row["id"]: _from_row(row) for row in self.parts.store.schedules.all()}

    # -------------------------------------------------------------- changes

    async def create(self, request: ScheduleCreateRequest) -> Schedule:
        """Check the template as a task would be checked, then store the schedule.

        Raises:
            InvalidParametersError: the template, the rule or a limit refuses it (field named).
            QuotaExceededError: the owner has ``max_schedules`` already.
        """
        parts = self.parts
        now = parts.clock()
        template = request.template.model_copy(update={"owner": request.owner,
                                                       "idempotency_key": None})
        parts.intake.new_row("check", template, now, "template.")  # refused as a task would be
        if template.depends_on:
            raise InvalidParametersError([{"field": "template.depends_on", "reason":
                                           "a scheduled task cannot depend on other tasks"}])
        if template.deadline is not None:  # one fixed time would be long past by later runs
            raise InvalidParametersError([{"field": "template.deadline", "reason":
                                           "a scheduled task is due by the schedule's "
                                           "ready_by (HH:MM), not by one fixed time"}])
        quota = parts.settings.quota_for(request.owner)
        if quota is not None and request.owner is not None:
            if quota.max_schedules is not None:
                mine = sum(1 for s in self.by_id.values() if s.owner == request.owner)
                if mine + 1 > quota.max_schedules:
                    raise QuotaExceededError(request.owner, "max_schedules", mine + 1,
                                             quota.max_schedules)
            gap = request.rule.shortest_gap_s(request.timezone, now)
            if quota.min_schedule_interval_s is not None and gap < quota.min_schedule_interval_s:
                raise InvalidParametersError([{"field": "rule", "reason":
                                               f"runs {gap:g} s apart, under the limit "
                                               f"min_schedule_interval_s="
                                               f"{quota.min_schedule_interval_s:g}"}])
        when = datetime.fromtimestamp(now, tz=UTC)
        schedule = Schedule(id=uuid.uuid4().hex, name=request.name, owner=request.owner,
                            template=template, rule=request.rule, timezone=request.timezone,
                            end_at=request.end_at, catch_up=request.catch_up,
                            ready_by=request.ready_by, created_at=when, updated_at=when)
        upcoming = next_fire(schedule.rule, schedule.timezone, now, anchor=now)
        schedule = schedule.model_copy(update={"next_run_at": _ts(upcoming)})
        await asyncio.to_thread(parts.store.schedules.insert, _to_row(schedule))
        self.by_id[schedule.id] = schedule
        return schedule

    def get(self, schedule_id: str) -> Schedule:
        schedule = self.by_id.get(schedule_id)
        if schedule is None:
            raise ScheduleNotFoundError(schedule_id)
        return schedule

    def of(self, owner: str | None = None) -> list[Schedule]:
        return [s for s in self.by_id.values() if owner is None or s.owner == owner]

    async def set_paused(self, schedule_id: str, paused: bool) -> Schedule:
        """Pause, or resume (from now on: runs missed while paused are not made)."""
        schedule = self.get(schedule_id)
        now = self.parts.clock()
        update: dict[str, Any] = {"paused": paused, "updated_at": datetime.fromtimestamp(
            now, tz=UTC)}
        if not paused and schedule.paused:
            update["last_run_at"] = datetime.fromtimestamp(now, tz=UTC)
            update["next_run_at"] = _ts(next_fire(schedule.rule, schedule.timezone, now,
                                                  anchor=schedule.created_at.timestamp()))
        changed = schedule.model_copy(update=update)
        await self._write(changed)
        return changed

    async def delete(self, schedule_id: str) -> None:
        self.get(schedule_id)
        await asyncio.to_thread(self.parts.store.schedules.delete, schedule_id)
        self.by_id.pop(schedule_id, None)

    def next_runs(self, schedule_id: str, count: int = 5) -> list[dict[str, object]]:
        """The next runs as ``{"at", "provisional", "deadline"}`` (the deadline their task
        will carry: None without ``ready_by``)."""
        schedule = self.get(schedule_id)
        after = max(self.parts.clock(), (schedule.last_run_at or schedule.created_at)
                    .timestamp())
        runs = preview(schedule.rule, schedule.timezone, after, count,
                       anchor=schedule.created_at.timestamp(),
                       end_at=schedule.end_at.timestamp() if schedule.end_at else None)
        for run in runs:
            at = run["at"]
            assert isinstance(at, datetime)
            run["deadline"] = deadline(schedule, at.timestamp())
        return runs

    # -------------------------------------------------------------- firing

    async def tick(self) -> int:
        """Create the runs that are due; returns how many tasks were asked for."""
        now = self.parts.clock()
        made = 0
        for schedule in list(self.by_id.values()):
            nxt = schedule.next_run_at
            if schedule.paused or nxt is None or nxt.timestamp() > now:
                continue
            firing = due(schedule, now)
            if firing is None:
                continue
            last_task, error = schedule.last_task_id, None
            for run_at in firing.runs:
                request = schedule.template.model_copy(
                    update={"idempotency_key": run_key(schedule.id, run_at),
                            "deadline": deadline(schedule, run_at)})
                try:
                    (task,) = await self._create([request], [uuid.uuid4().hex], True)
                    last_task = task.id
                except RaytasksError as exc:  # a quota or a vanished type: say so, go on
                    error = f"{type(exc).__name__}: {exc}"[:1000]
                    log.warning("schedule %s could not create its run: %s", schedule.id, exc)
                made += 1
            when = datetime.fromtimestamp(now, tz=UTC)
            await self._write(schedule.model_copy(update={
                "last_run_at": _ts(firing.last_run_at), "next_run_at": _ts(firing.next_run_at),
                "last_task_id": last_task, "last_error": error, "updated_at": when}))
        return made

    async def _write(self, schedule: Schedule) -> None:
        row = _to_row(schedule)
        row.pop("id")
        await asyncio.to_thread(self.parts.store.schedules.update, schedule.id, **row)
        self.by_id[schedule.id] = schedule


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _to_row(s: Schedule) -> dict[str, Any]:
    spec = {"template": s.template.model_dump(mode="json"),
            "rule": s.rule.model_dump(mode="json", exclude_none=True),
            "timezone": s.timezone, "end_at": _epoch(s.end_at), "catch_up": s.catch_up}
    return {"id": s.id, "owner": s.owner, "name": s.name, "spec": json.dumps(spec),
            "ready_by": s.ready_by, "paused": s.paused, "last_run_at": _epoch(s.last_run_at),
            "next_run_at": _epoch(s.next_run_at), "last_task_id": s.last_task_id,
            "last_error": s.last_error, "created_at": s.created_at.timestamp(),
            "updated_at": s.updated_at.timestamp()}


def _from_row(row: dict[str, Any]) -> Schedule:
    spec = json.loads(row["spec"])
    return Schedule(id=row["id"], owner=row["owner"], name=row["name"],
                    template=spec["template"], rule=spec["rule"], timezone=spec["timezone"],
                    end_at=_ts(spec["end_at"]), catch_up=spec["catch_up"],
                    ready_by=row["ready_by"], paused=bool(row["paused"]),
                    last_run_at=_ts(row["last_run_at"]), next_run_at=_ts(row["next_run_at"]),
                    last_task_id=row["last_task_id"],
                    last_error=row["last_error"], created_at=_ts(row["created_at"]),
                    updated_at=_ts(row["updated_at"]))
