"""Typed messages between executors, the progress tracker and the TaskManager.

Small frozen dataclasses (cheap to pickle, one per task and call), so a reader,
mypy and a call graph can follow a task from an executor into the manager.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from .models import TaskErrorInfo

#: A message's fields as a plain list: Ray serialises it as MessagePack, without pickle
#: (a class, even a tuple, costs it a pickler per call).
Wire = list[Any]

#: What an attempt ended in. ``released``: handed back unstarted (same attempt, no backoff);
#: ``preempted``: stopped for another task's deadline (a new attempt, no retry spent).
Outcome = Literal["completed", "failed", "cancelled", "released", "preempted"]


@dataclass(frozen=True, slots=True)
class Lease:
    """A task handed to an executor: run it, report with ``token`` before ``deadline``."""

    task_id: str
    task_type: str
    token: int
    attempt: int
    parameters: str  # JSON text: decoded by the executor, not on the manager's event loop
    timeout_s: float | None
    deadline: float
    handler_version: int = 0
    owner: str | None = None
    max_cpu_s: float | None = None
    #: whether the task takes cached results (its handler may reuse parts: the sweep's rows)
    cache: bool = False

    def wire(self) -> Wire:
        """Its fields as a plain list (``Lease(*wire)`` again): a lent run's call."""
        return [self.task_id, self.task_type, self.token, self.attempt, self.parameters,
                self.timeout_s, self.deadline, self.handler_version, self.owner,
                self.max_cpu_s, self.cache]


@dataclass(frozen=True, slots=True)
class Report:
    """How an attempt ended, fenced by its lease ``token``.

    ``result`` is the JSON text of a small result; a large one is a file in the
    attempt's own directory (``result_uri``). Either becomes the task's result
    only if this attempt still holds the lease when the report is committed.
    """

    task_id: str
    token: int
    outcome: Outcome
    result: str | None = None
    result_uri: str | None = None
    error: TaskErrorInfo | None = None
    #: the attempt's last log lines, written in the report's own fenced commit
    lines: tuple[LogLine, ...] = ()
    #: what the attempt used: CPU seconds (its executor's process and the processes it
    #: started) and peak resident memory (bytes); None where it was not measured
    cpu_s: float | None = None
    peak_rss_bytes: int | None = None
    #: how long the handler ran (seconds), what run-time estimates learn from
    run_s: float | None = None
    #: a completion's lineage: its own part, JSON text (``raytasks.lineage.Lineage.text``),
    #: and its environment's (digest, JSON text), stored once
    lineage: str | None = None
    environment: tuple[str, str] | None = None

    def wire(self) -> Wire:
        """Its fields as plain lists (``Report.from_wire``): a lent run's answer."""
        return [self.task_id, self.token, self.outcome, self.result, self.result_uri,
                self.error, [list(line) for line in self.lines], self.cpu_s,
                self.peak_rss_bytes, self.run_s, self.lineage, self.environment]

    @classmethod
    def from_wire(cls, wire: Wire) -> Report:
        (task_id, token, outcome, result, result_uri, error, lines, cpu_s, peak, run_s,
         lineage, environment) = wire
        return cls(task_id, token, outcome, result, result_uri, error,
                   tuple(LogLine(*line) for line in lines), cpu_s, peak, run_s, lineage,
                   tuple(environment) if environment else None)


@dataclass(frozen=True, slots=True)
class ReportAnswer:
    accepted: list[str]
    rejected: list[str]


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    """An executor's one call per batch: report what it ran, lease what is next.

    ``request_id`` makes the call idempotent: Ray retrying it after a manager
    restart gets the leases the first call was granted, never a second set.
    """

    request_id: str
    executor_id: str
    task_types: list[str]
    n: int = 1
    wait_s: float = 0.0
    reports: list[Report] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RenewAnswer:
    """Heartbeat answer: leases this executor no longer holds, tasks to cancel, and tasks
    preempted (each with its grace time: seconds to checkpoint and stop)."""

    lost: list[str] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)
    preempt: list[tuple[str, float]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ProgressReport:
    """A running attempt's progress, fenced by its lease ``token`` like its report."""

    task_id: str
    token: int
    percentage: float
    message: str = ""
    stage: str | None = None
    updated_at: float = 0.0
    owner: str | None = None


class NewTask(NamedTuple):
    """A create request in its compact form (what a submit sends; pickles as a tuple).

    ``checked_version`` is the task type's version whose parameter model the client
    already validated ``parameters`` against (their work units in ``work_units``); the
    manager re-validates when it holds another version, or when it is None.
    """

    id: str
    name: str
    task_type: str
    parameters: dict[str, Any]
    priority: int = 2
    queue: str = "default"
    timeout_s: float | None = None
    max_retries: int | None = None
    depends_on: tuple[str, ...] = ()
    idempotency_key: str | None = None
    tags: tuple[str, ...] = ()
    owner: str | None = None
    notify: tuple[str, ...] = ()
    checked_version: int | None = None
    work_units: int | None = None
    max_cpu_s: float | None = None
    deadline: float | None = None  # epoch seconds
    cache: bool | None = None


class Ack(NamedTuple):
    """A submit's answer for a task it created (the client knows the rest of it)."""

    id: str
    created_at: float
    max_retries: int
    timeout_s: float | None


@dataclass(frozen=True, slots=True)
class IntakeGrant:
    """What a client may commit itself (the intake of plain submits), and where.

    ``credits``: tasks it may add to each queue before ``ttl_s`` (from its request) has
    passed; the manager holds that much room for it. ``types``: per task type the
    version whose parameter model the client must have validated with (None: the type
    has no model), and the defaults of ``timeout_s`` and ``max_retries`` a request
    without them gets.
    """

    store_url: str
    credits: dict[str, int]
    ttl_s: float
    types: dict[str, tuple[int | None, float | None, int]]
    max_parameters_bytes: int
    #: the Ray node the manager runs on: a SQLite store is shared on that node only
    node_id: str | None = None


@dataclass(frozen=True, slots=True)
class Loan:
    """An idle executor the manager lent to one client, exclusively, for ``duration_s``.

    The client runs lone tasks of ``task_type`` on it (``run_lent``), each committed by
    the client RUNNING under its first lease before it is sent; the executor takes
    nothing from the manager's queues until the loan ends.
    """

    loan_id: str
    executor_id: str
    task_type: str
    handler_version: int
    duration_s: float
    lease_ttl_s: float  # of each lent run's lease


@dataclass(frozen=True, slots=True)
class Work:
    """The manager's answer to an executor's call for work: leases, or a loan to a client."""

    leases: list[Lease] = field(default_factory=list)
    loan: Loan | None = None


class WatchAnswer(NamedTuple):
    """Of the tasks a session watches: those already finished, and ids that do not exist."""

    finished: list[str]
    missing: list[str]


class LogLine(NamedTuple):
    """One line an attempt printed or logged (``stream``: stdout, stderr, a log level, or
    raytasks for the framework's own lines), fenced by the attempt's lease ``token``."""

    task_id: str
    token: int
    attempt: int
    at: float
    stream: str
    line: str
