"""TaskManagerCore: the single source of truth, as a plain asyncio class.

It owns the store, one :class:`TaskScheduler` per named queue, and the
leases. Executors lease work from it and report back with the lease's fencing
token. Every change is committed before it is acknowledged; every status
change goes through :meth:`_transition`, checked against the one table in
:mod:`raytasks.lifecycle`. ``runtime.py`` turns this class into the detached
``TaskManager`` actor; tests drive it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import exc as sa_exc

from .errors import (
    InvalidParametersError,
    InvalidTransitionError,
    QueueFullError,
    TaskNotFoundError,
)
from .handlers import BUILTIN_TYPES
from .lifecycle import check_transition, retry_delay_s
from .models import (
    Lease,
    QueuedTask,
    Task,
    TaskCreateRequest,
    TaskErrorInfo,
    TaskPriority,
    TaskQuery,
    TaskStatus,
    TaskSummary,
    TaskTypeInfo,
    TaskUpdateRequest,
)
from .registry import TaskTypeRegistry, TaskTypeSpec, validate_parameters, validation_errors
from .scheduler import TaskScheduler
from .settings import Settings
from .store import SqlTaskStore, WriteBatch
from .store.base import encode_tags, epoch, to_json

EventSink = Callable[[list[dict[str, Any]]], None]
CancelSink = Callable[[str, str, int], None]


@dataclass
class _Active:
    """What the manager keeps in memory of a PENDING or RUNNING task."""

    task_id: str
    task_type: str
    status: TaskStatus
    priority: TaskPriority
    queue: str
    attempt: int
    max_retries: int
    timeout_s: float | None
    parameters: dict[str, Any]
    owner: str | None
    queued: bool
    token: int
    created_at: float
    cancel_requested: bool = False
    blocked_on: frozenset[str] = frozenset()


@dataclass
class _LeaseWaiter:
    executor_id: str
    task_types: list[str]
    n: int
    future: asyncio.Future[list[Lease]]


class TaskManagerCore:
    def __init__(
        self,
        settings: Settings,
        *,
        store: SqlTaskStore | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        assert settings.store_url is not None
        self.store = store or SqlTaskStore(settings.store_url)
        self.clock = clock
        self.rng = rng or random.Random()
        self.registry = TaskTypeRegistry(BUILTIN_TYPES)
        self.schedulers: dict[str, TaskScheduler] = {}
        self.active: dict[str, _Active] = {}
        self.dependents: dict[str, set[str]] = {}
        self._lease_waiters: list[_LeaseWaiter] = []
        self._serve_scheduled = False
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.on_events: EventSink | None = None
        self.on_cancel: CancelSink | None = None
        self.stale_reports = 0

    # ------------------------------------------------------------------ start

    def reconcile(self) -> dict[str, int]:
        """Rebuild memory from the store: re-enqueue waiting work, re-arm RUNNING leases.

        A RUNNING task gets a fresh lease deadline under its stored token: if its
        executor is alive it renews and reports as usual; if not, the lease
        expires and the task is retried or failed as lost.
        """
        for _name, blob, _version in self.store.task_types():
            try:
                self.registry.register(TaskTypeSpec.loads(blob))
            except Exception:  # a type whose code no longer imports stays unknown
                continue
        now = self.clock()
        counts = {"pending": 0, "running": 0}
        tasks = self.store.active()
        for task in tasks:
            self.active[task.id] = self._to_active(task, queued=True)
        queued = self.store.queued_flags([t.id for t in tasks]) if tasks else {}
        for task in tasks:
            entry = self.active[task.id]
            entry.queued = queued.get(task.id, False)
            if task.status is TaskStatus.RUNNING:
                self._scheduler(task.queue).grant(
                    self._queued_item(entry, now), entry.token, "recovered",
                    now + self.settings.lease_ttl_s)
                counts["running"] += 1
            else:
                counts["pending"] += 1
        for task in tasks:
            if task.status is TaskStatus.PENDING:
                self._arm_dependencies(self.active[task.id], task.depends_on, now)
        return counts

    def _to_active(self, task: Task, queued: bool) -> _Active:
        return _Active(
            task_id=task.id, task_type=task.task_type, status=task.status,
            priority=task.priority, queue=task.queue, attempt=task.attempt,
            max_retries=task.max_retries, timeout_s=task.timeout_s,
            parameters=task.parameters, owner=task.owner, queued=queued,
            token=task.lease_token, created_at=epoch(task.created_at) or 0.0,
            cancel_requested=task.cancel_requested,
        )

    # --------------------------------------------------------------- creation

    def create(self, requests: list[TaskCreateRequest], ids: list[str] | None = None,
               *, enqueue: bool = False) -> list[Task]:
        """Validate, store and (with ``enqueue``) queue tasks; one commit for all.

        Repeating a request with the same ``id`` or ``idempotency_key`` returns
        the stored task instead of a new one.

        Raises:
            UnknownTaskTypeError, InvalidParametersError, PayloadTooLargeError,
            QueueFullError: nothing is stored.
        """
        ids = ids or [uuid.uuid4().hex for _ in requests]
        # A repeated id is rare (a call retried after a manager restart): look in
        # memory first, and only when the insert collides read every id back.
        known = [i for i in ids if i in self.active]
        try:
            return self._create(requests, ids, enqueue,
                                self.store.get_many(known) if known else {})
        except sa_exc.IntegrityError:
            return self._create(requests, ids, enqueue, self.store.get_many(list(ids)))

    def _create(self, requests: list[TaskCreateRequest], ids: list[str], enqueue: bool,
                existing: dict[str, Task]) -> list[Task]:
        now = self.clock()
        existing_keys = self.store.find_idempotent(
            [r.idempotency_key for r in requests if r.idempotency_key])
        dep_ids = {d for r in requests for d in r.depends_on} - set(ids)
        deps = self.store.get_many(sorted(dep_ids)) if dep_ids else {}
        batch = WriteBatch()
        out: list[Task | None] = []
        fresh: list[tuple[int, dict[str, Any]]] = []
        seen_keys: dict[str, int] = {}
        for i, (task_id, req) in enumerate(zip(ids, requests, strict=True)):
            prefix = f"requests[{i}]." if len(requests) > 1 else ""
            if task_id in existing:
                out.append(existing[task_id])
                continue
            if req.idempotency_key in existing_keys:
                out.append(existing_keys[req.idempotency_key])
                continue
            if req.idempotency_key and req.idempotency_key in seen_keys:
                out.append(None)  # same key twice in one batch: the first one wins
                fresh.append((i, {"alias_of": seen_keys[req.idempotency_key]}))
                continue
            row = self._new_row(task_id, req, now, prefix, deps, ids)
            if req.idempotency_key:
                seen_keys[req.idempotency_key] = i
            batch.inserts.append(row)
            batch.events.append(self._event(row, None, TaskStatus.PENDING, now))
            fresh.append((i, row))
            out.append(None)
        rows = [r for _, r in fresh if "alias_of" not in r]
        if enqueue:
            self._admit(rows)
        for row in rows:
            row["queued"] = enqueue
        self._commit(batch)
        created: dict[int, Task] = {}
        for i, row in fresh:
            if "alias_of" in row:
                continue
            task = _row_task(row)
            created[i] = task
            entry = self._to_active(task, queued=enqueue)
            self.active[task.id] = entry
            self._arm_dependencies(entry, task.depends_on, now)
        for i, row in fresh:
            if "alias_of" in row:
                created[i] = created[row["alias_of"]]
        result = [t if t is not None else created[i] for i, t in enumerate(out)]
        return result

    async def create_and_enqueue(self, requests: list[TaskCreateRequest],
                                 ids: list[str] | None = None) -> list[Task]:
        tasks = self.create(requests, ids, enqueue=True)
        # let a waiting executor take the work before the client's reply goes out
        await asyncio.sleep(0)
        return tasks

    def _new_row(self, task_id: str, req: TaskCreateRequest, now: float, prefix: str,
                 deps: dict[str, Task], batch_ids: list[str]) -> dict[str, Any]:
        spec = self.registry.get(req.task_type)
        try:
            params = validate_parameters(spec, req.parameters,
                                         self.settings.max_parameters_bytes)
        except InvalidParametersError as exc:
            raise InvalidParametersError(
                [{"field": prefix + e["field"], "reason": e["reason"]} for e in exc.errors]
            ) from None
        for dep in req.depends_on:
            if dep not in deps and dep not in self.active and dep not in batch_ids:
                raise InvalidParametersError(
                    [{"field": f"{prefix}depends_on", "reason": f"no task with id {dep!r}"}])
            if dep == task_id:
                raise InvalidParametersError(
                    [{"field": f"{prefix}depends_on", "reason": "a task cannot depend on itself"}])
        type_settings = self.settings.for_type(req.task_type)
        timeout_s = _first(req.timeout_s, type_settings.timeout_s, spec.timeout_s,
                           self.settings.default_timeout_s)
        max_retries = _first(req.max_retries, type_settings.max_retries, spec.max_retries,
                             self.settings.default_max_retries)
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

    def _admit(self, rows: list[dict[str, Any]]) -> None:
        """Admission control: refuse the whole batch when a queue cannot take it."""
        need: dict[str, int] = {}
        for row in rows:
            need[row["queue"]] = need.get(row["queue"], 0) + 1
        for queue, count in need.items():
            sched = self._scheduler(queue)
            if count > sched.free_slots():
                raise QueueFullError(queue, len(sched), sched.max_queue_size)

    def enqueue(self, task_id: str, priority: TaskPriority | None = None) -> Task:
        """Queue a created task (``TaskQueueManager.submit_task``); idempotent."""
        entry = self.active.get(task_id)
        if entry is None:
            task = self._get_stored(task_id)
            raise InvalidTransitionError(task_id, task.status.value, "queued")
        fields: dict[str, Any] = {"queued": True, "updated_at": self.clock()}
        if priority is not None and priority != entry.priority \
                and entry.status is TaskStatus.PENDING:
            fields["priority"] = int(priority)
        if not entry.queued:
            sched = self._scheduler(entry.queue)
            if not entry.blocked_on and sched.free_slots() <= 0:
                raise QueueFullError(entry.queue, len(sched), sched.max_queue_size)
        self._commit(WriteBatch(updates=[(task_id, fields, None)]))
        if "priority" in fields:
            entry.priority = TaskPriority(fields["priority"])
            self._scheduler(entry.queue).reprioritise(task_id, entry.priority, self.clock())
        if not entry.queued:
            entry.queued = True
            if not entry.blocked_on:
                self._push(entry, self.clock())
        return self._get_stored(task_id)

    # ------------------------------------------------------------------ leases

    async def lease(self, executor_id: str, task_types: list[str], n: int = 1,
                    wait_s: float = 0.0) -> list[Lease]:
        """Hand out up to ``n`` runnable tasks of ``task_types``; long-poll up to ``wait_s``.

        A waiting executor is handed new work directly when it is queued (no
        polling delay); the short wait slices catch delayed retries coming due.
        """
        deadline = time.monotonic() + wait_s
        while True:
            leases = self.lease_now(executor_id, task_types, n)
            remaining = deadline - time.monotonic()
            if leases or remaining <= 0:
                return leases
            loop = asyncio.get_running_loop()
            waiter = _LeaseWaiter(executor_id, task_types, n, loop.create_future())
            self._lease_waiters.append(waiter)
            timer = loop.call_later(min(remaining, 0.25), _resolve, waiter.future, [])
            try:
                leases = await waiter.future
            finally:
                timer.cancel()
                with contextlib.suppress(ValueError):
                    self._lease_waiters.remove(waiter)
            if leases:
                return leases

    def _serve_waiters(self) -> None:
        """Lease freshly queued work to executors that are waiting for it, oldest first."""
        self._serve_scheduled = False
        for waiter in list(self._lease_waiters):
            if waiter.future.done():
                continue
            leases = self.lease_now(waiter.executor_id, waiter.task_types, waiter.n)
            if leases:
                self._lease_waiters.remove(waiter)
                waiter.future.set_result(leases)

    def lease_now(self, executor_id: str, task_types: list[str], n: int = 1) -> list[Lease]:
        now = self.clock()
        n = max(1, min(n, self.settings.lease_batch_max))
        limits = {t: self._concurrency_limit(t) for t in task_types}
        deadline = now + self.settings.lease_ttl_s
        batch = WriteBatch()
        leases: list[Lease] = []
        while len(leases) < n:
            best: tuple[TaskScheduler, QueuedTask] | None = None
            best_key: tuple[float, float] | None = None
            for sched in self.schedulers.values():
                item = sched.peek_best(task_types, now, limits)
                if item is None:
                    continue
                key = (sched.effective_priority(item, now), item.enqueued_at)
                if best_key is None or key < best_key:
                    best, best_key = (sched, item), key
            if best is None:
                break
            sched, item = best
            entry = self.active[item.task_id]
            entry.token += 1
            sched.pop(item)
            sched.grant(item, entry.token, executor_id, deadline)
            batch.updates.append((item.task_id, {
                "status": "RUNNING", "lease_token": entry.token, "started_at": now,
                "updated_at": now, "not_before": None}, None))
            batch.events.append(self._event_for(entry, TaskStatus.PENDING, TaskStatus.RUNNING,
                                                now))
            entry.status = TaskStatus.RUNNING
            leases.append(Lease(
                task_id=entry.task_id, task_type=entry.task_type, token=entry.token,
                attempt=entry.attempt, parameters=entry.parameters, timeout_s=entry.timeout_s,
                deadline=deadline,
                handler_version=self.registry.get(entry.task_type).version))
        if not leases:
            return []
        self._commit(batch)
        return leases

    def _concurrency_limit(self, task_type: str) -> int | None:
        own = self.settings.for_type(task_type).max_concurrency
        if own is not None:
            return own
        return self.registry.get(task_type).max_concurrency if task_type in self.registry \
            else None

    def renew(self, items: list[tuple[str, int]]) -> dict[str, list[str]]:
        """Heartbeats: extend leases. Returns ids whose lease is ``lost`` or ``cancel``-led."""
        deadline = self.clock() + self.settings.lease_ttl_s
        lost, cancel = [], []
        for task_id, token in items:
            entry = self.active.get(task_id)
            rec = self._scheduler(entry.queue).lease_of(task_id) if entry else None
            if entry is None or rec is None or rec.token != token:
                lost.append(task_id)
                continue
            self._scheduler(entry.queue).renew(task_id, token, deadline)
            if entry.cancel_requested:
                cancel.append(task_id)
        return {"lost": lost, "cancel": cancel}

    def expire_leases(self) -> list[str]:
        """Retry or fail (as lost) every task whose lease ran out. Returns their ids."""
        now = self.clock()
        reports: list[dict[str, Any]] = []
        for sched in self.schedulers.values():
            for rec in sched.expired(now):
                entry = self.active.get(rec.task_id)
                outcome = "cancelled" if entry and entry.cancel_requested else "failed"
                reports.append({
                    "task_id": rec.task_id, "token": rec.token, "outcome": outcome,
                    "error": {"type": "LeaseExpired", "reason": "lost",
                              "message": f"lease held by {rec.executor_id} expired: the "
                                         "executor or its node stopped answering"}})
        if reports:
            self.report(reports)
        return [r["task_id"] for r in reports]

    # ---------------------------------------------------------------- reports

    def report(self, reports: list[dict[str, Any]]) -> dict[str, list[str]]:
        """Apply executor outcomes in one commit; stale tokens are rejected, not applied.

        Each report: ``task_id``, ``token``, ``outcome`` (completed, failed,
        cancelled), and ``result``/``result_uri`` or ``error``.
        """
        now = self.clock()
        batch = WriteBatch()
        accepted: list[str] = []
        rejected: list[str] = []
        finished: list[tuple[_Active, TaskStatus]] = []
        requeue: list[tuple[_Active, float]] = []
        for rep in reports:
            entry = self.active.get(rep["task_id"])
            sched = self.schedulers.get(entry.queue) if entry else None
            if entry is None or sched is None or sched.release(entry.task_id,
                                                               rep["token"]) is None:
                rejected.append(rep["task_id"])
                self.stale_reports += 1
                continue
            accepted.append(entry.task_id)
            outcome = rep["outcome"]
            fields: dict[str, Any] = {"updated_at": now}
            if outcome == "released":  # handed back unstarted: same attempt, no backoff
                target = TaskStatus.PENDING
                requeue.append((entry, 0.0))
            elif outcome == "completed":
                target = TaskStatus.COMPLETED
                fields.update(result=rep.get("result"), result_uri=rep.get("result_uri"),
                              error=None, finished_at=now)
            else:
                error = TaskErrorInfo.model_validate(rep["error"])
                if outcome == "cancelled" or entry.cancel_requested:
                    target = TaskStatus.CANCELLED
                    error = error.model_copy(update={"reason": "cancelled"})
                elif entry.attempt < entry.max_retries:
                    target = TaskStatus.PENDING
                else:
                    target = TaskStatus.FAILED
                fields["error"] = error.model_dump_json()
                if target is TaskStatus.PENDING:
                    delay = retry_delay_s(entry.attempt + 1, self.settings.retry_backoff_base_s,
                                          self.settings.retry_backoff_max_s,
                                          self.settings.retry_jitter, self.rng)
                    fields.update(attempt=entry.attempt + 1, not_before=now + delay)
                    requeue.append((entry, now + delay))
                else:
                    fields["finished_at"] = now
            check_transition(entry.task_id, entry.status, target)
            fields["status"] = target.value
            batch.updates.append((entry.task_id, fields, rep["token"]))
            previous, entry.status = entry.status, target
            entry.attempt = fields.get("attempt", entry.attempt)
            batch.events.append(self._event_for(entry, previous, target, now,
                                                fields.get("error")))
            if target is not TaskStatus.PENDING:
                finished.append((entry, target))
        self._commit(batch)
        for entry, not_before in requeue:
            self._push(entry, now, not_before=not_before)
        self._finish(finished, now)
        return {"accepted": accepted, "rejected": rejected}

    async def report_and_lease(self, reports: list[dict[str, Any]], executor_id: str,
                               task_types: list[str], n: int, wait_s: float) -> list[Lease]:
        """An executor's one round trip per batch: report what it ran, lease what is next."""
        if reports:
            self.report(reports)
        return await self.lease(executor_id, task_types, n, wait_s)

    def save_checkpoint(self, task_id: str, token: int, state: Any) -> bool:
        entry = self.active.get(task_id)
        if entry is None or entry.token != token or entry.status is not TaskStatus.RUNNING:
            return False
        self._commit(WriteBatch(updates=[(task_id, {"checkpoint": to_json(state)}, token)]))
        return True

    def checkpoint(self, task_id: str) -> Any:
        return self.store.checkpoint(task_id)

    # ---------------------------------------------------- finishing and deps

    def _finish(self, finished: list[tuple[_Active, TaskStatus]], now: float) -> None:
        """Forget finished tasks, wake their waiters, release or cascade to dependents."""
        cascade: list[tuple[str, TaskStatus]] = []
        for entry, status in finished:
            self.active.pop(entry.task_id, None)
            self._scheduler(entry.queue).remove(entry.task_id)
            for fut in self._waiters.pop(entry.task_id, []):
                if not fut.done():
                    fut.set_result(None)
            for child_id in sorted(self.dependents.pop(entry.task_id, set())):
                child = self.active.get(child_id)
                if child is None:
                    continue
                if status is TaskStatus.COMPLETED:
                    child.blocked_on = child.blocked_on - {entry.task_id}
                    if not child.blocked_on and child.queued:
                        self._push(child, now)
                else:
                    cascade.append((child_id, status))
        for child_id, status in cascade:
            child = self.active.get(child_id)
            if child is None or child.status is not TaskStatus.PENDING:
                continue
            target = TaskStatus.CANCELLED if status is TaskStatus.CANCELLED \
                else TaskStatus.FAILED
            self._end_pending(child, target, TaskErrorInfo(
                type="DependencyFailed", reason="dependency",
                message=f"a task it depends on ended {status.value}"), now)

    def _end_pending(self, entry: _Active, target: TaskStatus, error: TaskErrorInfo,
                     now: float) -> None:
        check_transition(entry.task_id, entry.status, target)
        err = error.model_dump_json()
        batch = WriteBatch(
            updates=[(entry.task_id, {"status": target.value, "error": err,
                                      "finished_at": now, "updated_at": now}, None)],
            events=[self._event_for(entry, entry.status, target, now, err)])
        self._commit(batch)
        entry.status = target
        self._finish([(entry, target)], now)

    def _arm_dependencies(self, entry: _Active, depends_on: list[str], now: float) -> None:
        blocked = set()
        failed: TaskStatus | None = None
        if depends_on:
            stored = self.store.get_many(depends_on)
            for dep in depends_on:
                status = self.active[dep].status if dep in self.active else (
                    stored[dep].status if dep in stored else TaskStatus.FAILED)
                if status is TaskStatus.COMPLETED:
                    continue
                if status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
                    failed = status
                    break
                blocked.add(dep)
        if failed is not None:
            target = TaskStatus.CANCELLED if failed is TaskStatus.CANCELLED else TaskStatus.FAILED
            self._end_pending(entry, target, TaskErrorInfo(
                type="DependencyFailed", reason="dependency",
                message=f"a task it depends on ended {failed.value}"), now)
            return
        entry.blocked_on = frozenset(blocked)
        for dep in blocked:
            self.dependents.setdefault(dep, set()).add(entry.task_id)
        if not blocked and entry.queued and entry.status is TaskStatus.PENDING:
            self._push(entry, now)

    def _push(self, entry: _Active, now: float, *, not_before: float = 0.0) -> None:
        # admission control ran before the commit; a committed task is never refused
        self._scheduler(entry.queue).enqueue(
            self._queued_item(entry, now, not_before), now, force=True)
        self._wake()

    def _queued_item(self, entry: _Active, now: float, not_before: float = 0.0) -> QueuedTask:
        return QueuedTask(task_id=entry.task_id, task_type=entry.task_type,
                          priority=entry.priority, queue=entry.queue, enqueued_at=now,
                          not_before=not_before, attempt=entry.attempt)

    def _wake(self) -> None:
        if self._lease_waiters and not self._serve_scheduled:
            self._serve_scheduled = True
            asyncio.get_running_loop().call_soon(self._serve_waiters)

    # ----------------------------------------------------------- client calls

    def get(self, task_id: str) -> Task:
        return _with_artifact(self._get_stored(task_id))

    def _get_stored(self, task_id: str) -> Task:
        task = self.store.get(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        return task

    def get_many(self, task_ids: list[str]) -> list[Task]:
        found = self.store.get_many(task_ids)
        missing = [t for t in task_ids if t not in found]
        if missing:
            raise TaskNotFoundError(missing[0])
        return [_with_artifact(found[t]) for t in task_ids]

    def query(self, query: TaskQuery) -> tuple[list[TaskSummary], int]:
        return self.store.query(query)

    def update(self, task_id: str, req: TaskUpdateRequest) -> Task:
        task = self._get_stored(task_id)
        fields: dict[str, Any] = {"updated_at": self.clock()}
        if req.name is not None:
            fields["name"] = req.name
        if req.tags is not None:
            fields["tags"] = encode_tags(req.tags)
        if req.notify is not None:
            fields["notify"] = json.dumps(req.notify)
        if req.priority is not None and req.priority != task.priority:
            if task.status is not TaskStatus.PENDING:
                raise InvalidTransitionError(task_id, task.status.value,
                                             f"re-prioritised to {req.priority.name}")
            fields["priority"] = int(req.priority)
        self._commit(WriteBatch(updates=[(task_id, fields, None)]))
        entry = self.active.get(task_id)
        if entry is not None and "priority" in fields:
            entry.priority = TaskPriority(fields["priority"])
            self._scheduler(entry.queue).reprioritise(task_id, entry.priority, self.clock())
        return self._get_stored(task_id)

    def delete(self, task_id: str) -> None:
        """Delete a finished task (and its artifacts' records)."""
        task = self._get_stored(task_id)
        if not task.status.finished:
            raise InvalidTransitionError(task_id, task.status.value, "deleted")
        self._commit(WriteBatch(deletes=[task_id]))
        if task.result_uri:
            _remove_quietly(task.result_uri)

    def cancel(self, task_id: str) -> Task:
        """Cancel a PENDING task at once; ask a RUNNING one to stop (forced after a grace)."""
        now = self.clock()
        entry = self.active.get(task_id)
        if entry is None:
            task = self._get_stored(task_id)
            raise InvalidTransitionError(task_id, task.status.value, "CANCELLED")
        if entry.status is TaskStatus.PENDING:
            self._scheduler(entry.queue).remove(task_id)
            self._end_pending(entry, TaskStatus.CANCELLED, TaskErrorInfo(
                type="Cancelled", reason="cancelled", message="cancelled while pending"), now)
        elif not entry.cancel_requested:
            entry.cancel_requested = True
            self._commit(WriteBatch(updates=[(task_id, {"cancel_requested": True,
                                                        "updated_at": now}, None)]))
            rec = self._scheduler(entry.queue).lease_of(task_id)
            if rec is not None and self.on_cancel is not None:
                self.on_cancel(rec.executor_id, task_id, rec.token)
        return self._get_stored(task_id)

    def retry(self, task_id: str) -> Task:
        """Run a FAILED or CANCELLED task again (attempt + 1)."""
        task = self._get_stored(task_id)
        check_transition(task_id, task.status, TaskStatus.PENDING)
        now = self.clock()
        fields = {"status": "PENDING", "attempt": task.attempt + 1, "error": None,
                  "finished_at": None, "started_at": None, "cancel_requested": False,
                  "queued": True, "updated_at": now, "not_before": None}
        entry = self._to_active(task, queued=True)
        entry.status, entry.attempt, entry.cancel_requested = TaskStatus.PENDING, \
            task.attempt + 1, False
        batch = WriteBatch(updates=[(task_id, fields, None)],
                           events=[self._event_for(entry, task.status, TaskStatus.PENDING, now)])
        self._commit(batch)
        self.active[task_id] = entry
        self._arm_dependencies(entry, task.depends_on, now)
        return self._get_stored(task_id)

    async def wait(self, task_ids: list[str], timeout_s: float | None = None) -> list[Task]:
        """Return once every task is finished (or ``timeout_s`` passed: then as they are)."""
        futures = []
        loop = asyncio.get_running_loop()
        for task_id in task_ids:
            if task_id in self.active:
                fut: asyncio.Future[None] = loop.create_future()
                self._waiters.setdefault(task_id, []).append(fut)
                futures.append(fut)
        if futures:
            await asyncio.wait(futures, timeout=timeout_s)
        return self.get_many(task_ids)

    # ---------------------------------------------------------------- types

    def register_type(self, blob: bytes) -> TaskTypeInfo:
        spec = self.registry.register(TaskTypeSpec.loads(blob))
        self.store.save_task_type(spec.name, spec.dumps(), spec.version)
        return spec.info()

    def type_blob(self, name: str) -> bytes:
        return self.registry.get(name).dumps()

    def types(self) -> list[TaskTypeInfo]:
        return [s.info() for s in self.registry.specs()]

    def stats(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "queues": [s.stats(now).model_dump() for s in self.schedulers.values()],
            "status_counts": self.store.status_counts(),
            "active": len(self.active),
            "stale_reports_rejected": self.stale_reports,
        }

    # ---------------------------------------------------------------- internals

    def _scheduler(self, queue: str) -> TaskScheduler:
        sched = self.schedulers.get(queue)
        if sched is None:
            sched = self.schedulers[queue] = TaskScheduler(
                queue=queue, max_queue_size=self.settings.max_queue_size,
                aging_interval_s=self.settings.aging_interval_s)
        return sched

    def _commit(self, batch: WriteBatch) -> None:
        ids = self.store.commit(batch)
        if ids and self.on_events is not None:
            for event, event_id in zip(batch.events, ids, strict=True):
                event["event_id"] = event_id
            self.on_events(batch.events)

    def _event(self, row: dict[str, Any], previous: TaskStatus | None, status: TaskStatus,
               now: float, error: str | None = None) -> dict[str, Any]:
        payload = {"task_id": row["id"], "status": status.value,
                   "previous": previous.value if previous else None,
                   "attempt": row["attempt"], "priority": row["priority"],
                   "task_type": row["task_type"], "owner": row["owner"],
                   "error": json.loads(error) if error else None, "at": now}
        return {"task_id": row["id"], "kind": "status", "payload": to_json(payload),
                "created_at": now}

    def _event_for(self, entry: _Active, previous: TaskStatus | None, status: TaskStatus,
                   now: float, error: str | None = None) -> dict[str, Any]:
        row = {"id": entry.task_id, "attempt": entry.attempt, "priority": int(entry.priority),
               "task_type": entry.task_type, "owner": entry.owner}
        return self._event(row, previous, status, now, error)


def _row_task(row: dict[str, Any]) -> Task:
    from .store.base import ts

    try:
        return Task(
            id=row["id"], name=row["name"], task_type=row["task_type"],
            status=TaskStatus(row["status"]), priority=row["priority"], queue=row["queue"],
            parameters=json.loads(row["parameters"]), attempt=0,
            max_retries=row["max_retries"], timeout_s=row["timeout_s"],
            depends_on=json.loads(row["depends_on"]), idempotency_key=row["idempotency_key"],
            tags=row["tags"], owner=row["owner"], notify=json.loads(row["notify"]),
            created_at=ts(row["created_at"]), updated_at=ts(row["updated_at"]),
        )
    except ValidationError as exc:  # pragma: no cover - rows are built from valid requests
        raise InvalidParametersError(validation_errors(exc)) from None


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _with_artifact(task: Task) -> Task:
    """Load a result that was stored as an artifact file."""
    if task.result is None and task.result_uri:
        with open(task.result_uri, encoding="utf-8") as fh:
            return task.model_copy(update={"result": json.load(fh)})
    return task


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _remove_quietly(path: str) -> None:
    import os
    import shutil

    directory = os.path.dirname(path)
    shutil.rmtree(directory, ignore_errors=True)

