"""Turning create requests into store rows: validation, defaults, idempotency. No I/O.

The TaskManager gathers what this needs from the store (tasks already
stored under the requested ids or idempotency keys, the tasks named in
``depends_on``), calls :func:`plan_creation` once per client call, and
commits the rows of every call that arrived together in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidParametersError
from .models import Task, TaskCreateRequest, TaskStatus
from .registry import TaskTypeRegistry, validate_parameters
from .settings import Settings
from .store.base import to_json, ts


@dataclass
class CreationPlan:
    """What one client call creates.

    ``results`` has one entry per request: a stored :class:`Task` (a repeat), or
    the row dict the request becomes (shared when two requests carry the same
    idempotency key). ``rows`` are the new rows to insert.
    """

    results: list[Task | dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    claimed_keys: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Known:
    """What the store already holds that a batch of requests may refer to."""

    by_id: dict[str, Task]
    by_key: dict[str, Task]
    deps: dict[str, Task]
    active_ids: Container[str]  # ids of PENDING and RUNNING tasks
    claimed_keys: dict[str, dict[str, Any]] = field(default_factory=dict)


def plan_creation(requests: list[TaskCreateRequest], ids: list[str], now: float,
                  registry: TaskTypeRegistry, settings: Settings, known: Known) -> CreationPlan:
    """Validate every request and build its row; the first error refuses the whole call.

    Raises:
        UnknownTaskTypeError, InvalidParametersError, PayloadTooLargeError.
    """
    plan = CreationPlan()
    for i, (task_id, req) in enumerate(zip(ids, requests, strict=True)):
        key = req.idempotency_key
        if task_id in known.by_id:
            plan.results.append(known.by_id[task_id])
        elif key and key in known.by_key:
            plan.results.append(known.by_key[key])
        elif key and (key in plan.claimed_keys or key in known.claimed_keys):
            plan.results.append(plan.claimed_keys.get(key) or known.claimed_keys[key])
        else:
            prefix = f"requests[{i}]." if len(requests) > 1 else ""
            row = new_row(task_id, req, now, prefix, registry, settings)
            check_dependencies(task_id, req.depends_on, prefix, known, set(ids))
            if key:
                plan.claimed_keys[key] = row
            plan.rows.append(row)
            plan.results.append(row)
    return plan


def new_row(task_id: str, req: TaskCreateRequest, now: float, prefix: str,
            registry: TaskTypeRegistry, settings: Settings) -> dict[str, Any]:
    """The store row of a new task, its parameters validated and its defaults resolved."""
    spec = registry.get(req.task_type)
    try:
        params = validate_parameters(spec, req.parameters, settings.max_parameters_bytes)
    except InvalidParametersError as exc:
        raise InvalidParametersError(
            [{"field": prefix + e["field"], "reason": e["reason"]} for e in exc.errors]
        ) from None
    type_settings = settings.for_type(req.task_type)
    timeout_s = _first(req.timeout_s, type_settings.timeout_s, spec.timeout_s,
                       settings.default_timeout_s)
    max_retries = _first(req.max_retries, type_settings.max_retries, spec.max_retries,
                         settings.default_max_retries)
    return {
        "id": task_id, "name": req.name, "task_type": req.task_type,
        "status": TaskStatus.PENDING.value, "priority": int(req.priority),
        "queue": req.queue, "parameters": to_json(params), "attempt": 0,
        "max_retries": max_retries, "timeout_s": timeout_s,
        "depends_on": json.dumps(req.depends_on),
        "idempotency_key": req.idempotency_key, "tags": req.tags, "owner": req.owner,
        "notify": json.dumps(req.notify), "cancel_requested": False, "queued": False,
        "lease_token": 0, "created_at": now, "updated_at": now,
    }


def check_dependencies(task_id: str, depends_on: list[str], prefix: str, known: Known,
                       same_call: set[str]) -> None:
    for dep in depends_on:
        if dep == task_id:
            raise InvalidParametersError(
                [{"field": f"{prefix}depends_on", "reason": "a task cannot depend on itself"}])
        if dep not in known.deps and dep not in known.active_ids and dep not in same_call:
            raise InvalidParametersError(
                [{"field": f"{prefix}depends_on", "reason": f"no task with id {dep!r}"}])


def row_to_new_task(row: dict[str, Any]) -> Task:
    """The Task a freshly inserted row stands for (without reading it back)."""
    return Task(
        id=row["id"], name=row["name"], task_type=row["task_type"],
        status=TaskStatus(row["status"]), priority=row["priority"], queue=row["queue"],
        parameters=json.loads(row["parameters"]), attempt=0,
        max_retries=row["max_retries"], timeout_s=row["timeout_s"],
        depends_on=json.loads(row["depends_on"]), idempotency_key=row["idempotency_key"],
        tags=row["tags"], owner=row["owner"], notify=json.loads(row["notify"]),
        created_at=ts(row["created_at"]), updated_at=ts(row["updated_at"]),
    )


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)
