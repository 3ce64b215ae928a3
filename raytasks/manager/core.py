"""TaskManagerCore: the one authority over tasks, composed of small parts.

- :class:`~raytasks.manager.parts.Parts`: settings, store, clock and the memory of PENDING
  and RUNNING tasks (active tasks, queues and leases, dependencies, sessions, executors
  waiting), with the :class:`~raytasks.manager.pipeline.CommitPipeline` that changes it:
  plan, commit (off the event loop), then apply;
- :class:`~raytasks.manager.changes.Changes`: the plan of every change;
- :class:`~raytasks.manager.adoption.Adoption`: tasks clients wrote themselves, adopted
  exactly once (``ensure_adopted`` at the top of every call that names a task);
- :class:`~raytasks.manager.work.WorkDesk`: the executors' calls (leases, loans, reports);
- :class:`~raytasks.manager.reads.Reads` and
  :class:`~raytasks.manager.schedules.ScheduleRunner`.

Its public async methods are the manager actor's API (:class:`raytasks.protocol.ManagerApi`);
``raytasks.runtime.manager`` adds the actor's timers. Tests drive it directly, with a clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from .. import cache
from ..errors import InvalidTransitionError, RaytasksError
from ..messages import (
    Ack,
    IntakeGrant,
    LeaseRequest,
    Loan,
    NewTask,
    RenewAnswer,
    Report,
    ReportAnswer,
    WatchAnswer,
    Work,
)
from ..models import (
    AttemptInfo,
    QueueStats,
    Task,
    TaskCreateRequest,
    TaskExplanation,
    TaskPriority,
    TaskQuery,
    TaskStatus,
    TaskTypeInfo,
    TaskUpdateRequest,
)
from ..protocol import ManagerApi
from ..registry import TaskTypeSpec
from ..schedules.models import Schedule, ScheduleCreateRequest
from ..settings import Settings
from ..store import SqlTaskStore
from ..store.base import TaskRows, cpu_day, row_to_task
from ..store.sql import ACTOR_OPEN_WAIT_S
from .adoption import Adoption
from .archive import archive
from .changes import Changes
from .explain import etas, explain
from .intake import CreateRequest, DependencyEnded, Known
from .parts import Parts
from .pipeline import CommitPipeline, DuplicateKeyError
from .reads import Reads
from .schedules import ScheduleRunner
from .state import Daily, Entry, FinishedCounts, kind_of
from .work import WorkDesk

log = logging.getLogger(__name__)

#: Completed tasks a starting manager learns run times from.
HISTORY_RUNS = 2000
#: What retention reads of each finished task it deletes (whole rows only to archive):
#: ``ops.prune``'s needs.
PRUNED_COLUMNS = ("id", "owner", "status")


class TaskManagerCore:
    """The TaskManager's logic; every public coroutine is a method of the manager actor."""

    def __init__(self, settings: Settings, *, store: SqlTaskStore | None = None,
                 clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        assert settings.store_url is not None
        store = store or SqlTaskStore(settings.store_url,
                                      busy_timeout_s=settings.store_busy_timeout_s,
                                      open_wait_s=ACTOR_OPEN_WAIT_S)
        self.parts = parts = Parts(settings, store, clock)
        self.ops = Changes(parts, rng or random.Random())
        self.adoption = Adoption(parts, self.ops.arm, self.ops.ended)
        parts.pipeline = CommitPipeline(store.commit, clock, resync=self.adoption.resync)
        self.work = WorkDesk(parts, self.ops, self.adoption)
        parts.pipeline.on_back = self.work.store_back
        self.reads = Reads(parts)
        self.schedules = ScheduleRunner(parts, self.create)
        # the parts tests and the actor reach for (the same objects)
        self.settings, self.store, self.clock = settings, store, clock
        self.registry, self.active, self.queues = parts.registry, parts.active, parts.queues
        self.sessions, self.pipeline = parts.sessions, parts.pipeline
        #: executors of a type still starting or waiting for a node (the actor asks the
        #: engine; without it, none are known)
        self.starting: Callable[[str], Awaitable[int]] | None = None

    # ------------------------------------------------------------------ start

    def reconcile(self) -> dict[str, int]:
        """Rebuild memory from the store (call with an event loop running).

        Waiting work is queued again with its enqueue time and retry backoff; a
        RUNNING task gets a fresh lease deadline under its stored token, so a live
        executor keeps heartbeating and reporting, and a dead one's lease expires.
        """
        parts = self.parts
        for _name, blob, version in self.store.task_types():
            try:
                self.registry.register(TaskTypeSpec.loads(blob), version)
            except Exception:  # a type whose code no longer imports stays unknown
                continue
        now = self.clock()
        parts.counts = FinishedCounts(self.store.finished_counts())
        today = cpu_day(now)
        usage = self.store.usage_of_day(today)
        parts.cpu = Daily(today, {owner: cpu for owner, (cpu, _n) in usage.items()})
        parts.preempted = Daily(today, {owner: n for owner, (_cpu, n) in usage.items()})
        for task_type, parameters, units, seconds in self.store.recent_runs(HISTORY_RUNS):
            parts.run_times.learn(task_type, kind_of(parameters), units or 1, seconds)
        self.schedules.load()
        rows = self.store.active_rows()
        for row in rows:
            if self.queues.get(row.queue) is None:
                log.warning("task %s is in queue %r, no longer configured; serving it anyway",
                            row.id, row.queue)
                self.queues.add(row.queue)
            self.active.add(Entry.from_row(row))
        dep_ids = sorted({d for r in rows for d in r.depends_on} - {r.id for r in rows})
        stored = self.store.states(dep_ids) if dep_ids else {}
        counts = {"pending": 0, "running": 0}
        for row in rows:
            entry = self.active.get(row.id)
            assert entry is not None
            if entry.status is TaskStatus.RUNNING:
                counts["running"] += 1
                self.adoption.hold_lease(entry, row, now)
                if row.lease_request:
                    parts.answers.setdefault(row.lease_request, []).append(
                        self.ops.lease_of(entry, now))
            else:
                counts["pending"] += 1
                self.ops.arm(entry, row.depends_on,
                             {d: s for d, (s, _owner) in stored.items()})
        return counts

    # -------------------------------------------------------------- creation

    async def create(self, requests: list[TaskCreateRequest], ids: list[str],
                     enqueue: bool = False) -> list[Task]:
        """Validate, store and (with ``enqueue``) queue tasks; concurrent calls share a commit.

        Repeating a call with the same ``ids``, or a request with an idempotency key its
        owner used before, returns the stored task instead of a new one.

        Raises:
            UnknownTaskTypeError, InvalidParametersError, PayloadTooLargeError,
            QuotaExceededError, QueueFullError: nothing of the call is stored.
        """
        results = await self._create(requests, ids, enqueue)
        return [r if isinstance(r, Task) else row_to_task(r) for r in results]

    async def submit(self, calls: list[list[NewTask]],
                     enqueue: bool = True) -> list[list[Ack | Task] | RaytasksError]:
        """Many clients' creates in compact form, each call on its own, in one commit round.

        The manager's route of ``TaskManager.submit``: a new task is answered with an
        :class:`Ack` (the client knows the rest), a repeat with its stored Task, a refused
        call with its error.
        """
        async def one(call: list[NewTask]) -> list[Ack | Task] | RaytasksError:
            checked = {t.id: t.work_units or 1 for t in call
                       if t.checked_version is not None and t.task_type in self.registry
                       and self.registry.get(t.task_type).version == t.checked_version}
            try:
                results = await self._create(call, [t.id for t in call], enqueue, checked)
            except RaytasksError as exc:
                return exc
            return [r if isinstance(r, Task) else
                    Ack(r["id"], r["created_at"], r["max_retries"], r["timeout_s"])
                    for r in results]

        return list(await asyncio.gather(*(one(call) for call in calls)))

    async def _create(self, requests: Sequence[CreateRequest], ids: list[str], enqueue: bool,
                      checked: dict[str, int] | None = None) -> list[Task | dict[str, Any]]:
        await self.adoption.ensure_adopted(d for r in requests for d in r.depends_on)
        full = False
        while True:  # a repeat needs a dependency to be retried and end again meanwhile
            known = await self._known(requests, ids, full=full, enqueue=enqueue)
            try:
                results: list[Task | dict[str, Any]] = await self.pipeline.run(
                    self.ops.create(requests, ids, known, enqueue, checked=checked))
                return results
            except DuplicateKeyError:
                if full:
                    raise
                full = True  # an id or key collided: read what the store holds under them
            except DependencyEnded:
                pass  # it is in the store now: the next read finds it

    async def _known(self, requests: Sequence[CreateRequest], ids: list[str],
                     full: bool, enqueue: bool = True) -> Known:
        """What the store holds under a call's ids, keys and dependencies, and the cached
        results its tasks take (read off-loop).

        A repeated id is rare (a call Ray retried after a restart): it is looked up in
        memory, and in the store only after an insert collided (``full``).
        """
        by_id = ids if full else [i for i in ids if i in self.active]
        scopes: dict[str, list[str]] = {}
        for r in requests:
            if r.idempotency_key:
                scopes.setdefault(r.owner or "", []).append(r.idempotency_key)
        deps = sorted({d for r in requests for d in r.depends_on if d not in self.active}
                      - set(ids))
        cache_keys = {i: k for i, r in zip(ids, requests, strict=True)
                      if r.cache is not False and (k := self.parts.intake.cache_key(r))}
        if not (by_id or scopes or deps or cache_keys):
            return Known()  # nothing to read: no thread hop, so concurrent calls group

        def read() -> Known:
            known = Known(cache_keys=cache_keys)
            for task_id, req in zip(ids, requests, strict=True):
                # a dependency may change the inputs; a task not queued waits for its enqueue
                if task_id in cache_keys and enqueue and not req.depends_on:
                    found = cache.hit(self.store.cached(
                        cache_keys[task_id], req.owner, self.settings.cache_across_owners,
                        cache.CANDIDATES), self.settings, req.owner)
                    if found is not None:
                        known.cache_hits[task_id] = found
            if by_id:
                known.by_id = self.store.get_many(by_id)
            for scope, keys in scopes.items():
                for key, task in self.store.find_idempotent(scope, keys).items():
                    known.by_key[(scope, key)] = task
            if deps:
                known.deps, known.read_deps = self.store.states(deps), set(deps)
            return known

        return await asyncio.to_thread(read)

    async def enqueue(self, task_id: str, priority: TaskPriority | None = None) -> Task:
        """Queue a created task (``TaskQueueManager.submit_task``); repeating it is harmless."""
        await self.adoption.ensure_adopted([task_id])
        if task_id not in self.active:
            task = await self.reads.stored(task_id)
            raise InvalidTransitionError(task_id, task.status.value, "queued")
        await self.pipeline.run(self.ops.enqueue(task_id, priority))
        return await self.reads.stored(task_id)

    # ------------------------------------------- what clients write themselves

    def grant(self, client: str) -> IntakeGrant | None:
        """Room in each queue for a client that commits its own plain submits
        (:meth:`Adoption.grant`)."""
        return self.adoption.grant(client)

    async def adopt(self, client: str, task_ids: list[str],
                    queues: dict[str, int] | None = None) -> None:
        """A client's notice of tasks it wrote: its plain submits (PENDING) and its lent
        runs (RUNNING, or ended by the client's own fenced commit). Memory follows the
        store for each; repeating it is harmless (a task is adopted once).

        ``queues`` counts its new tasks per queue: that much of the client's held room is
        taken back at once, before a renewal the client asked for after this notice
        replaces it.
        """
        for queue, count in (queues or {}).items():
            self.parts.intake.reservations.used(client, queue, count)
        await self.adoption.adopt(task_ids)

    async def sweep_intake(self) -> None:
        await self.adoption.sweep()

    def lend(self, client: str, task_type: str) -> Loan | None:
        """An idle executor of ``task_type``, lent to ``client`` (:meth:`WorkDesk.lend`)."""
        loan = self.work.lend(task_type)
        if loan is not None:
            log.debug("executor %s lent to client %s", loan.executor_id, client)
        return loan

    # ------------------------------------------------------------ executors

    async def report_and_lease(self, request: LeaseRequest) -> Work:
        return await self.work.report_and_lease(request)

    async def report(self, reports: list[Report]) -> ReportAnswer:
        return await self.work.report(reports)

    async def renew(self, items: list[tuple[str, int]]) -> RenewAnswer:
        return await self.work.renew(items)

    async def expire_leases(self) -> list[str]:
        return await self.work.expire_leases()

    def hand_back(self, executor_ids: list[str], left_s: float | None) -> list[str]:
        """Hand back what ``executor_ids`` run: their node is draining and goes away in
        ``left_s`` (:meth:`WorkDesk.hand_back`). The task ids."""
        return self.work.hand_back(executor_ids, left_s)

    def preempt(self) -> list[str]:
        """Preempt the running attempts that deadlines need; their task ids."""
        return [p.victim.task_id for p in self.work.preempt()]

    async def attempts(self, task_id: str) -> list[AttemptInfo]:
        """The attempts of ``task_id`` that reported, in order (how each ended)."""
        return await asyncio.to_thread(self.store.attempts, task_id)

    async def save_checkpoint(self, task_id: str, token: int, state: Any) -> bool:
        return await self.work.save_checkpoint(task_id, token, state)

    async def record_model(self, task_id: str, token: int, registry: str, model_id: str,
                           sha256: str) -> bool:
        return await self.work.record_model(task_id, token, registry, model_id, sha256)

    async def model_digest(self, task_id: str, registry: str, model_id: str) -> str | None:
        return await self.work.model_digest(task_id, registry, model_id)

    async def checkpoint(self, task_id: str) -> Any:
        return await asyncio.to_thread(self.store.checkpoint, task_id)

    # ----------------------------------------------------------- waiting

    async def watch(self, session_id: str, task_ids: list[str]) -> WatchAnswer:
        """Watch tasks for a client's session; those already finished are named now."""
        stored = await self.adoption.ensure_adopted(task_ids)
        self.sessions.watch(session_id, [t for t in task_ids if t in self.active])
        rest = [t for t in task_ids if t not in self.active]
        if any(t not in stored for t in rest):  # adopted, and ended, meanwhile
            stored = await asyncio.to_thread(self.store.states, rest)
        return WatchAnswer(finished=[t for t in rest if t in stored],
                           missing=[t for t in rest if t not in stored])

    async def finished_ids(self, session_id: str, timeout_s: float = 10.0) -> list[str] | None:
        """A client's stream of finished tasks (one long poll for all it waits on): the
        ids; the client reads the tasks (from the store where it reaches it, else
        ``get_many``). None when the session is unknown (this manager restarted): watch
        again."""
        if not self.sessions.known(session_id):
            return None
        return await self.sessions.next(session_id, timeout_s)

    async def wait(self, task_ids: list[str], timeout_s: float | None = None) -> list[Task]:
        """Return once every task is finished (or ``timeout_s`` passed: then as they are).

        One long poll for a client without a session of its own (the facades use
        ``watch``/``finished_ids``): a one-off session that ends with the call.
        """
        await self.adoption.ensure_adopted(task_ids)
        session = f"wait:{uuid.uuid4().hex}"
        waiting = {t for t in task_ids if t in self.active}
        self.sessions.watch(session, waiting)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while waiting:
                remaining = 3600.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    break
                waiting -= set(await self.sessions.next(session, min(remaining, 60.0)))
        finally:
            self.sessions.drop(session)
        return await self.reads.get_many(task_ids)

    # ----------------------------------------------------------- client calls

    async def get(self, task_id: str) -> Task:
        return await self.reads.get(task_id)

    async def get_many(self, task_ids: list[str]) -> list[Task]:
        return await self.reads.get_many(task_ids)

    async def query(self, query: TaskQuery) -> TaskRows:
        """A page of tasks, the active ones with their predicted start and finish."""
        page = await self.reads.query(query)
        active = [e for t in page.items if (e := self.active.get(t.id)) is not None]
        if active:
            predicted = etas(self.parts, active, self.clock())
            for task in page.items:
                if task.id in predicted:
                    start, finish = predicted[task.id]
                    task.predicted_start = datetime.fromtimestamp(start, tz=UTC)
                    task.predicted_finish = datetime.fromtimestamp(finish, tz=UTC)
        return page

    async def explain(self, task_id: str) -> TaskExplanation:
        """Why the task is where it is, and when it should start and finish.

        Raises:
            TaskNotFoundError: no such task.
        """
        await self.adoption.ensure_adopted([task_id])
        entry = self.active.get(task_id)
        if entry is None:
            task = await self.reads.stored(task_id)
            return explain(self.parts, None, task_id, task.status, self.clock(), self.ops.limit)
        progress = None
        if entry.status is TaskStatus.RUNNING:
            row = await asyncio.to_thread(self.store.get_progress, task_id)
            progress = json.loads(row["payload"])["percentage"] if row else None
        starting = await self.starting(entry.task_type) if self.starting else 0
        return explain(self.parts, entry, task_id, entry.status, self.clock(), self.ops.limit,
                       progress, starting)

    def status_counts(self, owner: str | None = None) -> dict[str, int]:
        return self.reads.status_counts(owner)

    async def update(self, task_id: str, request: TaskUpdateRequest) -> Task:
        await self.adoption.ensure_adopted([task_id])
        stored = await self.reads.stored(task_id)
        await self.pipeline.run(self.ops.update(stored, request))
        return await self.reads.stored(task_id)

    async def delete(self, task_id: str) -> None:
        """Delete a finished task, its events' subject and its artifacts."""
        # a lent run's end that no notice told yet is counted by its claim, before the
        # delete uncounts it
        await self.adoption.adopt([task_id])
        stored = await self.reads.stored(task_id)
        # the row goes in the round's commit; the call answers once the files are gone too
        removed = await self.pipeline.run(self.ops.delete(stored))
        await removed

    async def cancel(self, task_id: str) -> Task:
        """Cancel a PENDING task at once; ask a RUNNING one to stop (forced after a grace).

        A RUNNING task whose completion is already in flight ends COMPLETED.
        """
        await self.adoption.ensure_adopted([task_id])
        if task_id not in self.active:
            task = await self.reads.stored(task_id)
            raise InvalidTransitionError(task_id, task.status.value, "CANCELLED")
        await self.pipeline.run(self.ops.cancel(task_id))
        return await self.reads.stored(task_id)

    async def retry(self, task_id: str) -> Task:
        """Run a FAILED or CANCELLED task again (attempt + 1)."""
        stored = await self.reads.stored(task_id)
        deps = await self.adoption.ensure_adopted(stored.depends_on)
        await self.pipeline.run(self.ops.retry(stored, {d: s for d, (s, _o) in deps.items()}))
        return await self.reads.stored(task_id)

    # -------------------------------------------------------- schedules, logs

    async def create_schedule(self, request: ScheduleCreateRequest) -> Schedule:
        return await self.schedules.create(request)

    def get_schedule(self, schedule_id: str) -> Schedule:
        return self.schedules.get(schedule_id)

    def list_schedules(self, owner: str | None = None) -> list[Schedule]:
        return self.schedules.of(owner)

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        return await self.schedules.set_paused(schedule_id, True)

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        return await self.schedules.set_paused(schedule_id, False)

    async def delete_schedule(self, schedule_id: str) -> None:
        await self.schedules.delete(schedule_id)

    def next_runs(self, schedule_id: str, count: int = 5) -> list[dict[str, object]]:
        """The next ``count`` runs of a schedule (``at``, ``provisional``)."""
        return self.schedules.next_runs(schedule_id, count)

    async def logs(self, task_id: str, attempt: int | None = None, after_id: int = 0,
                   limit: int = 1000) -> list[dict[str, Any]]:
        """A task's log lines (of one attempt, or all), oldest first, after ``after_id``.

        Raises:
            TaskNotFoundError: no such task.
        """
        _status, rows = await self.reads.log_page(task_id, attempt, after_id, limit)
        return rows

    async def log_page(self, task_id: str, attempt: int | None = None, after_id: int = 0,
                       limit: int = 1000) -> tuple[TaskStatus, list[dict[str, Any]]]:
        return await self.reads.log_page(task_id, attempt, after_id, limit)

    # ------------------------------------------------------------------ types

    async def register_type(self, blob: bytes) -> TaskTypeInfo:
        spec = TaskTypeSpec.loads(blob)
        version = self.registry.next_version(spec.name)
        await asyncio.to_thread(self.store.save_task_type, spec.name, blob, version)
        info = self.registry.register(spec, version).info()
        self.ops.limits.clear()
        # an executor lent to a client runs the version of its loan: end those loans, so
        # that no task submitted after this runs the code replaced
        await self.end_loans(self.work.loans_of(spec.name))
        return info

    async def end_loans(self, loans: list[tuple[str, str]]) -> None:
        """End these loans (executor, loan id) at their executors (the runtime's)."""

    def type_blob(self, name: str) -> bytes:
        return self.registry.get(name).dumps()

    def types(self) -> list[TaskTypeInfo]:
        return [s.info() for s in self.registry.specs()]

    def queue_stats(self) -> list[QueueStats]:
        return self.queues.stats(self.clock())

    async def stats(self) -> dict[str, Any]:
        return {
            "queues": [q.model_dump() for q in self.queue_stats()],
            "status_counts": self.status_counts(),
            "active": len(self.active),
            "stale_reports_rejected": self.ops.stale_reports,
            "commit_rounds": self.pipeline.rounds,
            "commits": self.pipeline.commits,
            "commit_ms_avg": 1000 * self.pipeline.commit_s / max(1, self.pipeline.commits),
            "commit_wait_ms_avg": 1000 * self.pipeline.wait_s / max(1, self.pipeline.commits),
        }

    async def prune(self, batch: int = 1000) -> dict[str, int]:
        """Retention: finished tasks past ``task_retention_s`` (archived to Parquet first
        when ``archive_dir`` is set, their artifacts deleted) and events past
        ``event_retention_s`` that every delivery cursor has passed.

        Tasks go in batches of ``batch`` rows, whole only to archive them (else the
        columns a delete needs): with 5,000 whole rows, the manager's heap rose at each
        prune to hold them (``raytasks bench endurance``: 219 -> 318 MB over 300,000
        tasks, against 230 -> 276 MB with 1,000)."""
        pruned = {"tasks": 0, "events": 0}
        now = self.clock()
        columns = None if self.settings.archive_dir is not None else PRUNED_COLUMNS
        if self.settings.task_retention_s is not None:
            while True:
                rows = await asyncio.to_thread(self.store.finished_before,
                                               now - self.settings.task_retention_s, batch,
                                               columns)
                rows = [r for r in rows if not self.parts.deps.has_dependents(r["id"])]
                if not rows:
                    break
                if self.settings.archive_dir is not None:
                    await asyncio.to_thread(archive, rows, self.settings.archive_dir, now)
                pruned["tasks"] += await self.pipeline.run(self.ops.prune(rows))
                if len(rows) < batch:
                    break
        if self.settings.event_retention_s is not None:
            cutoff = now - self.settings.event_retention_s
            pruned["events"] = await asyncio.to_thread(self.store.prune_events, cutoff)
            pruned["log_lines"] = await asyncio.to_thread(self.store.logs.prune, cutoff)
        return pruned

    def close(self) -> None:
        self.pipeline.close()
        self.store.close()


def _is_the_manager_api(core: TaskManagerCore) -> ManagerApi:
    """The core is the manager's API, method for method: mypy checks it here."""
    return core
