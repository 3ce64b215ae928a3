"""TaskExecutor: pulls leases for one task type, runs handlers, reports with fencing tokens.

One executor is one process (a restartable Ray actor). Its work thread leases
and runs tasks; its monitor thread sends heartbeats and progress, and enforces
timeouts and forced cancels: when a handler overstays, the monitor reports
the outcome and ends the process, and Ray starts a fresh one in its place, so
the pool keeps its size even when the handler is CPU-bound code that never
looks at its context.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .context import TaskExecutionContext
from .errors import TaskCancelledError
from .models import Lease, TaskErrorInfo
from .registry import TaskTypeSpec
from .settings import Settings
from .store.base import clean_floats, to_json

log = logging.getLogger(__name__)

#: How long a batch of leased tasks should take; short tasks are leased many at a
#: time (throughput), long ones one at a time (priority is decided at the lease).
TARGET_BATCH_S = 0.02


@dataclass
class _Running:
    lease: Lease
    started: float
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_at: float | None = None
    progress: tuple[float, str, str | None] | None = None
    progress_sent: float = 0.0


class TaskExecutor:
    """The plain class behind one executor actor.

    ``call(method, *args)`` performs a blocking call on a system actor
    (``"manager"`` or ``"tracker"``); ``runtime`` supplies it, tests may too.
    ``exit_process`` ends the process (``os._exit`` in production).
    """

    def __init__(
        self,
        executor_id: str,
        task_type: str,
        settings: Settings,
        call: Callable[..., Any],
        *,
        exit_process: Callable[[int], None] = os._exit,
        start: bool = True,
    ) -> None:
        self.executor_id = executor_id
        self.task_type = task_type
        self.settings = settings
        self.call = call
        self.exit_process = exit_process
        self._specs: dict[int, TaskTypeSpec] = {}
        self._lock = threading.Lock()
        self._held: dict[str, _Running] = {}  # leased, not yet reported
        self._current: _Running | None = None
        self._cancelled: set[str] = set()
        self._avg_run_s = 1.0
        self._stop = threading.Event()
        self.completed = 0
        self.pid = os.getpid()
        if start:
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
            run.cancel.set()
            if run.cancel_at is None:
                run.cancel_at = time.time()
            self._cancelled.add(task_id)
        return True

    def state(self) -> dict[str, Any]:
        with self._lock:
            current = self._current.lease.task_id if self._current else None
            return {"executor_id": self.executor_id, "task_type": self.task_type,
                    "pid": self.pid, "current": current, "held": len(self._held),
                    "completed": self.completed}

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------- work loop

    def _batch_size(self) -> int:
        return max(1, min(self.settings.lease_batch_max, int(TARGET_BATCH_S / self._avg_run_s)))

    def _work_loop(self) -> None:
        reports: list[dict[str, Any]] = []
        backoff = 0.1
        while not self._stop.is_set():
            try:
                leases = self.call("report_and_lease", reports, self.executor_id,
                                   [self.task_type], self._batch_size(), 1.0)
                reports = []
                backoff = 0.1
            except Exception as exc:  # manager restarting: keep the reports, try again
                log.warning("executor %s: manager call failed (%s); retrying",
                            self.executor_id, type(exc).__name__)
                time.sleep(backoff)
                backoff = min(2.0, backoff * 2)
                continue
            with self._lock:
                for lease in leases:
                    self._held[lease.task_id] = _Running(lease, 0.0)
            for lease in leases:
                reports.append(self._run(lease))

    def _run(self, lease: Lease) -> dict[str, Any]:
        with self._lock:
            run = self._held[lease.task_id]
            run.started = time.time()
            self._current = run
        base = {"task_id": lease.task_id, "token": lease.token}
        try:
            if lease.task_id in self._cancelled:
                raise TaskCancelledError(lease.task_id)
            spec = self._spec(lease)
            checkpoint = self.call("checkpoint", lease.task_id) if lease.attempt else None
            ctx = TaskExecutionContext(
                lease.task_id, lease.task_type, lease.attempt, lease.parameters,
                checkpoint=checkpoint, cancel_event=run.cancel, owner=lease.owner,
                settings=self.settings, artifact_dir=self._attempt_dir(lease),
                on_progress=lambda f, m, s: setattr(run, "progress", (f, m, s)),
                on_checkpoint=lambda state: self.call(
                    "save_checkpoint", lease.task_id, lease.token, state),
            )
            value = spec.handler(spec.parse(lease.parameters), ctx)
            outcome = {**base, "outcome": "completed", **self._result(lease, value)}
        except TaskCancelledError as exc:
            outcome = {**base, "outcome": "cancelled", "error": TaskErrorInfo(
                type="TaskCancelledError", message=str(exc), reason="cancelled").model_dump()}
        except Exception as exc:
            outcome = {**base, "outcome": "failed", "error": TaskErrorInfo(
                type=type(exc).__name__, message=str(exc)[:4000],
                traceback=traceback.format_exc()[-16000:], reason="error").model_dump()}
        elapsed = time.time() - run.started
        self._avg_run_s = 0.8 * self._avg_run_s + 0.2 * max(elapsed, 1e-6)
        with self._lock:
            self._current = None
            self._held.pop(lease.task_id, None)
            self._cancelled.discard(lease.task_id)
            self.completed += 1
        if run.progress is not None and run.progress_sent < run.started:
            self._send_progress([(lease.task_id, run.progress)])
        return outcome

    def _spec(self, lease: Lease) -> TaskTypeSpec:
        spec = self._specs.get(lease.handler_version)
        if spec is None:
            spec = TaskTypeSpec.loads(self.call("type_blob", lease.task_type))
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
            due = [r for r in held if r.progress is not None and r.progress_sent < now - 0.2]
            if due or (held and now - last_beat >= self.settings.heartbeat_interval_s):
                last_beat = now
                self._heartbeat(held, due, now)

    def _heartbeat(self, held: list[_Running], due: list[_Running], now: float) -> None:
        for r in due:
            r.progress_sent = now
        try:
            answer = self.call("heartbeat", self.executor_id,
                               [(r.lease.task_id, r.lease.token) for r in held],
                               [_progress_row(r.lease.task_id, r.progress) for r in due
                                if r.progress is not None])
        except Exception as exc:
            log.warning("executor %s: heartbeat failed (%s)", self.executor_id, exc)
            return
        for task_id in answer.get("cancel", []):
            run = next((r for r in held if r.lease.task_id == task_id), None)
            if run is not None:
                self.cancel(task_id, run.lease.token)

    def _send_progress(self, rows: list[tuple[str, tuple[float, str, str | None]]]) -> None:
        try:
            self.call("heartbeat", self.executor_id, [],
                      [_progress_row(task_id, p) for task_id, p in rows])
        except Exception as exc:
            log.warning("executor %s: progress report failed (%s)", self.executor_id, exc)

    def _enforce_limits(self, run: _Running, now: float) -> None:
        lease = run.lease
        timeout_s = lease.timeout_s
        if timeout_s is not None and run.started and now - run.started > timeout_s:
            self._abandon(run, "failed", TaskErrorInfo(
                type="TaskTimeoutError", reason="timeout",
                message=f"ran over its timeout of {timeout_s:g} s; the process was replaced"))
        elif run.cancel_at is not None and now - run.cancel_at > self.settings.cancel_grace_s:
            self._abandon(run, "cancelled", TaskErrorInfo(
                type="TaskCancelledError", reason="cancelled",
                message="did not stop within the cancel grace period; the process was replaced"))

    def _abandon(self, run: _Running, outcome: str, error: TaskErrorInfo) -> None:
        """Report ``run``'s end, hand back the rest of the batch, and end this process."""
        with self._lock:
            others = [r for r in self._held.values() if r is not run]
        reports = [{"task_id": run.lease.task_id, "token": run.lease.token,
                    "outcome": outcome, "error": error.model_dump()}]
        reports += [{"task_id": r.lease.task_id, "token": r.lease.token, "outcome": "released"}
                    for r in others]
        for _ in range(20):
            try:
                self.call("report", reports)
                break
            except Exception:
                time.sleep(0.25)  # if it never lands, the leases expire and are retried
        log.warning("executor %s: replacing process after %s of %s", self.executor_id,
                    error.reason, run.lease.task_id)
        self._stop.set()
        self.exit_process(1)


def _progress_row(task_id: str, progress: tuple[float, str, str | None]) -> dict[str, Any]:
    fraction, message, stage = progress
    return {"task_id": task_id, "percentage": fraction, "message": message, "stage": stage,
            "updated_at": time.time()}
