"""Turning create requests into store rows: validation, defaults, tenancy, idempotency.

No I/O: the TaskManager first reads what a call may refer to (tasks stored under
its ids, its idempotency keys, the tasks named in ``depends_on``) into
:class:`Known`, then plans each call here, inside a commit round. Every check
that can refuse a request runs here, before the group commit, so one caller's
bad request never fails another caller's.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ..cache import cache_key
from ..errors import (
    InvalidParametersError,
    PayloadTooLargeError,
    QueueFullError,
    QuotaExceededError,
    RaytasksError,
    UnknownTaskTypeError,
)
from ..models import Task, TaskStatus
from ..registry import TaskTypeRegistry, validate_parameters
from ..settings import QuotaSettings, Settings, TaskTypeSettings
from .pipeline import Round
from .queues import Queues
from .state import ActiveTasks


class CreateRequest(Protocol):
    """What intake reads of a create: a :class:`~raytasks.models.TaskCreateRequest`, or
    the compact :class:`~raytasks.messages.NewTask` a client sent (read as it came: no
    model built)."""

    @property
    def name(self) -> str: ...
    @property
    def task_type(self) -> str: ...
    @property
    def parameters(self) -> dict[str, Any]: ...
    @property
    def priority(self) -> int: ...
    @property
    def queue(self) -> str: ...
    @property
    def timeout_s(self) -> float | None: ...
    @property
    def max_cpu_s(self) -> float | None: ...
    @property
    def deadline(self) -> datetime | float | None: ...
    @property
    def max_retries(self) -> int | None: ...
    @property
    def depends_on(self) -> Sequence[str]: ...
    @property
    def idempotency_key(self) -> str | None: ...
    @property
    def tags(self) -> Sequence[str]: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def notify(self) -> Sequence[str]: ...
    @property
    def cache(self) -> bool | None: ...


@dataclass
class Known:
    """What the store held, before the round, that a call's requests may refer to."""

    by_id: dict[str, Task] = field(default_factory=dict)
    by_key: dict[tuple[str, str], Task] = field(default_factory=dict)
    deps: dict[str, tuple[TaskStatus, str | None]] = field(default_factory=dict)
    #: the dependencies looked up in the store (the others were active when it was read)
    read_deps: set[str] = field(default_factory=set)
    #: the result-cache key of each new task that takes cached results, by id
    cache_keys: dict[str, str] = field(default_factory=dict)
    #: the finished task whose result each cache hit takes, by the new task's id
    cache_hits: dict[str, Task] = field(default_factory=dict)


class DependencyEnded(Exception):
    """A dependency that was active when the call's store read ran finished before its
    round: the read does not cover it, so the call reads again and is planned anew."""


