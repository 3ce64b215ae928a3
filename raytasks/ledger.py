"""TaskLedger: the state the TaskManager keeps, and every change of a task's status.

It holds the store, one :class:`TaskScheduler` per named queue, the leases
and the in-memory mirror of PENDING and RUNNING tasks. Executors lease work
here and report back with the lease's fencing token. Every change is
committed before it is acknowledged, and every status change is checked
against the one table in :mod:`raytasks.lifecycle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .handlers import BUILTIN_TYPES
from .lifecycle import check_transition, retry_delay_s
from .models import Lease, QueuedTask, Task, TaskErrorInfo, TaskPriority, TaskStatus
from .registry import TaskTypeRegistry
from .scheduler import TaskScheduler
from .settings import Settings
from .store import SqlTaskStore, WriteBatch
from .store.base import epoch, to_json

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


class TaskLedger:
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

    def _to_active(self, task: Task, queued: bool) -> _Active:
        return _Active(
            task_id=task.id, task_type=task.task_type, status=task.status,
            priority=task.priority, queue=task.queue, attempt=task.attempt,
            max_retries=task.max_retries, timeout_s=task.timeout_s,
            parameters=task.parameters, owner=task.owner, queued=queued,
            token=task.lease_token, created_at=epoch(task.created_at) or 0.0,
            cancel_requested=task.cancel_requested,
        )

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
                deadline=deadline, owner=entry.owner,
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


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)
