"""TaskManagerCore: the single source of truth, as a plain asyncio class.

The state and every status change live in :class:`raytasks.ledger.TaskLedger`;
this module adds what clients ask for: reconciliation on start, creation with
group commit, queueing, queries, cancel, retry, update, delete and wait.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from typing import Any

from sqlalchemy import exc as sa_exc

from .errors import (
    InvalidTransitionError,
    QueueFullError,
    RaytasksError,
    TaskNotFoundError,
)
from .intake import CreationPlan, Known, plan_creation, row_to_new_task
from .ledger import TaskLedger
from .lifecycle import check_transition
from .models import (
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
from .registry import TaskTypeSpec
from .settings import Settings
from .store import WriteBatch
from .store.base import encode_tags


class TaskManagerCore(TaskLedger):
    """The TaskManager's logic: reconciliation, creation, queueing and client calls.

    ``runtime.py`` turns it into the detached ``TaskManager`` actor; tests drive
    it directly, with a clock they control.
    """

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self._intake: list[tuple[list[TaskCreateRequest], list[str],
                                 asyncio.Future[list[Task]]]] = []

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
        (outcome,) = self._create_groups([(requests, ids or _new_ids(requests))], enqueue)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def create_and_enqueue(self, requests: list[TaskCreateRequest],
                                 ids: list[str] | None = None) -> list[Task]:
        """``create(enqueue=True)`` with group commit: calls that arrive together share one
        transaction (each still succeeds or fails on its own)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Task]] = loop.create_future()
        self._intake.append((requests, ids or _new_ids(requests), future))
        if len(self._intake) == 1:
            loop.call_soon(self._flush_intake)
        return await future

    def _flush_intake(self) -> None:
        pending, self._intake = self._intake, []
        try:
            outcomes = self._create_groups([(r, i) for r, i, _ in pending], enqueue=True)
        except Exception as exc:  # the store failed: every caller hears it
            outcomes = [exc] * len(pending)
        for (_, _, future), outcome in zip(pending, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _create_groups(self, groups: list[tuple[list[TaskCreateRequest], list[str]]],
                       enqueue: bool) -> list[list[Task] | Exception]:
        all_ids = [i for _, ids in groups for i in ids]
        # A repeated id is rare (a call retried after a manager restart): look in
        # memory first, and only when the insert collides read every id back.
        known = [i for i in all_ids if i in self.active]
        try:
            return self._create_with(groups, enqueue,
                                     self.store.get_many(known) if known else {})
        except sa_exc.IntegrityError:
            return self._create_with(groups, enqueue, self.store.get_many(all_ids))

    def _create_with(self, groups: list[tuple[list[TaskCreateRequest], list[str]]],
                     enqueue: bool, by_id: dict[str, Task]) -> list[list[Task] | Exception]:
        now = self.clock()
        requests = [r for reqs, _ in groups for r in reqs]
        all_ids = {i for _, ids in groups for i in ids}
        dep_ids = sorted({d for r in requests for d in r.depends_on} - all_ids)
        known = Known(
            by_id=by_id,
            by_key=self.store.find_idempotent(
                [r.idempotency_key for r in requests if r.idempotency_key]),
            deps=self.store.get_many(dep_ids) if dep_ids else {},
            active_ids=self.active)
        batch = WriteBatch()
        plans: list[CreationPlan | Exception] = []
        admitted: dict[str, int] = {}
        for reqs, ids in groups:
            try:
                plan = plan_creation(reqs, ids, now, self.registry, self.settings, known)
                if enqueue:
                    self._admit(plan.rows, admitted)
            except RaytasksError as exc:
                plans.append(exc)
                continue
            known.claimed_keys.update(plan.claimed_keys)
            for row in plan.rows:
                row["queued"] = enqueue
                batch.inserts.append(row)
                batch.events.append(self._event(row, None, TaskStatus.PENDING, now))
            plans.append(plan)
        self._commit(batch)
        created: dict[str, Task] = {}
        for row in batch.inserts:
            task = created[row["id"]] = row_to_new_task(row)
            self.active[task.id] = self._to_active(task, queued=enqueue)
        for task in created.values():
            self._arm_dependencies(self.active[task.id], task.depends_on, now)
        return [p if isinstance(p, Exception) else
                [r if isinstance(r, Task) else created[r["id"]] for r in p.results]
                for p in plans]

    def _admit(self, rows: list[dict[str, Any]], admitted: dict[str, int]) -> None:
        """Admission control: refuse a whole call when a queue cannot take all of it."""
        need: dict[str, int] = {}
        for row in rows:
            need[row["queue"]] = need.get(row["queue"], 0) + 1
        for queue, count in need.items():
            sched = self._scheduler(queue)
            if count + admitted.get(queue, 0) > sched.free_slots():
                raise QueueFullError(queue, len(sched) + admitted.get(queue, 0),
                                     sched.max_queue_size)
        for queue, count in need.items():
            admitted[queue] = admitted.get(queue, 0) + count

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
        assert self.settings.artifact_root is not None
        shutil.rmtree(self.settings.artifact_root / task_id, ignore_errors=True)

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

    def queue_stats(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [s.stats(now).model_dump() for s in self.schedulers.values()]

    def stats(self) -> dict[str, Any]:
        return {
            "queues": self.queue_stats(),
            "status_counts": self.store.status_counts(),
            "active": len(self.active),
            "stale_reports_rejected": self.stale_reports,
        }

def _with_artifact(task: Task) -> Task:
    """Load a result that was stored as an artifact file."""
    if task.result is None and task.result_uri:
        with open(task.result_uri, encoding="utf-8") as fh:
            return task.model_copy(update={"result": json.load(fh)})
    return task


def _new_ids(requests: list[TaskCreateRequest]) -> list[str]:
    return [uuid.uuid4().hex for _ in requests]