@dataclass
class CreationPlan:
    """What one call creates: per request a stored Task (a repeat) or the row of a new one
    (shared when requests of the round carry the same key)."""

    results: list[Task | dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    claimed: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


class Reservations:
    """Queue room held for clients that commit tasks themselves (the direct intake).

    A client's grant holds ``n`` slots of a queue until it expires; each task of that
    client the manager adopts into the queue takes one of them back. Creates through the
    manager see the queue as full that much earlier, so a full queue refuses work
    whichever way it comes.
    """

    def __init__(self) -> None:
        self._by_client: dict[str, tuple[float, Counter[str]]] = {}

    def held(self, queue: str, now: float, but: str | None = None) -> int:
        total = 0
        for client, (expires, slots) in list(self._by_client.items()):
            if expires <= now:
                del self._by_client[client]
            elif client != but:
                total += slots[queue]
        return total

    def hold(self, client: str, slots: dict[str, int], expires: float) -> None:
        """Replace what ``client`` holds."""
        self._by_client[client] = (expires, Counter(slots))

    def used(self, client: str, queue: str, count: int = 1) -> None:
        entry = self._by_client.get(client)
        if entry is not None:
            entry[1][queue] = max(0, entry[1][queue] - count)


@dataclass
class Intake:
    registry: TaskTypeRegistry
    settings: Settings
    queues: Queues
    active: ActiveTasks
    reservations: Reservations = field(default_factory=Reservations)
    _type_settings: dict[str, TaskTypeSettings] = field(default_factory=dict, init=False)

    def plan(self, requests: Sequence[CreateRequest], ids: list[str], ctx: Round,
             known: Known, *, enqueue: bool,
             checked: dict[str, int] | None = None) -> CreationPlan:
        """Validate a call's requests and build their rows; the first error refuses it all.

        ``checked`` maps ids whose parameters the client already validated against the
        type's current model to their work units: their model is not run again here.

        Raises:
            UnknownTaskTypeError, InvalidParametersError, PayloadTooLargeError,
            QuotaExceededError, QueueFullError: nothing of the call is stored.
        """
        plan = CreationPlan()
        same_call = set(ids)
        for i, (task_id, req) in enumerate(zip(ids, requests, strict=True)):
            scope = (req.owner or "", req.idempotency_key or "")
            if task_id in known.by_id:
                plan.results.append(known.by_id[task_id])
                continue
            if req.idempotency_key:
                earlier = known.by_key.get(scope) or plan.claimed.get(scope) \
                    or ctx.keys.get(scope)
                if isinstance(earlier, Task):
                    plan.results.append(earlier)
                    continue
                if earlier is not None:
                    plan.results.append(earlier)
                    continue
            prefix = f"requests[{i}]." if len(requests) > 1 else ""
            row = self.new_row(task_id, req, ctx.now, prefix,
                               (checked or {}).get(task_id))
            self._check_dependencies(task_id, req, prefix, known, same_call)
            if req.idempotency_key:
                plan.claimed[scope] = row
            row["queued"] = enqueue
            if enqueue:
                row["enqueued_at"] = ctx.now
            plan.rows.append(row)
            plan.results.append(row)
        self._admit(plan.rows, ctx, enqueue)
        return plan

    def new_row(self, task_id: str, req: CreateRequest, now: float,
                prefix: str = "", work_units: int | None = None) -> dict[str, Any]:
        """The store row of a new task: parameters validated, defaults and ceilings applied.

        With ``work_units`` the parameters were validated by the client: only their size
        and JSON form are checked here.
        """
        try:
            spec = self.registry.get(req.task_type)
        except UnknownTaskTypeError as exc:
            raise UnknownTaskTypeError(req.task_type, exc.data["known"],
                                       prefix + "task_type") from None
        quota = self.settings.quota_for(req.owner)
        limit = self.settings.max_parameters_bytes
        if quota is not None and quota.max_parameters_bytes is not None:
            limit = min(limit, quota.max_parameters_bytes)
        params = req.parameters
        if work_units is None and spec.params_model is not None:  # else: size and JSON below
            try:
                params = validate_parameters(spec, req.parameters, limit)
            except InvalidParametersError as exc:
                raise InvalidParametersError(
                    [{"field": prefix + e["field"], "reason": e["reason"]} for e in exc.errors]
                ) from None
        self.queues.check(req.queue, prefix + "queue")
        defaults = self.defaults(req.task_type)
        timeout_s = first_given(req.timeout_s, defaults[0])
        max_retries = first_given(req.max_retries, defaults[1])
        units = spec.work_units(params) if work_units is None else work_units
        if quota is not None:
            timeout_s, max_retries = _ceilings(quota, req, units, timeout_s, max_retries,
                                               prefix)
        return task_row(task_id, req, now, params, limit, timeout_s, max_retries, prefix,
                        units)

    def cache_key(self, req: CreateRequest) -> str | None:
        """The result-cache key of a request that takes cached results (its own ``cache``,
        else its type's setting); None for the others, and for a request intake refuses
        (:meth:`plan` says why)."""
        if req.task_type not in self.registry:
            return None
        wanted = req.cache
        if wanted is None:
            wanted = self._settings_of(req.task_type).cache
        if not wanted:
            return None
        spec = self.registry.get(req.task_type)
        try:
            params = validate_parameters(spec, req.parameters, self.settings.max_parameters_bytes)
        except RaytasksError:
            return None
        return cache_key(spec, params)

    def _settings_of(self, task_type: str) -> TaskTypeSettings:
        type_settings = self._type_settings.get(task_type)
        if type_settings is None:
            type_settings = self._type_settings[task_type] = \
                self.settings.for_type(task_type)
        return type_settings

    def defaults(self, task_type: str) -> tuple[float | None, int]:
        """``timeout_s`` and ``max_retries`` of a request of a registered type without them."""
        spec = self.registry.get(task_type)
        type_settings = self._settings_of(task_type)
        return (first_given(type_settings.timeout_s, spec.timeout_s,
                            self.settings.default_timeout_s),
                first_given(type_settings.max_retries, spec.max_retries,
                            self.settings.default_max_retries))

    def _check_dependencies(self, task_id: str, req: CreateRequest, prefix: str,
                            known: Known, same_call: set[str]) -> None:
        """A task may depend on tasks of its own owner only; another owner's task gets
        the same answer as an id that does not exist."""
        for dep in req.depends_on:
            if dep == task_id:
                raise InvalidParametersError(
                    [{"field": f"{prefix}depends_on", "reason": "a task cannot depend on itself"}])
            if dep in same_call:
                continue
            entry = self.active.get(dep)
            if entry is None and dep not in known.read_deps:
                raise DependencyEnded(dep)
            owner = entry.owner if entry is not None else \
                known.deps[dep][1] if dep in known.deps else None
            exists = entry is not None or dep in known.deps
            if not exists or (req.owner is not None and owner != req.owner):
                raise InvalidParametersError(
                    [{"field": f"{prefix}depends_on", "reason": f"no task with id {dep!r}"}])

    def _admit(self, rows: list[dict[str, Any]], ctx: Round, enqueue: bool) -> None:
        """Admission control and pending quotas: refuse a whole call that does not fit."""
        per_queue: dict[str, int] = {}
        per_owner: dict[str | None, int] = {}
        for row in rows:
            per_queue[row["queue"]] = per_queue.get(row["queue"], 0) + 1
            per_owner[row["owner"]] = per_owner.get(row["owner"], 0) + 1
        for owner, count in per_owner.items():
            quota = self.settings.quota_for(owner)
            if owner is None or quota is None:
                continue
            total = self.active.pending[owner] + ctx.pending[owner] + count
            if quota.max_pending is not None and total > quota.max_pending:
                raise QuotaExceededError(owner, "max_pending", total, quota.max_pending)
            # an owner's own limit holds before the queue's: one owner's backlog never
            # fills the queue against another's create
            share = int(quota.max_queue_share * self.settings.max_queue_size)
            if enqueue and total > share:
                raise QuotaExceededError(owner, "max_queue_share", total, share)
        if enqueue:
            for queue, count in per_queue.items():
                self._check_room(queue, count, ctx)
            for queue, count in per_queue.items():
                ctx.queued[queue] += count
        for owner, count in per_owner.items():
            ctx.pending[owner] += count

    def admit_queue(self, queue: str, count: int, ctx: Round) -> None:
        """Admission control for tasks entering ``queue``: refuse them when it is full."""
        self._check_room(queue, count, ctx)
        ctx.queued[queue] += count

    def _check_room(self, queue: str, count: int, ctx: Round) -> None:
        """Refuse ``count`` more tasks in ``queue`` past ``max_queue_size``: every queued
        PENDING task takes room, one waiting for its dependencies or a retry's backoff
        too, and so does room held for clients that commit their own tasks."""
        used = self.active.waiting[queue] + ctx.queued[queue]
        limit = self.queues[queue].max_queue_size
        if count + used > limit - self.reservations.held(queue, ctx.now):
            raise QueueFullError(queue, used, limit)

    def room(self, queue: str) -> int:
        """How many more tasks ``queue`` takes now (room held for clients included)."""
        return self.queues[queue].max_queue_size - self.active.waiting[queue]


def task_row(task_id: str, req: CreateRequest, now: float, params: dict[str, Any],
             limit: int, timeout_s: float | None, max_retries: int,
             prefix: str = "", work_units: int | None = None) -> dict[str, Any]:
    """The store row of a new PENDING task whose parameters passed their model.

    Used by the manager, and by a client committing its own tasks (the direct intake).

    Raises:
        InvalidParametersError: parameters that are not strict JSON, text that is not UTF-8.
        PayloadTooLargeError: parameters over ``limit`` bytes of JSON.
    """
    text = _strict_json(params, prefix + "parameters")
    if len(text) > limit:
        raise PayloadTooLargeError(prefix + "parameters", len(text), limit)
    for name, value in (("name", req.name), ("idempotency_key", req.idempotency_key),
                        ("owner", req.owner), *((f"tags.{k}", t)
                                                for k, t in enumerate(req.tags)),
                        *((f"notify.{k}", t) for k, t in enumerate(req.notify))):
        _check_text(value, prefix + name)
    return {
        "id": task_id, "name": req.name, "task_type": req.task_type,
        "status": TaskStatus.PENDING.value, "priority": int(req.priority),
        "queue": req.queue, "parameters": text, "attempt": 0,
        "max_retries": max_retries, "timeout_s": timeout_s,
        "depends_on": json.dumps(list(req.depends_on)),
        "idempotency_key": req.idempotency_key, "tags": list(req.tags), "owner": req.owner,
        "notify": json.dumps(list(req.notify)), "cancel_requested": False, "queued": False,
        "lease_token": 0, "created_at": now, "updated_at": now,
        "max_cpu_s": _positive(req.max_cpu_s, prefix + "max_cpu_s"),
        "deadline": _epoch(req.deadline, prefix + "deadline"),
        "work_units": work_units,
    }


def _ceilings(quota: QuotaSettings, req: CreateRequest, units: int,
              timeout_s: float | None, max_retries: int,
              prefix: str) -> tuple[float | None, int]:
    """An owner's ceilings: a request over one is refused; a default over one is capped."""
    errors = []
    if quota.max_timeout_s is not None:
        if req.timeout_s is not None and req.timeout_s > quota.max_timeout_s:
            errors.append({"field": prefix + "timeout_s", "reason":
                           f"{req.timeout_s:g} s is over the limit max_timeout_s="
                           f"{quota.max_timeout_s:g}"})
        timeout_s = quota.max_timeout_s if timeout_s is None \
            else min(timeout_s, quota.max_timeout_s)
    if quota.max_retries is not None:
        if req.max_retries is not None and req.max_retries > quota.max_retries:
            errors.append({"field": prefix + "max_retries", "reason":
                           f"{req.max_retries} is over the limit max_retries="
                           f"{quota.max_retries}"})
        max_retries = min(max_retries, quota.max_retries)
    if quota.max_work_units is not None and units > quota.max_work_units:
        errors.append({"field": prefix + "parameters", "reason":
                       f"{units:,} work units is over the limit max_work_units="
                       f"{quota.max_work_units:,}"})
    if errors:
        raise InvalidParametersError(errors)
    return timeout_s, max_retries


_STRICT = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def _strict_json(params: dict[str, Any], field: str) -> str:
    """The stored JSON text; NaN, infinities and unpaired surrogates are refused here."""
    try:
        text = _STRICT.encode(params)
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:
        reason = "must be JSON without NaN, Infinity or unpaired surrogates"
        raise InvalidParametersError([{"field": field, "reason": f"{reason} ({exc})"[:300]}]) \
            from None
    return text


def _epoch(value: datetime | float | None, field: str) -> float | None:
    """A deadline as epoch seconds (a trusted client's compact request sends them so)."""
    if isinstance(value, datetime):
        return value.timestamp()
    return _positive(value, field)


def _positive(value: float | None, field: str) -> float | None:
    """A limit a trusted client's compact request may carry unchecked: positive or None."""
    if value is not None and not (isinstance(value, int | float) and 0 < value < 1e12):
        raise InvalidParametersError([{"field": field, "reason": "must be a positive number"}])
    return value


def _check_text(value: str | None, field: str) -> None:
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidParametersError(
            [{"field": field, "reason": "contains an unpaired surrogate (not UTF-8 text)"}]
        ) from None


def first_given(*values: Any) -> Any:
    """The first value that is not None (a request's own, then the defaults')."""
    return next((v for v in values if v is not None), None)
