"""``/tasks``: create (one or a batch), list, read, change, cancel, retry, re-run and
verify, delete, progress and logs. Every route sees only the caller's tasks (an admin's:
all). Creates, lists and reads are paced per owner (``api.max_creates_per_s``,
``api.max_reads_per_s``): past them 429 ``TooManyRequests`` with ``Retry-After``."""

from __future__ import annotations

import weakref
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from ..api import TaskPage
from ..errors import InvalidParametersError, InvalidTransitionError
from ..inputs import check_tags
from ..models import (
    AttemptInfo,
    OrderField,
    Task,
    TaskCreateRequest,
    TaskExplanation,
    TaskPriority,
    TaskProgress,
    TaskQuery,
    TaskStatus,
    TaskUpdateRequest,
)
from ..reproduce import Verdict, require_completed, rerun_request, verify
from .common import Reader, Submitter, Svc, TaskId, check_types, public, stamped
from .logs import LogCursor, LogPage, follow, page
from .vetting import vet_create, vet_notify

router = APIRouter()

_NDJSON = {200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                 "description": "with follow=true: one JSON log line per line, then "
                                "{\"end\", \"status\", \"next_after\"}"}}


@router.post("/tasks", status_code=201)
async def create(request: TaskCreateRequest, who: Submitter, svc: Svc, http: Request) -> Task:
    async with svc.paced(who, "max_creates_per_s"):
        check_types([request.task_type], who)
        vet_create([request], svc.settings)
        task = await svc.tm.submit(stamped(request, who))
        await svc.audit.record(http, who, "task.create", [(task.id, task.owner)])
        return public(task)


@router.post("/tasks/batch", status_code=201)
async def create_batch(requests: Annotated[list[TaskCreateRequest], Body(max_length=1000)],
                       who: Submitter, svc: Svc, http: Request) -> list[Task]:
    async with svc.paced(who, "max_creates_per_s"):
        check_types([r.task_type for r in requests], who)
        vet_create(requests, svc.settings)
        tasks = await svc.tm.submit_many([stamped(r, who) for r in requests])
        await svc.audit.record(http, who, "task.create", [(t.id, t.owner) for t in tasks])
        return [public(t) for t in tasks]


@router.get("/tasks")
async def list_tasks(
    who: Reader,
    svc: Svc,
    status: Annotated[list[TaskStatus] | None, Query(max_length=10)] = None,
    task_type: Annotated[list[str] | None, Query(max_length=100)] = None,
    priority: Annotated[list[TaskPriority] | None, Query(max_length=10)] = None,
    queue: Annotated[str | None, Query(max_length=64)] = None,
    owner: Annotated[str | None, Query(max_length=200)] = None,
    tags: Annotated[list[str] | None, Query(max_length=20)] = None,
    text: Annotated[str | None, Query(max_length=200)] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order_by: OrderField = "-created_at",
    after: Annotated[str | None, Query(max_length=400, description=(
        "the next_after of the previous page (keyset pages: as fast on page 1,000 as on "
        "page 1)"))] = None,
) -> TaskPage:
    """A page of the caller's tasks. ``next_after`` fetches the next page; ``total`` is
    null when more than 1,000 tasks match."""
    async with svc.paced(who, "max_reads_per_s"):
        try:
            check_tags(tags or [])
            query = TaskQuery.model_validate({
                "status": status, "task_type": task_type, "priority": priority,
                "queue": queue, "owner": owner if who.admin else who.owner, "tags": tags,
                "text": text, "offset": offset, "limit": limit, "order_by": order_by,
                "after": after or None})
        except ValueError as exc:
            reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise InvalidParametersError([{"field": "query", "reason": reason}]) from None
        return await svc.tm.list_tasks(query)


@router.get("/tasks/{task_id}")
async def get(task_id: TaskId, who: Reader, svc: Svc, http: Request) -> Task:
    async with svc.paced(who, "max_reads_per_s"):
        return public(await svc.read_task(http, task_id, who))


@router.patch("/tasks/{task_id}")
async def update(task_id: TaskId, request: TaskUpdateRequest, who: Submitter, svc: Svc,
                 http: Request) -> Task:
    task = await svc.changeable_task(task_id, who)
    vet_notify(request.notify or [], svc.settings, "")
    updated = await svc.tm.update_task(task_id, request)
    await svc.audit.record(http, who, "task.update", [(task_id, task.owner)])
    return public(updated)


@router.post("/tasks/{task_id}/cancel")
async def cancel(task_id: TaskId, who: Submitter, svc: Svc, http: Request) -> Task:
    task = await svc.changeable_task(task_id, who)
    cancelled = await svc.tm.cancel_task(task_id)
    await svc.audit.record(http, who, "task.cancel", [(task_id, task.owner)])
    return public(cancelled)


