"""TaskManagerCore: the single source of truth, composed of small parts.

- :class:`~raytasks.manager.state.ActiveTasks`: memory of PENDING and RUNNING tasks;
- :class:`~raytasks.manager.queues.Queues`: the named queues and their leases;
- :class:`~raytasks.manager.deps.Dependencies`: who waits for whom;
- :class:`~raytasks.manager.sessions.Sessions`: clients waiting for tasks (one stream each);
- :class:`~raytasks.manager.waiters.Arrivals`: executors waiting for work;
- :class:`~raytasks.manager.intake.Intake`: validation, tenancy and quotas of creates;
- :class:`~raytasks.manager.pipeline.CommitPipeline`: plan, commit (off the event loop),
  then apply — every change goes through it.

``runtime.py`` turns this class into the detached ``manager`` actor; its public
async methods are the actor's API. Tests drive it directly, with a clock.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InvalidTransitionError, RaytasksError, TaskNotFoundError
from ..handlers import BUILTIN_TYPES
from ..messages import (
    Ack,
    IntakeGrant,
    Lease,
    LeaseRequest,
    NewTask,
    RenewAnswer,
    Report,
    ReportAnswer,
    WatchAnswer,
)
from ..models import (
    QueueStats,
    Task,
    TaskCreateRequest,
    TaskPriority,
    TaskQuery,
    TaskStatus,
    TaskTypeInfo,
    TaskUpdateRequest,
)
from ..registry import TaskTypeRegistry, TaskTypeSpec
from ..schedules.models import Schedule, ScheduleCreateRequest
from ..settings import Settings
from ..store import SqlTaskStore
from ..store.base import ActiveRow, TaskRows, with_artifact
from .archive import archive
from .changes import Changes
from .deps import Dependencies
from .intake import CreateRequest, DependencyEnded, Intake, Known, row_to_new_task
from .pipeline import CommitPipeline, DuplicateKeyError
from .queues import Queues
from .schedules import ScheduleRunner
from .sessions import Sessions
from .state import ActiveTasks, Entry, FinishedCounts
from .waiters import Arrivals

log = logging.getLogger(__name__)

EventSink = Callable[[list[dict[str, Any]]], None]
CancelSink = Callable[[str, str, int], None]


#: How many report_and_lease answers are remembered for retried calls.
ANSWERS_KEPT = 1024
#: Seconds after its last call for work an executor is no longer offered for direct runs.
EXECUTOR_SEEN_S = 5.0


class TaskManagerCore:
    """The TaskManager's logic; every public coroutine is a method of the manager actor."""

    def __init__(self, settings: Settings, *, store: SqlTaskStore | None = None,
                 clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        assert settings.store_url is not None
        self.settings = settings
        self.store = store or SqlTaskStore(settings.store_url,
                                           busy_timeout_s=settings.store_busy_timeout_s)
        self.clock = clock
        self.registry = TaskTypeRegistry(BUILTIN_TYPES)
        self.active = ActiveTasks()
        self.counts = FinishedCounts()
        self.queues = Queues(settings)
        self.deps = Dependencies()
        self.sessions = Sessions()
        self.schedules = ScheduleRunner(self)
        self.arrivals = Arrivals()
        self.intake = Intake(self.registry, settings, self.queues, self.active)
        self.pipeline = CommitPipeline(self.store.commit, clock, resync=self._resync)
        self.answers: OrderedDict[str, list[Lease]] = OrderedDict()
        self.on_events: EventSink | None = None
        self.on_cancel: CancelSink | None = None
        self.ops = Changes(self, rng or random.Random())
        #: tasks being adopted from the direct intake, by id (resolved once in memory)
        self._adopting: dict[str, asyncio.Future[None]] = {}
        self._intake_seen: set[str] = set()
        #: per task type, the executors that asked it for work, and when they last did
        self._executors: dict[str, dict[str, float]] = {}
        self.node_id: str | None = None  # the Ray node (set by the actor)

    # ------------------------------------------------------------------ start

    def reconcile(self) -> dict[str, int]:
        """Rebuild memory from the store (call with an event loop running).

        Waiting work is queued again with its enqueue time and retry backoff; a
        RUNNING task gets a fresh lease deadline under its stored token, so a live
        executor keeps heartbeating and reporting, and a dead one's lease expires.
        """
        for _name, blob, version in self.store.task_types():
            try:
                self.registry.register(TaskTypeSpec.loads(blob), version)
            except Exception:  # a type whose code no longer imports stays unknown
                continue
        now = self.clock()
        self.counts = FinishedCounts(self.store.finished_counts())
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
                self._hold_lease(entry, row, now)
                if row.lease_request:
                    self.answers.setdefault(row.lease_request, []).append(self.lease_of(entry))
            else:
                counts["pending"] += 1
                self.ops.arm(entry, row.depends_on,
                             {d: s for d, (s, _owner) in stored.items()})
        return counts

    def _hold_lease(self, entry: Entry, row: ActiveRow, now: float) -> None:
        """Hold the lease of a RUNNING task read from the store (a restart, a reload, a
        client's direct run), under its stored token, for a full TTL from ``now``."""
        self.queues[entry.queue].grant(entry.queued_item(), entry.token,
                                       row.lease_executor or "recovered",
                                       now + self.settings.lease_ttl_s)

    def lease_of(self, entry: Entry) -> Lease:
        return Lease(task_id=entry.task_id, task_type=entry.task_type, token=entry.token,
                     attempt=entry.attempt, parameters=entry.parameters,
                     timeout_s=entry.timeout_s,
                     deadline=self.clock() + self.settings.lease_ttl_s, owner=entry.owner,
                     handler_version=self.registry.get(entry.task_type).version
                     if entry.task_type in self.registry else 0)

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
        return [r if isinstance(r, Task) else row_to_new_task(r) for r in results]

    async def _create(self, requests: Sequence[CreateRequest], ids: list[str], enqueue: bool,
                      checked: dict[str, int] | None = None,
                      watch: str | None = None) -> list[Task | dict[str, Any]]:
        full, adopted = False, False
        while True:  # a repeat needs a dependency to be retried and end again meanwhile
            known = await self._known(requests, ids, full=full)
            unadopted = [d for d, (status, _owner) in known.deps.items()
                         if not status.finished and d not in self.active]
            if unadopted and not adopted:  # committed by a client, its notice not here yet
                await self._adopt(unadopted)
                adopted = True
                continue
            try:
                results: list[Task | dict[str, Any]] = await self.pipeline.run(
                    self.ops.create(requests, ids, known, enqueue, checked=checked,
                                    watch=watch))
                return results
            except DuplicateKeyError:
                if full:
                    raise
                full = True  # an id or key collided: read what the store holds under them
            except DependencyEnded:
                pass  # it is in the store now: the next read finds it

    async def submit(self, calls: list[list[NewTask]], enqueue: bool = True,
                     watch: str | None = None) -> list[list[Ack | Task] | RaytasksError]:
        """Many clients' creates in compact form, each call on its own, in one commit round.

        The fast path of ``TaskManager.submit``: a new task is answered with an
        :class:`Ack` (the client knows the rest), a repeat with its stored Task, a refused
        call with its error. ``watch`` registers the new tasks in the client's session.
        """
        async def one(call: list[NewTask]) -> list[Ack | Task] | RaytasksError:
            checked = {t.id: t.work_units or 1 for t in call
                       if t.checked_version is not None and t.task_type in self.registry
                       and self.registry.get(t.task_type).version == t.checked_version}
            try:
                results = await self._create(call, [t.id for t in call], enqueue, checked,
                                             watch)
            except RaytasksError as exc:
                return exc
            return [r if isinstance(r, Task) else
                    Ack(r["id"], r["created_at"], r["max_retries"], r["timeout_s"])
                    for r in results]

        return list(await asyncio.gather(*(one(call) for call in calls)))

    async def watch(self, session_id: str, task_ids: list[str]) -> WatchAnswer:
        """Watch tasks for a client's session; those already finished are answered now."""
        waiting = [t for t in task_ids if t in self.active]
        self.sessions.watch(session_id, waiting)
        rest = [t for t in task_ids if t not in self.active]
        found = await asyncio.to_thread(self.store.get_many, rest) if rest else {}
        live = [t for t, task in found.items() if not task.status.finished]
        if live:  # a client committed it, its notice not here yet (or adopted meanwhile)
            await self._adopt([t for t in live if t not in self.active])
            watched = [t for t in live if t in self.active]
            self.sessions.watch(session_id, watched)
            ended = [t for t in live if t not in self.active]  # finished meanwhile
            for task_id in watched:
                del found[task_id]
            if ended:
                found.update(await asyncio.to_thread(self.store.get_many, ended))
            rest = [t for t in rest if t not in watched]
        loaded = await asyncio.to_thread(lambda: [with_artifact(t) for t in found.values()])
        return WatchAnswer(finished=loaded, missing=[t for t in rest if t not in found])

    async def finished(self, session_id: str, timeout_s: float = 10.0) -> list[Task] | None:
        """A client's stream of finished tasks (one long poll for all it waits on).

        None when the session is unknown (this manager restarted): watch again.
        """
        ready = await self.finished_ids(session_id, timeout_s)
        if ready is None:
            return None
        return await asyncio.to_thread(self._get_many_present, ready) if ready else []

    async def finished_ids(self, session_id: str, timeout_s: float = 10.0) -> list[str] | None:
        """``finished``, the ids only: for a client that reads its store itself (its
        direct intake's), so the manager neither reads nor sends the tasks."""
        if not self.sessions.known(session_id):
            return None
        return await self.sessions.next(session_id, timeout_s)

    def _get_many_present(self, task_ids: list[str]) -> list[Task]:
        found = self.store.get_many(task_ids)
        return [with_artifact(found[t]) for t in task_ids if t in found]

    async def _known(self, requests: Sequence[CreateRequest], ids: list[str],
                     full: bool) -> Known:
        """What the store holds under a call's ids, keys and dependencies (read off-loop).

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
        if not (by_id or scopes or deps):
            return Known()  # nothing to read: no thread hop, so concurrent calls group

        def read() -> Known:
            known = Known()
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
        if not await self._is_active(task_id):
            task = await self._stored(task_id)
            raise InvalidTransitionError(task_id, task.status.value, "queued")
        await self.pipeline.run(self.ops.enqueue(task_id, priority))
        return await self._stored(task_id)

    # --------------------------------------------------------- direct intake

    def grant(self, client: str) -> IntakeGrant | None:
        """Room in each queue for a client that commits its own tasks (the direct
        intake), held until the grant expires; None when this store is not shared.

        A new grant replaces the client's last one: ask again before it expires.
        """
        url = self.settings.store_url
        if not self.settings.direct_intake or url is None or ":memory:" in url:
            return None
        now = self.clock()
        held = self.intake.reservations
        credits = {}
        for name in self.queues.names():
            free = self.queues[name].free_slots() - held.held(name, now, but=client)
            # a quarter of the room left at most: a queue near full takes every create
            # through the manager, which refuses exactly at max_queue_size
            credits[name] = max(0, min(self.settings.intake_credits, free // 4))
        ttl = self.settings.intake_grant_ttl_s
        held.hold(client, credits, now + ttl)
        types = {spec.name: (spec.version if spec.params_model is not None else None,
                             *self.intake.defaults(spec.name))
                 for spec in self.registry.specs()}
        return IntakeGrant(store_url=url, credits=credits, ttl_s=ttl, types=types,
                           max_parameters_bytes=self.settings.max_parameters_bytes,
                           node_id=self.node_id, direct=self._direct_types(),
                           lease_ttl_s=self.settings.lease_ttl_s)

    def _direct_types(self) -> dict[str, tuple[int, tuple[str, ...]]]:
        """Types a client may run on an idle executor itself: known, without a limit on
        how many run at once (which only the lease enforces), with executors asking for
        work in the last few seconds (an executor's long poll renews every second)."""
        since = time.monotonic() - EXECUTOR_SEEN_S
        out = {}
        for task_type, seen in self._executors.items():
            for executor_id in [e for e, at in seen.items() if at < since]:
                del seen[executor_id]
            if seen and task_type in self.registry and self.ops.limit(task_type) is None:
                out[task_type] = (self.registry.get(task_type).version, tuple(seen))
        return out

    async def adopt(self, client: str, task_ids: list[str], session: str | None = None,
                    queues: dict[str, int] | None = None,
                    ended: list[tuple[str, int]] | None = None,
                    reports: list[Report] | None = None) -> None:
        """A client committed these tasks itself: take them into memory and queue them.

        Repeating it is harmless: a task is adopted once (its intake row is claimed).
        ``session`` puts them in the client's wait stream; ``queues`` counts them per queue:
        that much of the client's held room is taken back at once, before a renewal the
        client asked for after this notice replaces it.

        Tasks the client committed RUNNING (a direct run on an idle executor) are held
        under their lease. ``ended``: such tasks, by lease token, whose completion the
        client committed (now or in an earlier notice); ``reports``: how the others' runs
        ended (a run refused, failed or cancelled), applied as an executor's are.
        """
        if ended or reports:
            task_ids = [*task_ids, *(t for t, _token in ended or ()),
                        *(r.task_id for r in reports or ())]
        for queue, count in (queues or {}).items():
            self.intake.reservations.used(client, queue, count)
        adopted = False
        try:
            await self._adopt(task_ids)
            adopted = True
        finally:  # a claim that failed leaves them to the sweep: their end reaches the stream
            if session is not None:
                self.sessions.watch(session, task_ids)
                for task_id in task_ids if adopted else ():
                    if task_id not in self.active:  # adopted earlier, and already finished
                        self.sessions.finished(task_id)
        if ended:
            await self.pipeline.run(self.ops.ended(ended))
        if reports:
            await self.report(reports)

    async def sweep_intake(self) -> None:
        """Adopt tasks clients committed whose notice never came (seen on two sweeps)."""
        rows = await asyncio.to_thread(self.store.intake_rows, 1000)
        seen = {task_id for task_id, _at in rows}
        due = [task_id for task_id in seen if task_id in self._intake_seen]
        self._intake_seen = seen - set(due)
        if due:
            log.info("adopting %d task(s) whose intake notice did not come", len(due))
            await self._adopt(due)

    async def _adopt(self, task_ids: list[str]) -> None:
        """Claim the intake rows of ``task_ids`` and hold the claimed tasks in memory.

        Concurrent adoptions of one task (a notice, a sweep, a lookup) wait for the one
        that claims it; a task whose row is gone was adopted before.
        """
        others = {id(f): f for t in task_ids if (f := self._adopting.get(t)) is not None}
        todo = [t for t in dict.fromkeys(task_ids) if t not in self._adopting]
        if todo:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for task_id in todo:
                self._adopting[task_id] = done
            try:
                rows, ended = await asyncio.to_thread(self._claim, todo)
                for status, owner in ended:  # a direct run that ended before its notice
                    self.counts.add(owner, status)
                for row in rows:
                    if row.id in self.active:  # loaded from the store on a restart
                        continue
                    entry = Entry.from_row(row)
                    self.active.add(entry)
                    if entry.status is TaskStatus.RUNNING:  # a client runs it directly
                        self._hold_lease(entry, row, self.clock())
                    else:
                        self.ops.arm(entry, row.depends_on, {})
            finally:
                for task_id in todo:
                    del self._adopting[task_id]
                done.set_result(None)
        if others:
            await asyncio.gather(*others.values())

    def _claim(self, task_ids: list[str]
               ) -> tuple[list[ActiveRow], list[tuple[TaskStatus, str | None]]]:
        """The claimed tasks' rows, and the states of those that already ended."""
        claimed = self.store.claim_intake(task_ids)
        rows = self.store.active_rows(claimed) if claimed else []
        over = set(claimed) - {row.id for row in rows}
        return rows, list(self.store.states(sorted(over)).values()) if over else []

    async def _is_active(self, task_id: str) -> bool:
        """Whether the task is PENDING or RUNNING: adopted first if a client committed it."""
        if task_id in self.active:
            return True
        states = await asyncio.to_thread(self.store.states, [task_id])
        if task_id in states and not states[task_id][0].finished:
            await self._adopt([task_id])
        return task_id in self.active

    # ------------------------------------------------------------ executors

    async def report_and_lease(self, request: LeaseRequest) -> list[Lease]:
        """An executor's one round trip per batch: report what it ran, lease what is next.

        Idempotent by ``request.request_id``: a call Ray retries after a manager restart
        gets the leases granted to the first one (they are in the store), no new ones.
        """
        if request.request_id in self.answers:
            return self.answers[request.request_id]
        now = time.monotonic()
        for task_type in request.task_types:
            self._executors.setdefault(task_type, {})[request.executor_id] = now
        deadline = now + request.wait_s
        leases: list[Lease] = await self.pipeline.run(self.ops.report_and_lease(request))
        while True:
            remaining = deadline - time.monotonic()
            if leases or remaining <= 0:
                return leases
            await self.arrivals.wait(request.task_types, min(remaining, 1.0))
            leases = await self.pipeline.run(self.ops.lease(request))

    async def report(self, reports: list[Report]) -> ReportAnswer:
        """Apply executor outcomes; a report under a stale lease token is rejected."""
        answer: ReportAnswer = await self.pipeline.run(self.ops.reports(reports))
        return answer

    def renew(self, items: list[tuple[str, int]]) -> RenewAnswer:
        """Heartbeats: extend leases (memory only). Says which are lost or to be cancelled."""
        deadline = self.clock() + self.settings.lease_ttl_s
        lost, cancel = [], []
        for task_id, token in items:
            entry = self.active.get(task_id)
            sched = self.queues.get(entry.queue) if entry is not None else None
            if entry is None or sched is None or not sched.renew(task_id, token, deadline):
                lost.append(task_id)
            elif entry.cancel_requested:
                cancel.append(task_id)
        return RenewAnswer(lost=lost, cancel=cancel)

    async def expire_leases(self) -> list[str]:
        """Retry or fail (as lost) every task whose lease ran out. Returns their ids."""
        if not self.queues.expired(self.clock()):
            return []
        answer: ReportAnswer = await self.pipeline.run(self.ops.expired())
        return answer.accepted

    async def save_checkpoint(self, task_id: str, token: int, state: Any) -> bool:
        """Persist a running attempt's checkpoint; False if the attempt lost its lease."""
        saved: bool = await self.pipeline.run(self.ops.checkpoint(task_id, token, state))
        return saved

    async def checkpoint(self, task_id: str) -> Any:
        return await asyncio.to_thread(self.store.checkpoint, task_id)

    # ----------------------------------------------------------- client calls

    async def get(self, task_id: str) -> Task:
        return await asyncio.to_thread(self._get_with_artifact, task_id)

    def _get_with_artifact(self, task_id: str) -> Task:
        task = self.store.get(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        return with_artifact(task)

    async def _stored(self, task_id: str) -> Task:
        task = await asyncio.to_thread(self.store.get, task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        return task

    async def get_many(self, task_ids: list[str]) -> list[Task]:
        return await asyncio.to_thread(self._get_many, task_ids)

    def _get_many(self, task_ids: list[str]) -> list[Task]:
        found = self.store.get_many(task_ids)
        missing = [t for t in task_ids if t not in found]
        if missing:
            raise TaskNotFoundError(missing[0])
        return [with_artifact(found[t]) for t in task_ids]

    async def query(self, query: TaskQuery) -> TaskRows:
        """A page of tasks. Its total comes from the counters when the filters are only
        owner and status (no count query at all), else from a capped count."""
        counted = not (query.task_type or query.priority or query.queue or query.tags
                       or query.created_after or query.created_before or query.text)
        page: TaskRows = await asyncio.to_thread(self.store.query, query, count=not counted)
        if counted:
            counts = self.status_counts(query.owner)
            statuses = [s.value for s in query.status] if query.status else list(counts)
            page = page._replace(total=sum(counts.get(s, 0) for s in statuses))
        return page

    def status_counts(self, owner: str | None = None) -> dict[str, int]:
        """Tasks by status (of one owner, or all), from memory: no scan of the store."""
        owners: set[str | None] | None = None if owner is None else {owner}
        counts = self.counts.by_status(owners)
        for status, by_owner in ((TaskStatus.PENDING, self.active.pending),
                                 (TaskStatus.RUNNING, self.active.running)):
            n = sum(v for o, v in by_owner.items() if owners is None or o in owners)
            if n:
                counts[status.value] = n
        return dict(counts)

    async def update(self, task_id: str, request: TaskUpdateRequest) -> Task:
        await self._is_active(task_id)
        stored = await self._stored(task_id)
        await self.pipeline.run(self.ops.update(stored, request))
        return await self._stored(task_id)

    async def delete(self, task_id: str) -> None:
        """Delete a finished task, its events' subject and its artifacts."""
        await self._adopt([task_id])  # a direct run's end not told yet is counted first
        stored = await self._stored(task_id)
        # the row goes in the round's commit; the call answers once the files are gone too
        removed = await self.pipeline.run(self.ops.delete(stored))
        await removed

    async def cancel(self, task_id: str) -> Task:
        """Cancel a PENDING task at once; ask a RUNNING one to stop (forced after a grace).

        A RUNNING task whose completion is already in flight ends COMPLETED.
        """
        if not await self._is_active(task_id):
            task = await self._stored(task_id)
            raise InvalidTransitionError(task_id, task.status.value, "CANCELLED")
        await self.pipeline.run(self.ops.cancel(task_id))
        return await self._stored(task_id)

    async def retry(self, task_id: str) -> Task:
        """Run a FAILED or CANCELLED task again (attempt + 1)."""
        stored = await self._stored(task_id)
        deps = [d for d in stored.depends_on if d not in self.active]
        states = await asyncio.to_thread(self.store.states, deps) if deps else {}
        await self.pipeline.run(self.ops.retry(stored, {d: s for d, (s, _o) in states.items()}))
        return await self._stored(task_id)

    async def wait(self, task_ids: list[str], timeout_s: float | None = None) -> list[Task]:
        """Return once every task is finished (or ``timeout_s`` passed: then as they are).

        One long poll for a client without a session of its own (the facades use
        ``watch``/``finished``): a one-off session that ends with the call.
        """
        session = f"wait:{uuid.uuid4().hex}"
        missing = [t for t in task_ids if t not in self.active]
        states = await asyncio.to_thread(self.store.states, missing) if missing else {}
        await self._adopt([t for t, (status, _o) in states.items() if not status.finished])
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
        return await self.get_many(task_ids)

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
        _status, rows = await self.log_page(task_id, attempt, after_id, limit)
        return rows

    async def log_page(self, task_id: str, attempt: int | None = None, after_id: int = 0,
                       limit: int = 1000) -> tuple[TaskStatus, list[dict[str, Any]]]:
        """The task's status and its next log lines, in one call (for followers).

        The status is read first: lines are written before an attempt reports, so a task
        seen finished has all of its lines in the store by the read that follows.
        """
        def read() -> tuple[TaskStatus, list[dict[str, Any]]]:
            state = self.store.states([task_id]).get(task_id)
            if state is None:
                raise TaskNotFoundError(task_id)
            return state[0], self.store.logs.read(task_id, attempt, after_id, limit)
        return await asyncio.to_thread(read)

    # ------------------------------------------------------------------ types

    async def register_type(self, blob: bytes) -> TaskTypeInfo:
        spec = TaskTypeSpec.loads(blob)
        version = self.registry.next_version(spec.name)
        await asyncio.to_thread(self.store.save_task_type, spec.name, blob, version)
        info = self.registry.register(spec, version).info()
        self.ops.limits.clear()
        return info

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

    async def prune(self, batch: int = 5000) -> dict[str, int]:
        """Retention: finished tasks past ``task_retention_s`` (archived to Parquet first
        when ``archive_dir`` is set, their artifacts deleted) and events past
        ``event_retention_s`` that every delivery cursor has passed."""
        pruned = {"tasks": 0, "events": 0}
        now = self.clock()
        if self.settings.task_retention_s is not None:
            while True:
                rows = await asyncio.to_thread(self.store.finished_before,
                                               now - self.settings.task_retention_s, batch)
                rows = [r for r in rows if not self.deps.has_dependents(r["id"])]
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

    # -------------------------------------------------------------- internals

    def publish(self, events: list[dict[str, Any]], ids: list[int]) -> None:
        """Events committed: hand them (with their ids) to the notifier's poke."""
        if not ids or self.on_events is None:
            return
        for event, event_id in zip(events, ids, strict=True):
            event["event_id"] = event_id
        self.on_events(events)

    def remember(self, request_id: str, leases: list[Lease]) -> None:
        self.answers[request_id] = leases
        while len(self.answers) > ANSWERS_KEPT:
            self.answers.popitem(last=False)

    def _resync(self, task_ids: list[str]) -> None:
        """A guarded write found the store ahead of memory: reload these tasks from it."""
        log.warning("reloading %d task(s) that changed in the store: %s", len(task_ids),
                    task_ids[:5])
        rows = {r.id: r for r in self.store.active_rows(task_ids)}
        now = self.clock()
        for task_id in task_ids:
            entry = self.active.remove(task_id)
            if entry is not None:
                sched = self.queues[entry.queue]
                sched.remove(task_id)
                sched.release(task_id)
            row = rows.get(task_id)
            if row is None:
                if entry is not None:  # it ended (a client's direct run whose notice was lost)
                    for status, owner in self.store.states([task_id]).values():
                        self.counts.add(owner, status)
                self.sessions.finished(task_id)
                continue
            fresh = Entry.from_row(row)
            self.active.add(fresh)
            if fresh.status is TaskStatus.RUNNING:
                self._hold_lease(fresh, row, now)
            elif fresh.queued and not self.deps.blocked(task_id):
                self.queues.push(fresh.queued_item(), now)

    def close(self) -> None:
        self.pipeline.close()
        self.store.close()


