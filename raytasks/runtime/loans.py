"""The loan route: a lone task runs on an executor the manager lent this client.

A lone plain submit (one call of one task, none of this client's lent runs under way)
asks the manager for an idle executor of its type (``lend``), unless it holds a loan
already. The manager lends one only while it waits for work, exclusively and for
``executor_loan_s``; meanwhile the executor takes nothing from the queues. This is how
Ray's owners lease workers from the raylet: the authority grants the worker, and the
work then goes straight to it.

The client commits the task RUNNING under its first lease (with its PENDING and RUNNING
events and an intake row) before it sends it (``run_lent``), so whatever meets the task
later (the executor's heartbeat, a cancel, a wait elsewhere) finds it stored and adopts
it. The run's answer comes back here:

- completed: committed here, fenced by the run's lease (``status = 'RUNNING' AND
  lease_token = 1``), and the waiter told; the manager learns of it from a notice;
- anything else (failed, cancelled, the loan over, the executor gone, a run that outlasted
  a heartbeat and so was reported to the manager by its executor): the manager decides,
  as for any attempt, and the wait goes to the stream.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray

from ..client import Watcher
from ..manager.outbox import status_event
from ..manager.outcomes import attempt_row, completion, usage_fields
from ..messages import Lease, Loan, NewTask, Report
from ..models import Task, TaskStatus
from ..store.base import RowUpdate, StaleWriteError, WriteBatch, row_to_task, with_artifact
from .calls import Call, ExecutorCalls, ManagerCalls
from .intake import FIRST_TOKEN, IntakeRoute, granted, rows_of

if TYPE_CHECKING:
    from ..store import SqlTaskStore

log = logging.getLogger(__name__)

#: Share of a loan's time after which this client uses it no more (its executor holds it
#: a little longer, so a run sent near the end is not turned away).
USABLE_SHARE = 0.8
#: Seconds before a client asks again for a loan of a type the manager had none of (each
#: ask is a call on the manager in the submit's way).
LEND_AGAIN_S = 1.0
#: Tries, a quarter second apart, to hand a run's end to a manager that is restarting.
REPORT_TRIES = 40


@dataclass
class _Run:
    """A lent run under way: the task's stored row, its loan and the call."""

    row: dict[str, Any]
    loan: Loan
    call: Call[tuple[bool, Any]] | None = None  # None: not sent (yet, or ever)
    sent: bool = False  # the run thread may take its answer


