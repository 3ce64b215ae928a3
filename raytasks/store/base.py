"""The TaskStore contract: what every backend must do, and the batch it commits."""

from __future__ import annotations

import abc
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from ..errors import StoreError
from ..models import (
    AttemptInfo,
    Task,
    TaskErrorInfo,
    TaskPriority,
    TaskQuery,
    TaskStatus,
    TaskSummary,
)

#: The version an older raytasks reads in ``rt_schema`` to refuse a store newer than itself.
SCHEMA_VERSION = 13


@dataclass(slots=True)
class RowUpdate:
    """Change ``fields`` of one task, only while its guards hold.

    ``token``: the stored ``lease_token`` must equal it (fencing). ``status``: the
    stored status must equal it. A row that is missing or fails a guard makes the
    whole batch fail with :class:`StaleWriteError` (nothing is committed).
    """

    task_id: str
    fields: dict[str, Any]
    token: int | None = None
    status: str | None = None


@dataclass
class WriteBatch:
    """Changes committed together in one transaction (a group commit)."""

    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[RowUpdate] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    #: log lines of accepted reports (``task_id, token, attempt, at, stream, line``): each
    #: task's fenced update is in the same batch, so its lines commit only under its lease
    logs: list[dict[str, Any]] = field(default_factory=list)
    #: intake rows of tasks a client inserts itself (``task_id, client, created_at``)
    intake: list[dict[str, Any]] = field(default_factory=list)
    #: model versions a training attempt saved (rows of ``rt_models``): each task's fenced
    #: update is in the same batch, so a model is recorded only under its attempt's lease
    models: list[dict[str, Any]] = field(default_factory=list)
    #: what accepted attempts used (rows of ``rt_attempts``; their fenced updates are in
    #: the same batch), added to their owner's CPU of the day (``rt_usage``)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    #: lineage environments the batch's completions name (digest: JSON text), stored once
    #: each (``rt_environments``)
    environments: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.inserts or self.updates or self.deletes or self.events or self.logs
                    or self.intake or self.models or self.attempts or self.environments)

    def extend(self, other: WriteBatch) -> None:
        self.inserts += other.inserts
        self.updates += other.updates
        self.deletes += other.deletes
        self.events += other.events
        self.logs += other.logs
        self.intake += other.intake
        self.models += other.models
        self.attempts += other.attempts
        self.environments.update(other.environments)


@dataclass(slots=True)
class ActiveRow:
    """What the TaskManager rebuilds its memory from: one PENDING or RUNNING task."""

    id: str
    task_type: str
    status: TaskStatus
    priority: int
    queue: str
    attempt: int
    max_retries: int
    timeout_s: float | None
    parameters: str  # JSON text
    owner: str | None
    queued: bool
    lease_token: int
    created_at: float
    enqueued_at: float | None
    not_before: float | None
    cancel_requested: bool
    depends_on: list[str]
    lease_request: str | None
    lease_executor: str | None
    max_cpu_s: float | None = None
    deadline: float | None = None
    work_units: int | None = None
    started_at: float | None = None
    preemptions: int = 0
    cached: bool = False  # it takes cached results (a cache key)


class TaskRows(NamedTuple):
    """A page of a task listing."""

    items: list[TaskSummary]
    total: int | None
    next_after: str | None


class StaleWriteError(StoreError):
    """A guarded update found its row changed or gone: memory was behind the store."""

    def __init__(self, task_ids: list[str]) -> None:
        super().__init__(f"{len(task_ids)} task(s) changed in the store meanwhile: "
                         + ", ".join(task_ids[:5]), task_ids=task_ids)

    @property
    def task_ids(self) -> list[str]:
        return list(self.data["task_ids"])