@router.post("/tasks/{task_id}/retry")
async def retry(task_id: TaskId, who: Submitter, svc: Svc, http: Request) -> Task:
    task = await svc.changeable_task(task_id, who)
    retried = await svc.tm.retry_task(task_id)
    await svc.audit.record(http, who, "task.retry", [(task_id, task.owner)])
    return public(retried)


@router.post("/tasks/{task_id}/rerun", status_code=201)
async def rerun(task_id: TaskId, who: Submitter, svc: Svc, http: Request) -> Task:
    """A new task on a COMPLETED task's inputs (its type, parameters, priority, queue and
    owner); 409 for a task not COMPLETED. ``GET /tasks/{rerun}/verify?of={task_id}``
    compares the two once it has finished."""
    async with svc.paced(who, "max_creates_per_s"):
        request = rerun_request(await svc.changeable_task(task_id, who))
        vet_create([request], svc.settings)
        task = await svc.tm.submit(stamped(request, who))
        await svc.audit.record(http, who, "task.rerun", [(task.id, task.owner)])
        return public(task)


@router.get("/tasks/{task_id}/verify")
async def verify_rerun(task_id: TaskId, of: Annotated[str, Query(min_length=1, max_length=200)],
                       who: Reader, svc: Svc, http: Request) -> Verdict:
    """Whether the finished task ``task_id`` reproduced the COMPLETED task ``of``: the
    differences, field by field within the type's tolerance, and which inputs changed
    (409 while it runs, or when ``of`` did not complete)."""
    async with svc.paced(who, "max_reads_per_s"):
        again = await svc.read_task(http, task_id, who)
        original = await svc.read_task(http, of, who)
        require_completed(original)
        if not again.status.finished:
            raise InvalidTransitionError(again.id, again.status.value,
                                         "compared (it has not finished)")
        types = {t.name: t for t in await svc.tm.task_types()}
        return verify(public(original), public(again), types.get(original.task_type))


@router.delete("/tasks/{task_id}", status_code=204)
async def delete(task_id: TaskId, who: Submitter, svc: Svc, http: Request) -> Response:
    task = await svc.changeable_task(task_id, who)
    await svc.tm.delete_task(task_id)
    await svc.audit.record(http, who, "task.delete", [(task_id, task.owner)])
    return Response(status_code=204)


@router.get("/tasks/{task_id}/progress")
async def progress(task_id: TaskId, who: Reader, svc: Svc, http: Request) -> TaskProgress:
    await svc.read_task(http, task_id, who)
    return await svc.tracker.get_progress(task_id)


@router.get("/tasks/{task_id}/explain")
async def explain(task_id: TaskId, who: Reader, svc: Svc, http: Request) -> TaskExplanation:
    """Why the task waits (or runs), and when it should start and finish."""
    await svc.read_task(http, task_id, who)
    return await svc.tm.explain(task_id)


@router.get("/tasks/{task_id}/attempts")
async def attempts(task_id: TaskId, who: Reader, svc: Svc, http: Request) -> list[AttemptInfo]:
    """How each attempt of the task ended (completed, failed, preempted...), with what it
    used and the run time predicted for it."""
    await svc.read_task(http, task_id, who)
    return await svc.tm.attempts(task_id)


@router.get("/tasks/{task_id}/logs", response_model=LogPage,
            responses=_NDJSON)  # type: ignore[arg-type]
async def logs(
    task_id: TaskId, who: Reader, svc: Svc, http: Request,
    attempt: Annotated[int | None, Query(ge=0, le=1_000_000,
                                         description="one attempt's lines only")] = None,
    after: Annotated[int, Query(ge=0, le=2**62,
                                description="the next_after of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    follow_: Annotated[bool, Query(alias="follow", description=(
        "stream NDJSON until the task has finished and every line is sent"))] = False,
    timeout_s: Annotated[float, Query(ge=1, le=300, description=(
        "with follow: end the stream after this long (continue with next_after)"))] = 60,
) -> Any:
    """What the task's handler printed or logged, and raytasks' lines about each attempt,
    oldest first. Lines are text: show them as text."""
    await svc.read_task(http, task_id, who)
    if not follow_:
        result: LogPage = await page(svc.tm, task_id, attempt, after, limit)
        return result
    release = svc.live.acquire(who.owner)  # 429 past the owner's live readers

    async def stream() -> Any:
        try:
            async for chunk in follow(LogCursor(svc.tm, task_id, attempt, after), timeout_s):
                yield chunk
        finally:
            release()

    body = stream()
    weakref.finalize(body, release)  # a stream dropped before it started frees its slot too
    return StreamingResponse(body, media_type="application/x-ndjson")
