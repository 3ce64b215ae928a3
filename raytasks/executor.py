"""TaskExecutor: pulls leases for one task type, runs handlers, reports with fencing tokens.

One executor is one process (a restartable Ray actor). Its work thread leases
and runs tasks; its monitor thread sends heartbeats and progress, and enforces
timeouts, forced cancels and lost leases: when a handler overstays, the monitor
reports the outcome and ends the process, and Ray starts a fresh one in its
place, so the pool keeps its size even when the handler is CPU-bound code that
never looks at its context.

Between leases an idle executor may be lent to one client (a :class:`Loan` the manager
hands it instead of leases): for the loan's duration it takes nothing from the queues
and runs only that client's lone tasks (``run_lent``), each already committed RUNNING
under its first lease by the client. A lent run that outlasts a heartbeat is known to the
manager (the heartbeat adopts it), so its executor reports it to the manager as any
attempt; a shorter one's report goes back to the client, which commits it.

A preempted attempt (the scheduler wants the executor for a task with a deadline) is
asked to stop through its context (``ctx.preempted``); it has its type's grace time to
save a checkpoint and stop, and its process is replaced after it. Its report says
``preempted``: the task runs again from the checkpoint, without spending a retry.

An attempt that learns it lost its lease (a heartbeat says so: it was paused
past its TTL, or partitioned, and the task went to someone else) stops: first
cooperatively through its context, then by replacing the process after the
cancel grace. Whatever it still writes is fenced: its report is rejected, and
its files live in its own attempt directory, which the task never points at.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from .cache import cache_dir
from .context import TaskExecutionContext
from .errors import TaskCancelledError, TaskPreemptedError
from .lineage import Lineage
from .logcapture import AttemptLog, Capture, secrets_of
from .memory import DeathCause, MemoryWatch, oom_error
from .messages import (
    Lease,
    LeaseRequest,
    Loan,
    LogLine,
    ProgressReport,
    RenewAnswer,
    Report,
    ReportAnswer,
    Work,
)
from .models import TaskErrorInfo
from .quant.model_registry import ModelLedger
from .registry import TaskTypeSpec
from .settings import Settings
from .store.base import clean_floats, to_json
from .tracking import track, tracked
from .usage import Usage

log = logging.getLogger(__name__)

#: How long a batch of leased tasks should take; short tasks are leased many at a
#: time (throughput), long ones one at a time (priority is decided at the lease).
TARGET_BATCH_S = 0.02


class ManagerLink(Protocol):
    """The blocking calls an executor makes on the system actors."""

    def report_and_lease(self, request: LeaseRequest) -> Work: ...
    def report(self, reports: list[Report]) -> ReportAnswer: ...
    def heartbeat(self, executor_id: str, leases: list[tuple[str, int]],
                  progress: list[ProgressReport], logs: list[LogLine]) -> RenewAnswer: ...
    def checkpoint(self, task_id: str) -> Any: ...
    def save_checkpoint(self, task_id: str, token: int, state: Any) -> bool: ...
    def type_blob(self, name: str) -> bytes: ...
    def ledger(self, lease: Lease) -> ModelLedger | None: ...


@dataclass
class _Running:
    lease: Lease
    started: float
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_at: float | None = None
    lost: bool = False
    progress: tuple[float, str, str | None] | None = None
    progress_at: float = 0.0
    progress_sent: float = 0.0
    log: AttemptLog | None = None
    #: a heartbeat carried this attempt: the manager may hold its lease since (a lent
    #: run is then reported to the manager, not handed back to its client)
    beat_sent: bool = False
    usage: Usage | None = None  # what it uses, measured from its start
    #: set when the scheduler preempts it; it must stop by ``preempt_by`` (time.time())
    preempt: threading.Event = field(default_factory=threading.Event)
    preempt_by: float | None = None


class TaskExecutor:
    """The plain class behind one executor actor.

    ``link`` makes the blocking calls on the manager and the tracker (``runtime``
    supplies it, tests may too). ``exit_process`` ends the process (``os._exit``).
    ``record`` and ``death_cause``: where the attempt under way is recorded, and how to
    ask Ray why a process died (:class:`~raytasks.memory.MemoryWatch`).
    """

    def __init__(self, executor_id: str, task_type: str, settings: Settings, link: ManagerLink,
                 *, exit_process: Any = os._exit, start: bool = True,
                 record: Path | None = None, death_cause: DeathCause | None = None) -> None:
        self.executor_id = executor_id
        self.task_type = task_type
        self.settings = settings
        self.link = link
        self.exit_process = exit_process
        self._specs: dict[int, TaskTypeSpec] = {}
        self._tracking = ThreadPoolExecutor(1, thread_name_prefix="mlflow")
        self._lock = threading.Lock()
        # held while a heartbeat carries log lines: an attempt's report waits for it, so
        # its lines are stored while its lease holds (the store fences them by it)
        self._beating = threading.Lock()
        self._held: dict[str, _Running] = {}  # leased, not yet reported
        self._current: _Running | None = None
        # held while an attempt runs: a loan ends only between lent runs
        self._running = threading.Lock()
        self._loan: Loan | None = None
        self._loan_until = 0.0  # monotonic
        self._loan_over = threading.Event()  # ended early (retiring, stopping)
        self.lent_at = 0.0  # when the last loan began (time.time())
        self._avg_run_s = 1.0
        self._last_leased = 0
        self._stop = threading.Event()
        self.completed = 0
        self.pid = os.getpid()
        self.capture = Capture()
        self._secrets = secrets_of(settings)
        self.memory = MemoryWatch(settings.for_type(task_type).max_memory_mb,
                                  settings.memory_guard_margin_mb, record)
        self.death_cause = death_cause
        if start:
            self.capture.install()
            threading.Thread(target=self._work_loop, name="raytasks-work", daemon=True).start()
            threading.Thread(target=self._monitor_loop, name="raytasks-monitor",
                             daemon=True).start()

    # ------------------------------------------------------------- actor API

    def cancel(self, task_id: str, token: int) -> bool:
        """Ask a task this executor holds to stop: cooperative now, forced after a grace."""
        with self._lock:
            run = self._held.get(task_id)
            if run is None or run.lease.token != token:
                return False
            self._stop_attempt(run)
        return True

    def preempt(self, task_id: str, token: int, grace_s: float) -> bool:
        """Ask a task this executor holds to checkpoint and stop within ``grace_s``, for
        a task with a deadline (forced after it)."""
        with self._lock:
            run = self._held.get(task_id)
            if run is None or run.lease.token != token:
                return False
            self._preempt(run, grace_s)
        return True

    def _preempt(self, run: _Running, grace_s: float) -> None:
        if run.preempt.is_set():  # asked again, maybe sooner (its node is draining)
            if run.preempt_by is not None:
                run.preempt_by = min(run.preempt_by, time.time() + grace_s)
            return
        run.preempt_by = time.time() + grace_s
        run.preempt.set()
        if run.log is not None:
            run.log.add("raytasks", f"preempted for a task with a deadline: {grace_s:g} s "
                                    "to save a checkpoint and stop")

    def state(self) -> dict[str, Any]:
        with self._lock:
            current = self._current.lease.task_id if self._current else None
            return {"executor_id": self.executor_id, "task_type": self.task_type,
                    "pid": self.pid, "current": current, "held": len(self._held),
                    "completed": self.completed, "lent": self._loan is not None,
                    "lent_at": self.lent_at}

    def run_lent(self, loan_id: str, lease: Lease) -> tuple[bool, Report | None]:
        """Run a lone task of the client this executor is lent to, committed by that
        client RUNNING under ``lease``.

        Returns (taken, report). Not taken: the loan is over (the client hands the task
        to the manager, no attempt spent). Taken, the report the client commits; None
        instead when the manager holds the lease by now (a heartbeat carried it: the
        report went to the manager) or the lease was lost. The attempt is watched as a
        leased one is: timeouts, cancels, lost leases.
        """
        if not self._running.acquire(blocking=False):
            return False, None  # a run of the loan under way: the client sends one at a time
        try:
            with self._lock:
                loan = self._loan
                if loan is None or loan.loan_id != loan_id or self._stop.is_set() \
                        or self._loan_over.is_set() or time.monotonic() >= self._loan_until:
                    return False, None
                run = self._held[lease.task_id] = _Running(lease, 0.0)
            report = self._run(lease)
        finally:
            self._running.release()
        if report is not None and run.beat_sent:
            self._report([report])
            return True, None
        return True, report

    def end_loan(self, loan_id: str | None = None) -> None:
        """End the loan now (``loan_id``: only if it is that one), after the lent run under
        way, if any; no lent run starts after this."""
        with self._lock:
            if loan_id is not None and (self._loan is None or self._loan.loan_id != loan_id):
                return
        self._loan_over.set()

    def busy(self) -> bool:
        """Whether an attempt runs now, or the executor is lent to a client."""
        return self._running.locked() or self._loan is not None

    def stop(self) -> None:
        self._stop.set()
        self._loan_over.set()

    # ------------------------------------------------------------- work loop

    def _batch_size(self) -> int:
        """How many tasks to lease: about ``TARGET_BATCH_S`` of work by the run times seen,
        and at most twice what the last lease brought (a slow start), so an estimate made
        on other work never leases a whole backlog at once: priority is decided at the
        lease, and HIGH work queued a moment later must find the LOW work still waiting."""
        by_time = int(TARGET_BATCH_S / self._avg_run_s)
        return max(1, min(self.settings.lease_batch_max, by_time, 2 * self._last_leased))

    def _warm_up(self) -> None:
        """Run the type's warm-up (its handler's imports) before the first lease, so the
        first task (an interactive one, on a warm executor) finds them done."""
        try:
            spec = TaskTypeSpec.loads(self.link.type_blob(self.task_type))
            if spec.warm_up is not None:
                spec.warm_up()
        except Exception as exc:  # the first task imports what it needs instead
            log.info("executor %s: warm-up skipped (%s)", self.executor_id, exc)

    def _work_loop(self) -> None:
        killed = self.memory.recover(self.death_cause)  # Ray killed the last process for memory
        if killed is not None:
            self._report([killed])
        self._warm_up()
        reports: list[Report] = []
        request: LeaseRequest | None = None
        backoff = 0.1
        while not self._stop.is_set():
            # a failed call is retried with the same request id: never two sets of leases
            request = request or LeaseRequest(
                request_id=uuid.uuid4().hex, executor_id=self.executor_id,
                task_types=[self.task_type], n=self._batch_size(), wait_s=1.0,
                reports=reports)
            try:
                work = self.link.report_and_lease(request)
                request, reports = None, []
                leases = work.leases
                self._last_leased = len(leases)
                backoff = 0.1
            except Exception as exc:  # manager restarting: keep the request, try again
                log.warning("executor %s: manager call failed (%s); retrying",
                            self.executor_id, type(exc).__name__)
                time.sleep(backoff)
                backoff = min(2.0, backoff * 2)
                continue
            if work.loan is not None:
                self._lend(work.loan)
            with self._lock:
                for lease in leases:
                    self._held[lease.task_id] = _Running(lease, 0.0)
            for lease in leases:
                with self._running:
                    report = self._run(lease)
                if report is not None:
                    reports.append(report)

    def _lend(self, loan: Loan) -> None:
        """Serve ``loan`` until it ends (its time, ``end_loan``, or a stop), then return to
        the queues once the lent run under way, if any, has ended."""
        with self._lock:
            self._loan, self.lent_at = loan, time.time()
            self._loan_until = time.monotonic() + loan.duration_s
        self._loan_over.wait(loan.duration_s)
        with self._running, self._lock:
            self._loan = None
            self._loan_over.clear()

    def _run(self, lease: Lease) -> Report | None:
        with self._lock:
            run = self._held[lease.task_id]
            if run.lost:  # superseded before it started: nothing to run or report
                del self._held[lease.task_id]
                return None
            run.started = time.time()
            run.usage = Usage()
            self.memory.begin(lease.task_id, lease.token)
            self._current = run
            run.log = AttemptLog(lease.task_id, lease.token, lease.attempt,
                                 self.settings.task_log_max_bytes, self._secrets)
            run.log.add("raytasks", f"attempt {lease.attempt} started on {self.executor_id} "
                                    f"(pid {self.pid})")
            self.capture.current = run.log
        try:
            if run.cancel.is_set():
                raise TaskCancelledError(lease.task_id)
            if run.preempt.is_set():  # preempted before it started: nothing is lost
                raise TaskPreemptedError(lease.task_id)
            spec = self._spec(lease)
            parameters = json.loads(lease.parameters)
            parsed = spec.parse(parameters)  # validated once: the handler's argument
            lineage = Lineage.start(spec, parsed)
            checkpoint = self.link.checkpoint(lease.task_id) if lease.attempt else None
            ctx = TaskExecutionContext(
                lease.task_id, lease.task_type, lease.attempt, parameters,
                checkpoint=checkpoint, cancel_event=run.cancel, preempt_event=run.preempt,
                owner=lease.owner,
                settings=self.settings, artifact_dir=self._attempt_dir(lease),
                on_progress=lambda f, m, s: self._progress(run, f, m, s),
                on_checkpoint=lambda state: self.link.save_checkpoint(
                    lease.task_id, lease.token, state),
                models=self.link.ledger(lease), lineage=lineage,
                cache_dir=cache_dir(self.settings, lease.owner) if lease.cache else None,
            )
            value = spec.handler(parsed, ctx)
            report = Report(lease.task_id, lease.token, "completed", lineage=lineage.text(),
                            environment=lineage.environment(), **self._result(lease, value))
            if tracked(self.settings, lease.task_type, spec.builtin):
                # off the task's path: its report does not wait for MLflow (in order, one
                # run at a time; a process that dies first leaves that run unlogged)
                self._tracking.submit(track, self.settings, None, lease, value, lineage)
        except Exception as exc:
            report = self._failure(run, exc)
        elapsed = time.time() - run.started
        self.memory.end()
        self._avg_run_s = 0.8 * self._avg_run_s + 0.2 * max(elapsed, 1e-6)
        self.capture.current = None
        run.log.add("raytasks", _ending(report, elapsed))
        with self._lock:
            self._current = None
            self._held.pop(lease.task_id, None)
            self.completed += 1
        self._send_progress(run)  # before the report: it lands while the lease holds
        # the last lines go with the report, in its fenced commit: no round trip of their own
        with self._beating:  # after a heartbeat in flight has stored the lines it took
            lines = tuple(run.log.take())
        return None if run.lost else replace(report, lines=lines, run_s=elapsed,
                                             **run.usage.measured())

    @staticmethod
    def _failure(run: _Running, exc: Exception) -> Report:
        """The report of an attempt whose handler raised ``exc``: preempted when it was
        preempted (however it stopped), cancelled on a cancel, else failed."""
        lease = run.lease
        if run.preempt.is_set() and not run.cancel.is_set():
            return Report(lease.task_id, lease.token, "preempted", error=TaskErrorInfo(
                type="TaskPreemptedError", reason="preempted",
                message="preempted for a task with a deadline; it resumes from its "
                        "checkpoint"))
        if isinstance(exc, TaskCancelledError | TaskPreemptedError):
            return Report(lease.task_id, lease.token, "cancelled", error=TaskErrorInfo(
                type="TaskCancelledError", message=str(exc), reason="cancelled"))
        return Report(lease.task_id, lease.token, "failed", error=TaskErrorInfo(
            type=type(exc).__name__, message=str(exc)[:4000],
            traceback=traceback.format_exc()[-16000:], reason="error"))

    def _progress(self, run: _Running, fraction: float, message: str,
                  stage: str | None) -> None:
        run.progress, run.progress_at = (fraction, message, stage), time.time()

    def _spec(self, lease: Lease) -> TaskTypeSpec:
        spec = self._specs.get(lease.handler_version)
        if spec is None:
            spec = TaskTypeSpec.loads(self.link.type_blob(lease.task_type))
            self._specs = {lease.handler_version: spec}
        return spec

    def _attempt_dir(self, lease: Lease) -> Path:
        """``<artifact_root>/<task>/<attempt>-<token>``: this attempt's files, nobody else's."""
        assert self.settings.artifact_root is not None
        return Path(self.settings.artifact_root) / lease.task_id / \
            f"{lease.attempt}-{lease.token}"

    def _result(self, lease: Lease, value: Any) -> dict[str, Any]:
        """Small results inline; large ones as a file in the attempt's own directory.

        The task points at the file only if the manager accepts this attempt's
        report (fenced by its lease token), so a superseded attempt's file is never read.
        """
        text = to_json(clean_floats(value))
        if len(text) <= self.settings.inline_result_max_bytes:
            return {"result": text, "result_uri": None}
        path = self._attempt_dir(lease) / "result.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        return {"result": None, "result_uri": str(path)}

    # ----------------------------------------------------------- monitor loop

    def _monitor_loop(self) -> None:
        last_beat = 0.0
        tick = min(0.1, self.settings.heartbeat_interval_s)
        while not self._stop.wait(tick):
            now = time.time()
            with self._lock:
                run = self._current
                held = list(self._held.values())
            if run is not None:
                self._enforce_limits(run, now)
            due = [r for r in held if r.progress is not None
                   and r.progress_sent < r.progress_at and r.progress_sent < now - 0.2]
            if due or (held and now - last_beat >= self.settings.heartbeat_interval_s):
                last_beat = now
                self._heartbeat(held, due, now)

    def _heartbeat(self, held: list[_Running], due: list[_Running], now: float) -> None:
        for r in due:
            r.progress_sent = now
        for r in held:
            r.beat_sent = True
        with self._beating:
            taken = [(r.log, r.log.take()) for r in held if r.log is not None]
            try:
                answer = self.link.heartbeat(
                    self.executor_id,
                    [(r.lease.task_id, r.lease.token) for r in held if not r.lost],
                    [self._progress_report(r) for r in due],
                    [line for _log, lines in taken for line in lines])
            except Exception as exc:
                log.warning("executor %s: heartbeat failed (%s)", self.executor_id, exc)
                for attempt_log, lines in taken:  # sent with the next beat or the report
                    attempt_log.give_back(lines)
                return
        by_id = {r.lease.task_id: r for r in held}
        with self._lock:
            for task_id in answer.lost:
                run = by_id.get(task_id)
                if run is not None and not run.lost:
                    log.warning("executor %s: lost the lease of %s; stopping that attempt",
                                self.executor_id, task_id)
                    run.lost = True
                    self._stop_attempt(run)
            for task_id in answer.cancel:
                run = by_id.get(task_id)
                if run is not None:
                    self._stop_attempt(run)
            for task_id, grace_s in answer.preempt:
                run = by_id.get(task_id)
                if run is not None:
                    self._preempt(run, grace_s)

    def _stop_attempt(self, run: _Running) -> None:
        run.cancel.set()
        if run.cancel_at is None:
            run.cancel_at = time.time()

    def _progress_report(self, run: _Running) -> ProgressReport:
        assert run.progress is not None
        fraction, message, stage = run.progress
        return ProgressReport(task_id=run.lease.task_id, token=run.lease.token,
                              percentage=fraction, message=message, stage=stage,
                              updated_at=run.progress_at, owner=run.lease.owner)

    def _send_progress(self, run: _Running) -> None:
        """The attempt's last progress, if unsent, written before its report."""
        if run.progress is None or run.progress_sent >= run.progress_at:
            return
        try:
            self.link.heartbeat(self.executor_id, [], [self._progress_report(run)], [])
        except Exception as exc:
            log.warning("executor %s: progress report failed (%s)", self.executor_id, exc)

    def _enforce_limits(self, run: _Running, now: float) -> None:
        lease = run.lease
        timeout_s, max_cpu_s = lease.timeout_s, lease.max_cpu_s
        usage = run.usage
        oom = self.memory.check(lease.task_id, lease.token, usage.sample(), usage.rss0, usage.peak,
                                usage.cpu_s(), now - run.started) if usage else None
        if oom is not None and usage is not None and not run.lost:
            self._abandon(run, Report(lease.task_id, lease.token, "failed",
                                      error=oom_error(usage.peak, oom)))
        elif run.lost and run.cancel_at is not None and \
                now - run.cancel_at > self.settings.cancel_grace_s:
            self._abandon(run, None)
        elif max_cpu_s is not None and run.usage is not None and \
                run.usage.cpu_s() > max_cpu_s:
            self._abandon(run, Report(lease.task_id, lease.token, "failed", error=TaskErrorInfo(
                type="TaskCpuLimitError", reason="cpu_limit",
                message=f"used over its limit of {max_cpu_s:g} CPU seconds; the process was "
                        "replaced")))
        elif timeout_s is not None and run.started and now - run.started > timeout_s:
            self._abandon(run, Report(lease.task_id, lease.token, "failed", error=TaskErrorInfo(
                type="TaskTimeoutError", reason="timeout",
                message=f"ran over its timeout of {timeout_s:g} s; the process was replaced")))
        elif run.preempt_by is not None and now > run.preempt_by and not run.cancel.is_set():
            self._abandon(run, Report(lease.task_id, lease.token, "preempted",
                                      error=TaskErrorInfo(
                type="TaskPreemptedError", reason="preempted",
                message="preempted for a task with a deadline, and did not stop within "
                        "its grace time; the process was replaced")))
        elif run.cancel_at is not None and now - run.cancel_at > self.settings.cancel_grace_s:
            self._abandon(run, Report(lease.task_id, lease.token, "cancelled", error=TaskErrorInfo(
                type="TaskCancelledError", reason="cancelled",
                message="did not stop within the cancel grace period; the process was replaced")))

    def _report(self, reports: list[Report]) -> None:
        """Send reports outside the work loop, trying for a while (a manager restarting)."""
        for _ in range(20):
            try:
                self.link.report(reports)
                return
            except Exception:
                time.sleep(0.25)  # if it never lands, the leases expire and are retried

    def _abandon(self, run: _Running, report: Report | None) -> None:
        """Report ``run``'s end, hand back the rest of the batch, and end this process."""
        if run.log is not None:
            self.capture.current = None
            run.log.add("raytasks", report.error.message if report and report.error
                        else "lost its lease (paused or cut off past the TTL): stopped")
            self._send_progress(run)
            if report is not None:
                usage = run.usage.measured() if run.usage is not None else {}
                report = replace(report, lines=tuple(run.log.take()),
                                 run_s=time.time() - run.started if run.started else None,
                                 **usage)
        with self._lock:
            others = [r for r in self._held.values() if r is not run and not r.lost]
        reports = [report] if report is not None else []
        reports += [Report(r.lease.task_id, r.lease.token, "released") for r in others]
        if reports:
            self._report(reports)
        log.warning("executor %s: replacing process after %s of %s", self.executor_id,
                    report.error.reason if report and report.error else "a lost lease",
                    run.lease.task_id)
        self._stop.set()
        self.memory.end()  # the process Ray starts in its place has nothing to recover
        self.exit_process(1)


def _ending(report: Report, elapsed: float) -> str:
    """The framework's last line about an attempt."""
    if report.outcome == "completed":
        return f"attempt completed in {elapsed:.3f} s"
    error = report.error
    what = f"{error.type}: {error.message}" if error else "no error given"
    return f"attempt {report.outcome} after {elapsed:.3f} s: {what}"[:2000]
