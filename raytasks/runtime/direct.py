"""The direct intake, client side: a plain submit is committed here, then the manager told.

A submit call qualifies when every task in it has no dependencies, no idempotency key and
no owner, is of a type whose parameter model this client ran at the manager's version,
and goes to a queue where the manager granted this client room. Its task rows, their
PENDING events and their intake rows are one transaction in the store; the answer follows
that commit (durable before it is acknowledged) with no call to the manager on the way.
Anything else, or a store this process cannot open, takes the manager's path.

A thread then tells the manager (``adopt``), many tasks per call, and renews the grant
before it expires. The manager adopts a task by claiming its intake row, so a task is
adopted once; a notice lost with a crashed manager or client is made up for by the
manager's sweep of the intake.

A lone task (one call of one task, none of this client's in flight) of a type the grant
names executors for is also *run* directly: it is committed RUNNING under its first lease
token, with its PENDING and RUNNING events, and handed to one of those executors
(``run_direct``, sent as the commit starts), which runs it only if it is idle. Its
completion is committed here, fenced by that token, and answers the client's wait; the
manager learns both from the notices and never commits for it. A run refused, failed,
cancelled or lost goes back to the manager (its report, or the lease's expiry), which
decides as for any attempt. A run whose commit fails is void: its answer is dropped, and
the task goes to the manager under a new id.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import ray

from ..errors import RaytasksError
from ..manager.intake import first_given, row_to_new_task, task_row
from ..manager.outbox import status_event
from ..manager.outcomes import completion
from ..messages import Ack, IntakeGrant, Lease, NewTask, Report
from ..models import Task, TaskStatus
from ..store.base import RowUpdate, StaleWriteError, WriteBatch
from .actors import get

if TYPE_CHECKING:
    from ..client import Watcher
    from ..store import SqlTaskStore

log = logging.getLogger(__name__)

#: Most tasks of one call committed here: a larger call (``submit_many``) goes through the
#: manager, whose one create costs less than this client's commit plus the manager's claim
#: and read of every row. Many small calls made at once are committed here together.
MAX_CALL_TASKS = 64
#: Seconds a client waits to reach the manager's PostgreSQL before it submits through the
#: manager instead.
CONNECT_TIMEOUT_S = 3
#: Share of a grant's life after which it is used no more (the manager holds it longer).
USABLE_SHARE = 0.8
#: The lease token of a direct run: a new task's first lease.
DIRECT_TOKEN = 1
#: Seconds without direct runs after an executor refused one (it was busy: so is the pool).
REFUSED_BACKOFF_S = 0.2
#: Seconds after a grant before a client asks again for executors of a type it had none of.
WANT_DIRECT_S = 1.0
#: Seconds into a direct run after which the manager is told of it while it runs (sooner,
#: its notice waits to go with its end): well under a heartbeat interval, after which the
#: executor renews its lease with the manager.
ADOPT_AFTER_S = 0.05
#: Seconds a client keeps asking a restarting manager to watch a direct run handed back.
UNDIRECT_PATIENCE_S = 60.0
#: Seconds a direct run's notice waits for others' (a sequence of lone tasks): the manager
#: learns of ends that much later, and is called once per few tasks, not per task.
NOTICE_LINGER_S = 0.1
#: Seconds into a direct run after which the client also watches the task's end in its
#: stream (a run that does not answer, the manager may end otherwise).
WATCH_AFTER_S = 0.5


class DirectIntake:
    """One client's grant, its store connection and its notice thread."""

    def __init__(self, manager: Any, busy_timeout_s: float, namespace: str = "raytasks",
                 watcher: Watcher | None = None) -> None:
        self.client = uuid.uuid4().hex
        self._manager = manager
        self._namespace = namespace
        self._watcher = watcher
        self._executors: dict[str, Any] = {}  # handles by name
        self._direct = False  # a direct run is under way (from its choice of executor)
        self._run: _DirectRun | None = None  # the direct run in flight
        self._refused_until = 0.0  # monotonic
        self._want_direct = False  # a lone task's type had no executors in the grant
        self._turn = 0  # which of a type's executors the next direct run asks first
        self._ended: list[tuple[str, int]] = []  # direct runs committed, not yet told
        self._reports: list[Report] = []  # direct runs the manager must end, not yet told
        self._direct_ids: list[str] = []  # direct runs' tasks, not yet told (to adopt)
        self._direct_queues: Counter[str] = Counter()  # and their count per queue
        self._linger_from: float | None = None  # when a direct run's notice began to wait
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the notice thread's
        self._runs_wake = threading.Condition(self._lock)  # the run thread's, and close's
        self._grant: IntakeGrant | None = None
        self._store: SqlTaskStore | None = None
        self._off = False
        self._credits: Counter[str] = Counter()
        self._taken: Counter[str] = Counter()  # credits used since this client started
        self._granted_at = 0.0  # monotonic, when the grant in use was asked for
        # per wait session: the ids committed and not yet told, and their count per queue
        self._notices: dict[str | None, tuple[list[str], Counter[str]]] = {}
        self._in_flight: list[Any] | None = None  # the notices sent, not yet answered
        self._thread: threading.Thread | None = None
        self._runs: threading.Thread | None = None  # takes the direct runs' answers
        self._stopping = False
        self.committed = 0  # tasks this client committed itself
        self.started = 0  # tasks this client handed to an idle executor (direct runs)
        self.ran = 0  # direct runs whose completion this client committed

    # ------------------------------------------------------------------ submit

    def submit(self, calls: list[list[NewTask]],
               session: str | None) -> list[list[Ack] | BaseException | None]:
        """Commit the plain calls here, together; per call its Acks, the error that
        refused it (as the manager would refuse it), or None: it goes to the manager."""
        out: list[list[Ack] | BaseException | None] = [None] * len(calls)
        if self._off or not any(_small(call) and all(map(_plain_request, call))
                                for call in calls) \
                or not self._ready():  # a grant is asked for only once a call could use it
            return out
        grant = self._grant
        assert grant is not None
        runner = self._runner(calls, grant)
        started = False
        try:
            out, started = self._commit(calls, session, grant, runner)
        finally:
            if runner is not None and not started:
                with self._lock:
                    self._direct = False
                    self._runs_wake.notify_all()
        return out

    def _commit(self, calls: list[list[NewTask]], session: str | None, grant: IntakeGrant,
                runner: _Runner | None) -> tuple[list[list[Ack] | BaseException | None], bool]:
        """``submit``'s answers, and whether it started a direct run (with ``runner``)."""
        out: list[list[Ack] | BaseException | None] = [None] * len(calls)
        store = self._store
        assert store is not None
        now = time.time()
        built: dict[int, _Rows] = {}
        for i, call in enumerate(calls):
            if _small(call) and all(_plain(task, grant) for task in call):
                try:
                    built[i] = _rows(call, grant, now, self.client, runner)
                except RaytasksError as exc:
                    out[i] = exc
        need: Counter[str] = Counter()
        with self._lock:
            if time.monotonic() >= self._granted_at + USABLE_SHARE * grant.ttl_s:
                self._wake.notify()  # renew
                return out, False
            for i, rows in list(built.items()):
                queues = Counter(r["queue"] for r in rows.tasks)
                if any(self._credits[q] < need[q] + n for q, n in queues.items()):
                    del built[i]  # no room granted: the manager decides
                    self._wake.notify()
                else:
                    need += queues
            self._credits -= need
            self._taken += need
        if not built:
            return out, False
        batch = _Rows()
        for rows in built.values():
            batch.extend(rows)
        run = None
        if runner is not None and batch.tasks[0]["status"] == TaskStatus.RUNNING.value:
            # the call travels while the task commits; its answer is taken once committed
            run = self._start(batch.tasks[0], runner)
        try:
            store.commit(WriteBatch(inserts=batch.tasks, events=batch.events,
                                    intake=batch.intake))
        except BaseException as exc:  # nothing was stored: the manager's path
            with self._lock:
                self._credits += need
                self._taken -= need
            if run is not None:
                self._void(run, calls[0])
            if not isinstance(exc, Exception):  # an interrupt: no fallback
                raise
            log.warning("direct intake commit failed (%s); using the manager's path", exc)
            return out, run is not None
        if run is not None:  # its notice waits for its end (or ADOPT_AFTER_S): one for both
            run.stored.set()
        with self._lock:
            self.committed += len(batch.intake)
            if run is None:
                ids, queues = self._notices.setdefault(session, ([], Counter()))
                ids += [r["task_id"] for r in batch.intake]
                queues.update(r["queue"] for r in batch.tasks)
                if self._in_flight is None and not self._stopping:
                    self._send()  # at once, from here: no thread to wake on the way
                self._wake.notify()
        for i, rows in built.items():
            out[i] = rows.acks
        return out, run is not None

    # ------------------------------------------------------------- direct runs

    def _runner(self, calls: list[list[NewTask]], grant: IntakeGrant) -> _Runner | None:
        """The executor a lone task is handed to, if it is one and one is offered."""
        if len(calls) != 1 or len(calls[0]) != 1 or self._watcher is None:
            return None
        offered = grant.direct.get(calls[0][0].task_type)
        if not offered and not self._want_direct and calls[0][0].task_type in grant.types:
            with self._lock:  # its executors may have started since: ask again soon
                self._want_direct = True
                self._wake.notify()
        if not offered or time.monotonic() < self._refused_until:
            return None
        with self._lock:  # one direct run at a time: until its answer is taken
            if self._direct:
                return None
            self._direct = True
            self._turn += 1
        version, executors = offered
        return _Runner(executors[self._turn % len(executors)], version, grant.lease_ttl_s)

    def _start(self, row: dict[str, Any], runner: _Runner) -> _DirectRun:
        """Hand the task to its executor as it commits; the run thread takes its answer
        once the commit is known (``stored``)."""
        assert self._watcher is not None
        self._watcher.note_direct(row["id"])
        lease = Lease(task_id=row["id"], task_type=row["task_type"], token=DIRECT_TOKEN,
                      attempt=0, parameters=row["parameters"], timeout_s=row["timeout_s"],
                      deadline=row["started_at"] + runner.lease_ttl_s,
                      handler_version=runner.version)
        try:
            handle = self._executors.get(runner.executor_id) or ray.get_actor(
                runner.executor_id, namespace=self._namespace)
            self._executors[runner.executor_id] = handle
            ref = handle.run_direct.remote(lease.wire())
        except Exception:  # gone: it never ran, the manager leases it
            self._executors.pop(runner.executor_id, None)
            ref = None
        run = _DirectRun(row, ref, runner.executor_id)
        with self._lock:
            self._run = run
            self.started += 1
            self._runs_wake.notify_all()
        if self._runs is None:
            self._runs = threading.Thread(target=self._runs_loop, daemon=True,
                                          name="raytasks-direct")
            self._runs.start()
        return run

    def _void(self, run: _DirectRun, call: list[NewTask]) -> None:
        """A direct run whose task was not stored: its answer is dropped, and the task goes
        to the manager under a new id, so no lease of the manager's ever shares this run's
        id and token (the executor may run it meanwhile: it was never acknowledged)."""
        assert self._watcher is not None
        run.void = True
        run.stored.set()
        self._watcher.drop_direct(run.row["id"])
        call[0] = call[0]._replace(id=uuid.uuid4().hex)

    def _runs_loop(self) -> None:
        """Takes each direct run's answer: commits its completion, or hands it back."""
        while True:
            with self._lock:
                while self._run is None and not self._stopping:
                    self._runs_wake.wait(1.0)
                run = self._run
            if run is None:
                return
            run.stored.wait()
            if run.void:
                self._ran(run)
                continue
            taken, report, watched = False, None, False
            try:
                since = time.monotonic()
                while run.ref is not None:
                    try:
                        taken, answer = get(run.ref, 0.1 if run.told else ADOPT_AFTER_S)
                        report = None if answer is None else Report.from_wire(answer)
                        break
                    except ray.exceptions.GetTimeoutError:
                        pass
                    if not run.told:  # still running: the manager holds its lease now
                        with self._lock:
                            self._adopt_notice(run, at_once=True)
                    if self._stopping:
                        return  # the executor reports it (or its lease expires)
                    if not watched and time.monotonic() - since > WATCH_AFTER_S:
                        # a long run: the stream tells its end too, if it ends
                        # otherwise (its executor paused past the lease, say)
                        watched = self._undirect(run.row["id"])
                if not taken:  # busy (or retiring): so may the pool be, for a while
                    self._refused_until = time.monotonic() + REFUSED_BACKOFF_S
            except Exception as exc:  # the executor died: it may have run, the lease says
                log.info("direct run of %s failed: %s", run.row["id"], exc)
                self._executors.pop(run.executor_id, None)
                taken, report = True, None
            self._ran(run)  # the next lone task may go before this one's end is told
            self._end(run, taken, report, watched)

    def _ran(self, run: _DirectRun) -> None:
        """The run's answer is taken: another may start."""
        with self._lock:
            self._run = None
            self._direct = False
            self._runs_wake.notify_all()

    def _adopt_notice(self, run: _DirectRun, at_once: bool = False) -> None:
        """Note a direct run's task for the next notice (lock held)."""
        self._direct_ids.append(run.row["id"])
        self._direct_queues[run.row["queue"]] += 1
        run.told = True
        self._linger(at_once)

    def _end(self, run: _DirectRun, taken: bool, report: Report | None,
             watched: bool) -> None:
        """Commit a completed run's end and answer its waiter; hand any other back. The
        manager is told (with the task's adoption, if not told yet) by the notice thread."""
        task_id = run.row["id"]
        assert self._watcher is not None and self._store is not None
        task: Task | None = None
        if not taken:  # busy (or retiring): the manager leases it, no attempt spent
            report = Report(task_id, DIRECT_TOKEN, "released")
        elif report is not None and report.outcome == "completed":
            try:
                task = _completed(self._store, run.row, report)
            except StaleWriteError:  # its lease expired meanwhile: the manager's now
                report = None
            except Exception as exc:  # the manager commits the report instead
                log.warning("direct run of %s: commit failed (%s)", task_id, exc)
        if task is not None:
            self.ran += 1
            self._watcher.resolve([task])  # the waiter goes on while the notice is sent
        with self._lock:
            if not run.told:
                self._adopt_notice(run)
            if task is not None:
                self._ended.append((task_id, DIRECT_TOKEN))
                self._linger()
            elif report is not None:
                self._reports.append(report)  # the manager decides: at once
                self._wake.notify()
        deadline = time.monotonic() + UNDIRECT_PATIENCE_S
        while task is None and not watched and not self._stopping:
            watched = self._undirect(task_id) or time.monotonic() > deadline
            if not watched:
                time.sleep(0.5)  # the manager is restarting

    def _undirect(self, task_id: str) -> bool:
        """Hand a direct run's end to the wait stream; False if the manager could not be
        asked to watch it now."""
        assert self._watcher is not None
        try:
            self._watcher.undirect(task_id)
        except Exception as exc:
            log.info("watching %s failed (%s); trying again", task_id, exc)
            return False
        return True

    def reader(self) -> SqlTaskStore | None:
        """This client's connection to the manager's store, if it has one (it is opened
        with the first grant): the wait stream reads finished tasks through it."""
        return self._store if self._ready() else None

    # ------------------------------------------------------------------- grant

    def _ready(self) -> bool:
        """A grant and a store connection (asked for and opened on first use)."""
        if self._grant is not None:
            return True
        with self._lock:
            if self._grant is not None or self._off:
                return self._grant is not None
            try:
                asked = time.monotonic()
                grant: IntakeGrant | None = get(self._manager.grant.remote(self.client), 30)
                self._store = _open(grant, self._busy_timeout_s) if grant is not None \
                    else None
            except Exception as exc:
                log.info("no direct intake (%s): submits go through the manager", exc)
                grant = None
            if grant is None or self._store is None:
                self._off = True
                return False
            self._credits = Counter(grant.credits)
            self._granted_at = asked
            self._grant = grant
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name="raytasks-intake")
            self._thread.start()
        return True

    def _renew_due(self) -> bool:
        grant = self._grant
        assert grant is not None
        if time.monotonic() > self._granted_at + (
                WANT_DIRECT_S if self._want_direct else grant.ttl_s / 2):
            return True
        return any(self._credits[q] < n // 2 for q, n in grant.credits.items())

    # ------------------------------------------------------------ notice thread

    def _loop(self) -> None:
        """Waits for each notice in flight, then sends what was committed meanwhile as
        the next one (one in flight at a time: a busy client's notices go together), and
        renews the grant."""
        while True:
            with self._lock:
                if not (self._in_flight or self._due() or self._stopping
                        or self._renew_due()):
                    self._wake.wait(self._until_due())
                if self._in_flight is None and self._due():
                    self._send()
                sent = self._in_flight
            if sent:
                for ref in sent:
                    try:
                        get(ref, 30)
                    except Exception as exc:  # the manager's sweep adopts them
                        if ray.is_initialized():
                            log.info("an intake notice failed: %s", exc)
                with self._lock:
                    self._in_flight = None  # what was committed meanwhile goes next turn
                continue
            with self._lock:
                renew = self._renew_due() and not self._stopping
                taken, stopping = self._taken.copy(), self._stopping
            if renew:
                self._renew(taken)
            if stopping:
                return

    def _due(self) -> bool:
        """Whether there is a notice to send now (lock held). Direct runs' notices linger
        a little, so a client running one task after another sends a notice per few
        tasks, not per task."""
        if self._notices or self._reports:
            return True
        if self._linger_from is None:
            return False
        return self._stopping or time.monotonic() >= self._linger_from + NOTICE_LINGER_S

    def _until_due(self) -> float:
        if self._linger_from is None:
            return 1.0
        return max(0.0, self._linger_from + NOTICE_LINGER_S - time.monotonic())

    def _linger(self, at_once: bool = False) -> None:
        """A direct run's notice is waiting (lock held)."""
        if at_once:
            self._linger_from = -NOTICE_LINGER_S
        elif self._linger_from is None:
            self._linger_from = time.monotonic()
        else:
            return  # the notice thread waits for it already
        self._wake.notify()

    def _send(self) -> None:
        """Tell the manager what was committed (call with the lock held; not blocking)."""
        notices, self._notices = self._notices, {}
        ended, self._ended = self._ended, []
        reports, self._reports = self._reports, []
        if self._direct_ids or ended or reports:
            ids, queues = notices.setdefault(None, ([], Counter()))
            ids += self._direct_ids
            queues += self._direct_queues
            self._direct_ids, self._direct_queues = [], Counter()
        self._linger_from = None
        try:
            self._in_flight = [
                self._manager.adopt.remote(self.client, ids, session, dict(queues),
                                           *((ended, reports) if session is None else ()))
                for session, (ids, queues) in notices.items()]
        except Exception as exc:  # Ray is going away: the manager's sweep adopts them
            log.info("an intake notice could not be sent: %s", exc)

    def _renew(self, taken: Counter[str]) -> None:
        """A new grant, less what this client used since asking (its notices come later)."""
        asked = time.monotonic()
        try:
            grant: IntakeGrant | None = get(self._manager.grant.remote(self.client), 30)
        except Exception:
            return  # asked again on the next turn; past its life the grant is not used
        with self._lock:
            if grant is None:
                self._off = True
                return
            since = self._taken - taken
            self._want_direct = False
            self._credits = Counter(grant.credits)
            self._credits.subtract(since)
            self._grant, self._granted_at = grant, asked

    def close(self, timeout_s: float = 2.0) -> None:
        """Take the answer of a direct run in flight (for a while), send the notices
        still held, and stop the threads."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._off = True  # later submits go to the manager
            while self._direct and time.monotonic() < deadline:
                self._runs_wake.wait(0.05)
            self._stopping = True
            self._wake.notify()
            self._runs_wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._store is not None:
            self._store.close()


class _Runner(NamedTuple):
    """Where a lone task runs directly: an executor's name, and the type's handler version."""

    executor_id: str
    version: int
    lease_ttl_s: float


@dataclass
class _DirectRun:
    """A task this client committed RUNNING and handed to an idle executor."""

    row: dict[str, Any]
    ref: Any  # of its run_direct call; None: the executor is gone
    executor_id: str
    told: bool = False  # its task is in a notice to the manager
    stored: threading.Event = field(default_factory=threading.Event)  # its commit ended
    void: bool = False  # and failed: the task is not stored, the answer is dropped


@dataclass
class _Rows:
    """What the direct intake commits for some calls, and their answers."""

    tasks: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    intake: list[dict[str, Any]] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)

    def extend(self, other: _Rows) -> None:
        self.tasks += other.tasks
        self.events += other.events
        self.intake += other.intake


def _small(call: list[NewTask]) -> bool:
    return 0 < len(call) <= MAX_CALL_TASKS


def _plain_request(task: NewTask) -> bool:
    """No dependencies, idempotency key or owner: their checks need the manager's memory."""
    return not task.depends_on and task.idempotency_key is None and task.owner is None


def _plain(task: NewTask, grant: IntakeGrant) -> bool:
    """A task the direct intake takes: a plain request of a type whose model this client
    ran at the manager's version, into a queue with room granted."""
    known = grant.types.get(task.task_type)
    return _plain_request(task) and known is not None and task.queue in grant.credits \
        and (known[0] is None or task.checked_version == known[0])


def _rows(call: list[NewTask], grant: IntakeGrant, now: float, client: str,
          runner: _Runner | None = None) -> _Rows:
    """The rows of one call, built as the manager builds them; with a ``runner``, leased
    to it at once (RUNNING under the first token), as the manager leases.

    Raises:
        InvalidParametersError, PayloadTooLargeError: as the manager would.
    """
    rows = _Rows()
    for i, task in enumerate(call):
        _version, timeout_s, max_retries = grant.types[task.task_type]
        timeout_s = first_given(task.timeout_s, timeout_s)
        max_retries = first_given(task.max_retries, max_retries)
        prefix = f"requests[{i}]." if len(call) > 1 else ""
        row = task_row(task.id, task, now, task.parameters, grant.max_parameters_bytes,
                       timeout_s, max_retries, prefix)
        row["queued"], row["enqueued_at"] = True, now
        rows.tasks.append(row)
        rows.events.append(status_event(task_id=task.id, task_type=task.task_type, owner=None,
                                        attempt=0, priority=task.priority, previous=None,
                                        status=TaskStatus.PENDING, now=now))
        if runner is not None:
            row.update(status=TaskStatus.RUNNING.value, lease_token=DIRECT_TOKEN,
                       started_at=now, lease_executor=runner.executor_id)
            rows.events.append(status_event(
                task_id=task.id, task_type=task.task_type, owner=None, attempt=0,
                priority=task.priority, previous=TaskStatus.PENDING,
                status=TaskStatus.RUNNING, now=now))
        rows.intake.append({"task_id": task.id, "client": client, "created_at": now})
        rows.acks.append(Ack(task.id, now, max_retries, timeout_s))
    return rows


def _completed(store: SqlTaskStore, row: dict[str, Any], report: Report) -> Task:
    """Commit a direct run's completion, fenced by its lease; the Task as now stored.

    Raises:
        StaleWriteError: the lease is no longer the task's (nothing committed).
    """
    now = time.time()
    fields = {**completion(report, now), "status": TaskStatus.COMPLETED.value,
              "updated_at": now}
    store.commit(WriteBatch(
        updates=[RowUpdate(row["id"], fields, token=DIRECT_TOKEN,
                           status=TaskStatus.RUNNING.value)],
        events=[status_event(task_id=row["id"], task_type=row["task_type"], owner=None,
                             attempt=0, priority=row["priority"],
                             previous=TaskStatus.RUNNING, status=TaskStatus.COMPLETED,
                             now=now)],
        logs=[line._asdict() for line in report.lines]))
    if report.result_uri is not None:  # the attempt's own file, as the manager reads it
        result = json.loads(Path(report.result_uri).read_text(encoding="utf-8"))
    else:
        result = None if report.result is None else json.loads(report.result)
    stamp = {k: datetime.fromtimestamp(v, tz=UTC)
             for k, v in (("started_at", row["started_at"]), ("updated_at", now),
                          ("finished_at", now))}
    return row_to_new_task(row).model_copy(update={
        "status": TaskStatus.COMPLETED, "result": result, "result_uri": report.result_uri,
        "lease_token": DIRECT_TOKEN, **stamp})


def _open(grant: IntakeGrant, busy_timeout_s: float) -> SqlTaskStore | None:
    """The manager's store, if this process reaches the same one: a SQLite file only on
    the manager's node (never through Ray Client) and only where it exists."""
    from ..store import SqlTaskStore

    url = grant.store_url
    if url.startswith("sqlite"):
        if ray.util.client.ray.is_connected() \
                or ray.get_runtime_context().get_node_id() != grant.node_id:
            return None
        if not Path(url.split("///", 1)[-1]).is_file():
            return None
    elif "connect_timeout" not in url:  # a server out of reach fails fast, not in minutes
        url += ("&" if "?" in url else "?") + f"connect_timeout={CONNECT_TIMEOUT_S}"
    return SqlTaskStore(url, busy_timeout_s=busy_timeout_s)
