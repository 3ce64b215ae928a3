"""``/schedules``: recurring tasks, owned like tasks.

A schedule is created in the caller's name (only an admin may name another owner);
its template is vetted like a task create (named resources, the notify allow-list)
and then checked by the manager as a task would be, with the owner's limits on how
many schedules and how often they run (429 / 422 naming the limit). Another owner's
schedule is the same 404 as a random id on every route.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from ..errors import InvalidParametersError, ScheduleNotFoundError, UnknownTaskTypeError
from ..schedules import Schedule, ScheduleCreateRequest
from .auth import Principal
from .common import Reader, Services, Submitter, Svc, check_types, owner_for
from .edge import scrub
from .vetting import vet_create

router = APIRouter()
ScheduleId = Annotated[str, Path(min_length=1, max_length=200)]


class ScheduleRun(BaseModel):
    """A coming run; ``provisional`` when it lies past the exchange calendar the server
    knows (a weekday that may turn out to be a holiday); ``deadline``, the one its task
    will carry (from the schedule's ``ready_by``)."""

    at: datetime
    provisional: bool = False
    deadline: datetime | None = None


def _public(schedule: Schedule) -> Schedule:
    if not schedule.last_error:
        return schedule
    return schedule.model_copy(update={"last_error": scrub(schedule.last_error)})


async def _own(svc: Services, schedule_id: str, who: Principal) -> Schedule:
    schedule = await svc.tm.get_schedule(schedule_id)
    if not who.may_see(schedule.owner):
        raise ScheduleNotFoundError(schedule_id)  # another owner's: as if there were none
    return schedule


async def _changeable(svc: Services, schedule_id: str, who: Principal) -> Schedule:
    """:func:`_own`, if ``who``'s token may submit the template's task type."""
    schedule = await _own(svc, schedule_id, who)
    check_types([schedule.template.task_type], who)
    return schedule


@router.post("/schedules", status_code=201)
async def create_schedule(request: ScheduleCreateRequest, who: Submitter, svc: Svc,
                          http: Request) -> Schedule:
    """Store a schedule: ``template`` is created as a task at every run of ``rule``, due
    by the schedule's ``ready_by`` (local ``HH:MM``) when it has one."""
    check_types([request.template.task_type], who)
    vet_create([request.template], svc.settings, "template.")
    owned = request.model_copy(update={"owner": owner_for(request.owner, who)})
    try:
        made = await svc.tm.create_schedule(owned)
    except UnknownTaskTypeError as exc:  # named as the field it is, like every other
        raise InvalidParametersError([{"field": "template.task_type",
                                       "reason": str(exc)}]) from None
    await svc.audit.record(http, who, "schedule.create", [(made.id, made.owner)])
    return _public(made)


@router.get("/schedules")
async def list_schedules(
        who: Reader, svc: Svc,
        owner: Annotated[str | None, Query(max_length=200,
                                           description="an admin's filter")] = None,
) -> list[Schedule]:
    """The caller's schedules (an admin's: everyone's, or ``owner``'s)."""
    mine = (owner or None) if who.admin else who.owner
    found = await svc.tm.list_schedules(mine)
    return [_public(s) for s in sorted(found, key=lambda s: s.created_at)]


@router.get("/schedules/{schedule_id}")
async def get_schedule(schedule_id: ScheduleId, who: Reader, svc: Svc) -> Schedule:
    return _public(await _own(svc, schedule_id, who))


@router.post("/schedules/{schedule_id}/pause")
async def pause_schedule(schedule_id: ScheduleId, who: Submitter, svc: Svc,
                         http: Request) -> Schedule:
    await _changeable(svc, schedule_id, who)
    paused = await svc.tm.pause_schedule(schedule_id)
    await svc.audit.record(http, who, "schedule.pause", [(schedule_id, paused.owner)])
    return _public(paused)


@router.post("/schedules/{schedule_id}/resume")
async def resume_schedule(schedule_id: ScheduleId, who: Submitter, svc: Svc,
                          http: Request) -> Schedule:
    """Resume from now on: runs missed while paused are not made."""
    await _changeable(svc, schedule_id, who)
    resumed = await svc.tm.resume_schedule(schedule_id)
    await svc.audit.record(http, who, "schedule.resume", [(schedule_id, resumed.owner)])
    return _public(resumed)


@router.delete("/schedules/{schedule_id}", status_code=204)
async def delete_schedule(schedule_id: ScheduleId, who: Submitter, svc: Svc,
                          http: Request) -> Response:
    """Delete the schedule (the tasks it made stay)."""
    schedule = await _changeable(svc, schedule_id, who)
    await svc.tm.delete_schedule(schedule_id)
    await svc.audit.record(http, who, "schedule.delete", [(schedule_id, schedule.owner)])
    return Response(status_code=204)


@router.get("/schedules/{schedule_id}/next")
async def next_runs(schedule_id: ScheduleId, who: Reader, svc: Svc,
                    count: Annotated[int, Query(ge=1, le=50)] = 5) -> list[ScheduleRun]:
    """The schedule's next ``count`` runs (none once it has ended)."""
    await _own(svc, schedule_id, who)
    return [ScheduleRun.model_validate(r) for r in await svc.tm.next_runs(schedule_id, count)]