class LoanRoute:
    """Lone tasks of this client, run on executors lent to it, one at a time."""

    def __init__(self, manager: ManagerCalls, intake: IntakeRoute, watcher: Watcher,
                 namespace: str, heartbeat_interval_s: float) -> None:
        self._manager = manager
        self._intake = intake
        self._watcher = watcher
        self._namespace = namespace
        self._beat_s = heartbeat_interval_s
        self._loans: dict[str, tuple[Loan, float]] = {}  # by type: the loan, usable until
        self._no_loan: dict[str, float] = {}  # by type: no loan asked for until (monotonic)
        self._executors: dict[str, ExecutorCalls] = {}  # by name
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._run: _Run | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.started = 0  # tasks sent to an executor lent to this client
        self.ran = 0  # lent runs whose completion this client committed

    def takes(self, calls: list[list[NewTask]]) -> bool:
        """A lone call of one plain task, while none of this client's lent runs is under
        way (before looking at grants and loans)."""
        return len(calls) == 1 and len(calls[0]) == 1 and self._run is None \
            and not self._stopping and self._intake.takes(calls[0])

    def submit(self, call: list[NewTask]) -> list[Any] | BaseException | None:
        """Commit the task RUNNING under a loan and send it; its Acks, the error that
        refused it, or None: no loan (or no grant) for it here, another route takes it."""
        (task,) = call
        if not self._intake.ready():
            return None
        grant = self._intake.grant
        assert grant is not None and self._intake.store is not None
        loan = self._loan(task.task_type) if granted(task, grant) else None
        if loan is None or grant.types[task.task_type][0] not in (None, loan.handler_version):
            return None  # the type changed since the grant: the manager's route
        try:
            rows = rows_of(call, grant, time.time(), self._intake.client, loan.executor_id)
        except Exception as exc:
            return exc
        with self._lock:
            if self._run is not None:
                return None  # another thread's lone task came first
            run = self._run = _Run(rows.tasks[0], loan)
        try:
            self._intake.store.commit(WriteBatch(inserts=rows.tasks, events=rows.events,
                                                 intake=rows.intake))
        except BaseException as exc:  # nothing stored: another route takes it
            self._done()
            if not isinstance(exc, Exception):
                raise
            log.warning("lent run commit failed (%s); using another route", exc)
            return None
        self._send(run)
        return rows.acks

    def _loan(self, task_type: str) -> Loan | None:
        """This client's loan for ``task_type``, asked for if it has none usable."""
        now = time.monotonic()
        held = self._loans.get(task_type)
        if held is not None and now < held[1]:
            return held[0]
        if now < self._no_loan.get(task_type, 0.0):
            return None
        try:
            loan = self._manager.lend(self._intake.client, task_type).result(30)
        except Exception as exc:
            log.info("no loan (%s)", exc)
            loan = None
        if loan is None:
            self._no_loan[task_type] = now + LEND_AGAIN_S
            self._loans.pop(task_type, None)
            return None
        self._loans[task_type] = (loan, now + USABLE_SHARE * loan.duration_s)
        return loan

    def _send(self, run: _Run) -> None:
        """Send the committed task to its executor; the run thread takes the answer."""
        row = run.row
        self._watcher.local(row["id"])
        lease = Lease(task_id=row["id"], task_type=row["task_type"], token=FIRST_TOKEN,
                      attempt=0, parameters=row["parameters"], timeout_s=row["timeout_s"],
                      deadline=row["started_at"] + run.loan.lease_ttl_s,
                      handler_version=run.loan.handler_version, max_cpu_s=row["max_cpu_s"])
        try:
            executor = self._executors.get(run.loan.executor_id)
            if executor is None:
                executor = self._executors[run.loan.executor_id] = ExecutorCalls(
                    ray.get_actor(run.loan.executor_id, namespace=self._namespace))
            run.call = executor.run_lent(run.loan, lease)
        except Exception as exc:  # gone: the run thread hands the task to the manager
            log.info("lent executor %s unreachable: %s", run.loan.executor_id, exc)
        with self._lock:
            run.sent = True
            self.started += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="raytasks-lent")
                self._thread.start()
            self._wake.notify_all()

    def _loop(self) -> None:
        """Takes each lent run's answer: commits its completion, or hands it back."""
        while True:
            with self._lock:
                while (self._run is None or not self._run.sent) and not self._stopping:
                    self._wake.wait(1.0)
                run = self._run
            if run is None or not run.sent:
                return
            self._end(run)

    def _end(self, run: _Run) -> None:
        task_id = run.row["id"]
        taken, wire = True, None
        try:
            if run.call is None:
                raise RuntimeError("the run could not be sent")
            try:
                taken, wire = run.call.result(self._beat_s)
            except ray.exceptions.GetTimeoutError:  # a long run: the stream tells its
                self._watcher.unlocal(task_id)  # end too (its lease may go elsewhere)
                while not run.call.done(0.2):
                    if self._stopping:
                        return  # the executor reports it (or its lease expires)
                taken, wire = run.call.result()
        except Exception as exc:  # the executor died: it may have run, the lease says
            log.info("lent run of %s failed: %s", task_id, exc)
            self._loans.pop(run.loan.task_type, None)
        report = None if wire is None else Report.from_wire(wire)
        if not taken:  # the loan is over: the manager leases it, no attempt spent
            self._loans.pop(run.loan.task_type, None)
            report = Report(task_id, FIRST_TOKEN, "released")
        task = self._completed(run, report) \
            if report is not None and report.outcome == "completed" else None
        if task is not None:
            self._done()
            self._watcher.ended([task_id], {task_id: task})
            self._intake.tell([task_id], urgent=False)
            return
        self._done()
        if report is not None:  # failed, cancelled, released: the manager decides
            self._hand_back(report)
        else:  # reported by its executor, or lost with it: the manager holds its lease
            self._intake.tell([task_id])
        self._watcher.unlocal(task_id)

    def _completed(self, run: _Run, report: Report) -> Task | None:
        """Commit a lent run's completion, fenced by its lease: the task as now stored, or
        None if the lease is no longer the task's (nothing committed: the manager decides,
        or has decided)."""
        store = self._intake.store
        assert store is not None
        try:
            task = _commit_completion(store, run.row, report)
        except StaleWriteError:  # its lease expired meanwhile: the manager's now
            return None
        except Exception as exc:  # the manager commits the report instead
            log.warning("lent run of %s: commit failed (%s)", run.row["id"], exc)
            self._hand_back(report)
            return None
        self.ran += 1
        return task

    def _hand_back(self, report: Report) -> None:
        """Give a run's end to the manager (it adopts the task first), trying while the
        manager restarts; if it never lands, the lease expires and the task runs again."""
        for _ in range(REPORT_TRIES):
            try:
                self._manager.report([report]).result(30)
                return
            except Exception as exc:
                if self._stopping or not ray.is_initialized():
                    return
                log.info("handing %s back failed (%s); trying again", report.task_id, exc)
                time.sleep(0.25)

    def _done(self) -> None:
        """The run's answer is taken: another lone task may be lent."""
        with self._lock:
            self._run = None
            self._wake.notify_all()

    def close(self, timeout_s: float = 2.0) -> None:
        """Take the answer of a lent run under way (for a while), then stop the thread."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._run is not None and time.monotonic() < deadline:
                self._wake.wait(0.05)
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)


def _commit_completion(store: SqlTaskStore, row: dict[str, Any], report: Report) -> Task:
    """Commit a lent run's completion with its event and log lines, fenced by its lease;
    the task as now stored (its result file loaded, as a read would).

    Raises:
        StaleWriteError: the lease is no longer the task's (nothing committed).
    """
    now = time.time()
    fields = {**completion(report, now), **usage_fields(report),
              "status": TaskStatus.COMPLETED.value, "updated_at": now}
    store.commit(WriteBatch(
        updates=[RowUpdate(row["id"], fields, token=FIRST_TOKEN,
                           status=TaskStatus.RUNNING.value)],
        events=[status_event(task_id=row["id"], task_type=row["task_type"], owner=None,
                             attempt=0, priority=row["priority"],
                             previous=TaskStatus.RUNNING, status=TaskStatus.COMPLETED,
                             now=now, cpu_s=report.cpu_s)],
        logs=[line._asdict() for line in report.lines],
        attempts=[attempt_row(row["id"], 0, report, None, now)],
        environments=dict([report.environment]) if report.environment else {}))
    task = with_artifact(row_to_task({**row, **fields}))
    store.with_environments([task])
    return task