class TaskStore(abc.ABC):
    """Durable state of raytasks.

    The TaskManager is the one authority over tasks: every change of a task's state is
    its plan, committed here. Clients may insert their own plain submits and lent runs,
    and commit a lent run's completion fenced by its lease; each such task keeps an
    intake row until the manager adopts it (``claim_intake``), so the manager's memory
    follows what clients wrote (``raytasks.manager.adoption``).
    """

    url: str

    # -- writes ------------------------------------------------------------------

    @abc.abstractmethod
    def commit(self, batch: WriteBatch) -> list[int]:
        """Apply ``batch`` atomically; return the ids given to its events, in order.

        Raises:
            StaleWriteError: a guarded update's row changed or is gone (nothing applied).
        """

    @abc.abstractmethod
    def append_events(self, rows: list[dict[str, Any]]) -> list[int]:
        """Append ``{"task_id", "kind", "payload", "created_at"}`` rows; return their ids."""

    @abc.abstractmethod
    def record_progress(self, reports: list[tuple[Any, str]], now: float) -> None:
        """Save progress and its events while each attempt still holds its lease."""

    @abc.abstractmethod
    def prune_events(self, before: float) -> int:
        """Delete events older than ``before`` that every delivery cursor has passed."""

    @abc.abstractmethod
    def save_task_type(self, name: str, blob: bytes, version: int) -> None: ...

    @abc.abstractmethod
    def set_cursor(self, name: str, last_id: int) -> None:
        """Remember how far a notification channel has delivered."""

    @abc.abstractmethod
    def log_delivery(self, rows: list[dict[str, Any]]) -> None: ...

    @abc.abstractmethod
    def set_delivery_outcome(self, channel: str, outcome: str, new_outcome: str) -> None: ...

    # -- reads -------------------------------------------------------------------

    @abc.abstractmethod
    def get(self, task_id: str) -> Task | None: ...

    @abc.abstractmethod
    def get_many(self, task_ids: list[str]) -> dict[str, Task]: ...

    @abc.abstractmethod
    def find_idempotent(self, scope: str, keys: list[str]) -> dict[str, Task]:
        """Tasks of one owner (``scope``, "" for none) carrying these keys, by key."""

    @abc.abstractmethod
    def cached(self, key: str, owner: str | None, any_owner: bool = False,
               limit: int = 3) -> list[Task]:
        """The latest COMPLETED tasks whose result is cached under ``key``, newest first:
        of ``owner`` (None: of no owner) unless ``any_owner``."""

    @abc.abstractmethod
    def query(self, query: TaskQuery, *, count: bool = True) -> TaskRows:
        """One page of tasks matching ``query``, its total (if counted) and next cursor."""

    @abc.abstractmethod
    def active_rows(self, task_ids: list[str] | None = None) -> list[ActiveRow]:
        """Every PENDING or RUNNING task (for reconciliation after a restart)."""

    @abc.abstractmethod
    def states(self, task_ids: list[str]) -> dict[str, tuple[TaskStatus, str | None]]:
        """Status and owner of each of these tasks that exists."""

    @abc.abstractmethod
    def status_counts(self) -> dict[str, int]: ...

    @abc.abstractmethod
    def finished_counts(self) -> dict[tuple[str | None, str], int]:
        """Finished tasks by (owner, status)."""

    @abc.abstractmethod
    def finished_before(self, before: float, limit: int,
                        columns: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Rows of tasks that finished before ``before``, oldest first: whole, or only
        ``columns``."""

    @abc.abstractmethod
    def events_after(self, after_id: int, limit: int = 1000) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def max_event_id(self) -> int: ...

    @abc.abstractmethod
    def get_progress(self, task_id: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def recent_runs(self, limit: int) -> list[tuple[str, str, int | None, float]]:
        """The latest completed tasks' (type, parameters JSON, work units, run seconds)."""

    @abc.abstractmethod
    def usage_of_day(self, day: str) -> dict[str, tuple[float, int]]:
        """(CPU seconds, attempts preempted) of each owner's attempts on ``day``
        (``YYYY-MM-DD``, UTC)."""

    @abc.abstractmethod
    def attempts(self, task_id: str) -> list[AttemptInfo]:
        """The attempts of a task that reported, in order."""

    @abc.abstractmethod
    def runs_of(self, task_ids: list[str]) -> list[tuple[str, str, int | None, float]]:
        """(type, parameters, work units, seconds) of the whole completed attempts of
        ``task_ids``: what run times learn from the runs clients committed."""

    @abc.abstractmethod
    def estimate_errors(self, since: float) -> list[tuple[str, float, float]]:
        """(type, predicted, actual seconds) of whole attempts completed since ``since``."""

    @abc.abstractmethod
    def model_digest(self, key: str) -> str | None:
        """The SHA-256 a training attempt recorded for the model version ``key``."""

    @abc.abstractmethod
    def task_types(self) -> list[tuple[str, bytes, int]]: ...

    @abc.abstractmethod
    def get_cursor(self, name: str) -> int | None: ...

    @abc.abstractmethod
    def deliveries(self, channel: str | None = None, outcome: str | None = None,
                   limit: int = 1000) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def schema_version(self) -> int: ...

    @abc.abstractmethod
    def close(self) -> None: ...


# --- row <-> model helpers shared by backends ----------------------------------


def to_json(value: Any) -> str:
    return _ENCODER.encode(value)


def _json_default(value: Any) -> Any:
    # numpy / pandas scalars and arrays, datetimes, sets: what handlers commonly return
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


# one encoder for every call: json.dumps with options builds a new one each time
_ENCODER = json.JSONEncoder(default=_json_default, separators=(",", ":"), allow_nan=False)


def clean_floats(value: Any) -> Any:
    """Replace NaN/inf (not JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_floats(v) for v in value]
    return value


def cpu_day(at: float) -> str:
    """The UTC day (``YYYY-MM-DD``) CPU used at ``at`` counts for."""
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def encode_tags(tags: list[str]) -> str:
    return "," + ",".join(tags) + "," if tags else ""


def decode_tags(raw: str | None) -> list[str]:
    return [t for t in (raw or "").split(",") if t]


def row_to_task(row: Any) -> Task:
    """The one way a Task is built from its fields: a stored row (a result row, or a mapping
    of its columns), or the dict of a row about to be stored, whose missing fields take a
    new task's values and whose tags, parameters and lists may still be Python values.
    Built without validating again: every field is in its model's form already (the
    finished-task stream reads many)."""
    m = getattr(row, "_mapping", row)
    created = datetime.fromtimestamp(m["created_at"], tz=UTC)
    tags, result, error = m["tags"], m.get("result"), m.get("error")
    return Task.model_construct(
        id=m["id"],
        name=m["name"],
        task_type=m["task_type"],
        status=TaskStatus(m["status"]),
        priority=TaskPriority(m["priority"]),
        queue=m["queue"],
        parameters=_decoded(m["parameters"], "{}", dict),
        attempt=m.get("attempt", 0),
        max_retries=m["max_retries"],
        timeout_s=m["timeout_s"],
        depends_on=_decoded(m["depends_on"], "[]", list),
        idempotency_key=m["idempotency_key"],
        tags=list(tags) if isinstance(tags, list | tuple) else decode_tags(tags),
        owner=m["owner"],
        notify=_decoded(m["notify"], "[]", list),
        result=json.loads(result) if result is not None else None,
        result_uri=m.get("result_uri"),
        error=TaskErrorInfo.model_validate_json(error) if error else None,
        cancel_requested=bool(m.get("cancel_requested", False)),
        lease_token=m.get("lease_token", 0),
        not_before=ts(m.get("not_before")),
        created_at=created,
        updated_at=ts(m.get("updated_at")) or created,
        started_at=ts(m.get("started_at")),
        finished_at=ts(m.get("finished_at")),
        max_cpu_s=m.get("max_cpu_s"),
        cpu_s=m.get("cpu_s"),
        peak_rss_bytes=m.get("peak_rss_bytes"),
        deadline=ts(m.get("deadline")),
        work_units=m.get("work_units"),
        preemptions=m.get("preemptions") or 0,
        lineage=_decoded(m.get("lineage"), "null", dict) if m.get("lineage") else None,
        cached_from=m.get("cached_from"),
        rerun_of=m.get("rerun_of"),
    )


def _decoded(value: Any, empty: str, make: Callable[..., Any]) -> Any:
    """JSON text decoded; a value already decoded (a list, a dict) as it is."""
    return loads_or(value, empty, make) if isinstance(value, str) else make(value)


def with_artifact(task: Task) -> Task:
    """``task`` with its result loaded, where it was stored as a file (the accepted
    attempt's own: a path the store holds, never one from a request)."""
    if task.result is None and task.result_uri:
        with open(task.result_uri, encoding="utf-8") as fh:
            return task.model_copy(update={"result": json.loads(fh.read())})
    return task


def loads_or(text: str, empty: str, make: Callable[[], Any]) -> Any:
    """Decode JSON text; the common empty value (``"[]"``, ``"{}"``) without the decoder."""
    return make() if text == empty else json.loads(text)


def row_to_summary(row: Any) -> TaskSummary:
    m = row._mapping
    error = json.loads(m["error"]) if m["error"] else None
    return TaskSummary(
        id=m["id"],
        name=m["name"],
        task_type=m["task_type"],
        status=TaskStatus(m["status"]),
        priority=m["priority"],
        queue=m["queue"],
        attempt=m["attempt"],
        owner=m["owner"],
        tags=decode_tags(m["tags"]),
        error_reason=error["reason"] if error else None,
        created_at=ts(m["created_at"]),
        started_at=ts(m["started_at"]),
        finished_at=ts(m["finished_at"]),
    )
