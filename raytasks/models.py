"""Public data models: what clients send and what raytasks returns."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from . import inputs


class TaskPriority(enum.IntEnum):
    """Lower value runs first."""

    HIGH = 1
    MEDIUM = 2
    LOW = 3


class TaskStatus(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


FailureReason = Literal["error", "timeout", "cpu_limit", "lost", "cancelled", "dependency",
                        "preempted", "drained", "out_of_memory"]

_NAME_MAX = 200


class TaskCreateRequest(BaseModel):
    """A request to create a task. ``parameters`` are checked by the task type's model."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=_NAME_MAX)
    task_type: str = Field(min_length=1, max_length=64)
    parameters: dict[str, Any] = Field(default_factory=dict)
    priority: TaskPriority = TaskPriority.MEDIUM
    queue: str = Field(default="default", min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    timeout_s: float | None = Field(default=None, gt=0)
    max_cpu_s: float | None = Field(default=None, gt=0, le=1e9, description="the most CPU "
                                    "seconds an attempt may use; past it, it is stopped as "
                                    "a timeout is (reason cpu_limit)")
    max_retries: int | None = Field(default=None, ge=0, le=100)
    deadline: datetime | None = Field(
        default=None, description="when it must have finished (a time with its zone; one "
        "without is UTC): within a priority, the scheduler runs the task with the least "
        "slack first")
    depends_on: list[str] = Field(default_factory=list)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    tags: list[str] = Field(default_factory=list)
    owner: str | None = Field(default=None, max_length=200)
    notify: list[str] = Field(default_factory=list)
    cache: bool | None = Field(
        default=None, description="take the result of a finished task of the same type, "
        "code and parameters whose inputs (bars, models, libraries) are unchanged, at once "
        "and without running (raytasks.cache); None: the type's setting (off by default)")

    # untrusted input stops here, before any store or group commit sees it
    @field_validator("notify")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return inputs.check_notify(value)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        return inputs.check_tags(value)

    @field_validator("name", "idempotency_key", "owner")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return None if value is None else inputs.check_text(value)

    @field_validator("parameters")
    @classmethod
    def _plain_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        inputs.check_json_tree(value)
        return value

    @field_validator("deadline")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if not 2000 <= value.year <= 2200:
            raise ValueError("must be a time between the years 2000 and 2200")
        return value


class TaskUpdateRequest(BaseModel):
    """Fields a client may change; priority only while the task is PENDING."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=_NAME_MAX)
    priority: TaskPriority | None = None
    tags: list[str] | None = None
    notify: list[str] | None = None

    # a PATCH is checked exactly like a create
    @field_validator("notify")
    @classmethod
    def _addresses(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else inputs.check_notify(value)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else inputs.check_tags(value)

    @field_validator("name")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return None if value is None else inputs.check_text(value)


class TaskErrorInfo(BaseModel):
    """Why a task failed, stored as data (never a pickled exception)."""

    type: str
    message: str
    traceback: str | None = None
    reason: FailureReason = "error"


class Task(BaseModel):
    """A task as stored."""

    id: str
    name: str
    task_type: str
    status: TaskStatus
    priority: TaskPriority
    queue: str = "default"
    parameters: dict[str, Any] = Field(default_factory=dict)
    attempt: int = 0
    max_retries: int = 0
    timeout_s: float | None = None
    depends_on: list[str] = Field(default_factory=list)
    idempotency_key: str | None = None
    tags: list[str] = Field(default_factory=list)
    owner: str | None = None
    notify: list[str] = Field(default_factory=list)
    result: Any = None
    result_uri: str | None = None
    error: TaskErrorInfo | None = None
    cancel_requested: bool = False
    lease_token: int = 0
    not_before: datetime | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    max_cpu_s: float | None = None
    #: what the last attempt that reported used: CPU seconds (its process and the
    #: processes it started) and peak resident memory
    cpu_s: float | None = None
    peak_rss_bytes: int | None = None
    deadline: datetime | None = None
    #: the work its parameters declare (what its run time is predicted from)
    work_units: int | None = None
    #: attempts the scheduler preempted for others' deadlines (they spend no retry)
    preemptions: int = 0
    #: what the result came from: code and library versions, parameters after defaults,
    #: seeds, a content hash of each code's bars read, each model's SHA-256
    #: (``raytasks.lineage``)
    lineage: dict[str, Any] | None = None
    #: the finished task whose result this one took from the cache (it ran nothing)
    cached_from: str | None = None
    #: the task this one runs again (``rerun``), whose result it is compared with
    rerun_of: str | None = None


class AttemptInfo(BaseModel):
    """One attempt of a task that reported (or whose lease ran out): how it ended."""

    attempt: int
    lease_token: int
    outcome: str  # completed, failed, cancelled, released, preempted
    reason: str | None = None  # the error's reason: error, timeout, cpu_limit, preempted...
    run_s: float | None = None
    #: the run time predicted for it when it was queued
    estimate_s: float | None = None
    cpu_s: float | None = None
    peak_rss_bytes: int | None = None
    reported_at: datetime


class TaskSummary(BaseModel):
    """A row of a task listing (no parameters, no result)."""

    id: str
    name: str
    task_type: str
    status: TaskStatus
    priority: TaskPriority
    queue: str
    attempt: int
    owner: str | None
    tags: list[str]
    error_reason: str | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: a PENDING or RUNNING task's predicted start and finish (``raytasks explain`` says why)
    predicted_start: datetime | None = None
    predicted_finish: datetime | None = None


OrderField = Literal["created_at", "-created_at", "priority", "-priority", "finished_at",
                     "-finished_at", "name", "-name"]


class TaskQuery(BaseModel):
    """Filters, pagination and ordering for ``list_tasks``."""

    model_config = ConfigDict(extra="forbid")

    status: list[TaskStatus] | None = None
    task_type: list[str] | None = None
    priority: list[TaskPriority] | None = None
    queue: str | None = None
    owner: str | None = None
    tags: list[str] | None = Field(default=None, description="tasks carrying all of these tags")
    created_after: datetime | None = None
    created_before: datetime | None = None
    text: str | None = Field(default=None, description="substring of the name")
    offset: int = Field(default=0, ge=0, le=1_000_000,
                        description="rows to skip (prefer ``after`` on large stores)")
    limit: int = Field(default=100, ge=1, le=10_000)
    order_by: OrderField = "-created_at"
    after: str | None = Field(default=None, max_length=400,
                              description="the ``next_after`` of the previous page: "
                                          "keyset pagination, as fast on page 1,000 as on 1")


@dataclass(slots=True)
class QueuedTask:
    """What the scheduler holds for a task waiting to run (small: one per queued task)."""

    task_id: str
    task_type: str
    priority: TaskPriority
    queue: str = "default"
    enqueued_at: float = 0.0
    not_before: float = 0.0
    attempt: int = 0
    owner: str | None = None
    #: when it must have finished (epoch seconds), and how long it is predicted to run:
    #: within a priority, tasks with a deadline go by slack (deadline - run time - now)
    deadline: float | None = None
    estimate_s: float = 0.0

    @property
    def latest_start(self) -> float:
        """When it must start to finish by its deadline (infinity without one)."""
        return math.inf if self.deadline is None else self.deadline - self.estimate_s


class TaskProgress(BaseModel):
    """The latest progress of a task; ``percentage`` is a fraction in 0..1."""

    task_id: str
    status: TaskStatus = TaskStatus.PENDING
    percentage: float = Field(default=0.0, ge=0.0, le=1.0)
    message: str = ""
    stage: str | None = None
    eta_s: float | None = None
    updated_at: float = 0.0

    @property
    def eta(self) -> float | None:
        return self.eta_s


class TaskStatusNotification(BaseModel):
    """A task changed status."""

    kind: Literal["status"] = "status"
    event_id: int
    task_id: str
    status: TaskStatus
    previous: TaskStatus | None = None
    attempt: int = 0
    priority: TaskPriority = TaskPriority.MEDIUM
    task_type: str = ""
    owner: str | None = None
    error: TaskErrorInfo | None = None
    at: datetime


class TaskProgressNotification(BaseModel):
    """A task's progress moved (throttled)."""

    kind: Literal["progress"] = "progress"
    event_id: int
    task_id: str
    owner: str | None = None
    percentage: float
    message: str = ""
    stage: str | None = None
    eta_s: float | None = None
    at: datetime


TaskNotification = TaskStatusNotification | TaskProgressNotification


class TaskExplanation(BaseModel):
    """Why a task is where it is, and when it should start and finish: each statement from
    the manager's state at the moment it was asked (``raytasks explain``)."""

    task_id: str
    status: TaskStatus
    #: what holds it (codes): not_queued, dependencies, backoff, quota, type_limit,
    #: behind, no_executor, executors_busy, executors_starting, running, finished
    causes: list[str] = Field(default_factory=list)
    #: the same, as sentences a researcher reads
    reasons: list[str] = Field(default_factory=list)
    #: tasks of its type ahead of it, by priority (PENDING, queued and ready)
    ahead: dict[str, int] = Field(default_factory=dict)
    place: int | None = None  # 1 = next to start among its type
    dependencies: list[str] = Field(default_factory=list)  # not completed yet
    not_before: datetime | None = None
    executors: dict[str, int] = Field(default_factory=dict)  # idle, busy, starting
    estimate_s: float | None = None
    #: median absolute percentage error of the estimates of its type and kind so far
    estimate_error: float | None = None
    predicted_start: datetime | None = None
    predicted_finish: datetime | None = None
    deadline: datetime | None = None
    progress_rate: float | None = None  # RUNNING: fraction per second


class QueueStats(BaseModel):
    queue: str
    waiting: dict[str, int]
    delayed: int
    leased: int
    max_queue_size: int
    oldest_wait_s: float
    waiting_by_type: dict[str, int] = Field(default_factory=dict,
                                            description="ready to run, by task type")
    leased_by_type: dict[str, int] = Field(default_factory=dict,
                                           description="running (leased), by task type")


class TaskTypeInfo(BaseModel):
    name: str
    timeout_s: float | None
    max_retries: int
    max_concurrency: int | None
    preemptible: bool = False
    tolerance: float = 0.0  # a re-run's numbers within it reproduce a result
    volatile: list[str] = Field(default_factory=list)  # result fields a re-run may change
    builtin: bool
    placeholder: bool
    version: int = 0
