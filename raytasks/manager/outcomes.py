"""What an attempt's report does to its task: pure decisions, checked against the one table.

A report that arrives while a cancel was requested ends the task CANCELLED,
unless the attempt *completed*: a completion already in flight wins over a
cancel (the work was done and its result is valid), as a revoke does in
Celery. Failures go back to the queue while retries remain, after an
exponential backoff with jitter. A preempted attempt goes back at once under a new
attempt that resumes from its checkpoint; it spends no retry (``preemptions`` counts it,
and retries left are ``max_retries`` minus the attempts that were not preempted).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from ..lifecycle import check_transition, retry_delay_s
from ..messages import Report
from ..models import TaskErrorInfo, TaskStatus
from ..settings import Settings
from .state import Entry


@dataclass(frozen=True, slots=True)
class Transition:
    """The planned change: the new status, the stored fields, when to queue it again."""

    target: TaskStatus
    fields: dict[str, Any]
    requeue_at: float | None = None
    error: str | None = None

    @property
    def attempt(self) -> int | None:
        value = self.fields.get("attempt")
        return None if value is None else int(value)


def completion(report: Report, now: float) -> dict[str, Any]:
    """The stored fields of an attempt's accepted completion, but its status."""
    return {"result": report.result, "result_uri": report.result_uri, "error": None,
            "finished_at": now, "lineage": report.lineage}


def decide(entry: Entry, report: Report, now: float, settings: Settings,
           rng: random.Random) -> Transition:
    """The transition ``report`` makes ``entry`` (a RUNNING task under the report's lease).

    Raises:
        InvalidTransitionError: never for a current lease (the table allows all of these).
    """
    fields: dict[str, Any] = {"updated_at": now, **usage_fields(report)}
    requeue_at: float | None = None
    error_json: str | None = None
    if report.outcome == "released":  # handed back unstarted: same attempt, no backoff
        target = TaskStatus.PENDING
        requeue_at = now
    elif report.outcome == "completed":
        target = TaskStatus.COMPLETED
        fields.update(completion(report, now))
    elif report.outcome == "preempted" and not entry.cancel_requested:
        target = TaskStatus.PENDING
        requeue_at = now
        error_json = (report.error or TaskErrorInfo(
            type="TaskPreemptedError", reason="preempted", message="preempted")).model_dump_json()
        fields.update(attempt=entry.attempt + 1, preemptions=entry.preemptions + 1,
                      error=error_json)
    else:
        error = report.error or TaskErrorInfo(type="Unknown", message="no error reported")
        if report.outcome == "cancelled" or entry.cancel_requested:
            target = TaskStatus.CANCELLED
            error = error.model_copy(update={"reason": "cancelled"})
        elif retries_spent(entry) < entry.max_retries and retried(entry, error, settings):
            target = TaskStatus.PENDING
        else:
            target = TaskStatus.FAILED
        error_json = error.model_dump_json()
        fields["error"] = error_json
        if target is TaskStatus.PENDING:
            delay = retry_delay_s(retries_spent(entry) + 1, settings.retry_backoff_base_s,
                                  settings.retry_backoff_max_s, settings.retry_jitter, rng)
            requeue_at = now + delay
            fields.update(attempt=entry.attempt + 1)
        else:
            fields["finished_at"] = now
    check_transition(entry.task_id, entry.status, target)
    fields["status"] = target.value
    if requeue_at is not None:
        fields.update(not_before=requeue_at if requeue_at > now else None, enqueued_at=now,
                      lease_request=None, lease_executor=None)
    return Transition(target, fields, requeue_at, error_json)


def retried(entry: Entry, error: TaskErrorInfo, settings: Settings) -> bool:
    """Whether a failure may spend a retry: an attempt ended for memory only if its
    type says so (``retry_oom``: the same parameters allocate the same memory again)."""
    return error.reason != "out_of_memory" or settings.for_type(entry.task_type).retry_oom


def drained(report: Report) -> Report:
    """A preempted attempt's report, as handed back from a node being drained."""
    error = report.error or TaskErrorInfo(type="TaskPreemptedError", message="")
    error = error.model_copy(update={
        "reason": "drained", "message": "handed back: its node was being drained (removed "
        "by the autoscaler or an operator); it resumes from its checkpoint on another node"})
    return replace(report, error=error)


def retries_spent(entry: Entry) -> int:
    """The retries ``entry`` has used: its attempts after the first, but those preempted."""
    return max(0, entry.attempt - entry.preemptions)


def usage_fields(report: Report) -> dict[str, Any]:
    """The stored fields of what an attempt used, where it was measured."""
    if report.cpu_s is None:
        return {}
    return {"cpu_s": report.cpu_s, "peak_rss_bytes": report.peak_rss_bytes}


def attempt_row(task_id: str, attempt: int, report: Report, owner: str | None,
                now: float, estimate_s: float | None = None) -> dict[str, Any]:
    """The ``rt_attempts`` row of an attempt whose report was accepted (``estimate_s``:
    the run time predicted for it)."""
    return {"task_id": task_id, "attempt": attempt, "lease_token": report.token,
            "owner": owner, "outcome": report.outcome, "cpu_s": report.cpu_s,
            "peak_rss_bytes": report.peak_rss_bytes, "reported_at": now,
            "reason": report.error.reason if report.error else None,
            "run_s": report.run_s, "estimate_s": estimate_s}


def lost_report(task_id: str, token: int, executor_id: str, cancel_requested: bool) -> Report:
    """The report the manager writes for an attempt whose lease expired."""
    return Report(task_id=task_id, token=token,
                  outcome="cancelled" if cancel_requested else "failed",
                  error=TaskErrorInfo(type="LeaseExpired", reason="lost",
                                      message=f"lease held by {executor_id} expired: the "
                                              "executor or its node stopped answering"))
