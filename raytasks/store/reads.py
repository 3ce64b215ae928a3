"""The read path: tasks by id, listings in keyset pages, the active set, states and counts."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..errors import InvalidParametersError
from ..lineage import whole
from ..models import AttemptInfo, Task, TaskQuery, TaskStatus
from . import driver
from .base import ActiveRow, TaskRows, row_to_summary, row_to_task
from .schema import attempts, environments, intake, models, progress, task_types, tasks, usage

_ORDER: dict[str, sa.ColumnElement[Any]] = {
    "created_at": tasks.c.created_at,
    "priority": tasks.c.priority,
    # unfinished tasks sort as finished at 0, so a keyset cursor never meets a NULL
    "finished_at": sa.func.coalesce(tasks.c.finished_at, 0.0),
    "name": tasks.c.name,
}
#: ``total`` is counted up to this many matches; past it a page says None (unknown).
COUNT_CAP = 1000

_SELECT_TASKS = f"SELECT {', '.join(driver.TASK_NAMES)} FROM {tasks.name}"

#: What ``active_rows`` reads, in ``ActiveRow``'s order.
_ACTIVE_COLUMNS = ("id, task_type, status, priority, queue, attempt, max_retries, timeout_s, "
                   "parameters, owner, queued, lease_token, created_at, enqueued_at, "
                   "not_before, cancel_requested, depends_on, lease_request, lease_executor, "
                   "max_cpu_s, deadline, work_units, started_at, preemptions, "
                   "cache_key IS NOT NULL")


def encode_cursor(value: Any, task_id: str) -> str:
    """The opaque ``after`` token of a row: its sort value and id."""
    return base64.urlsafe_b64encode(json.dumps([value, task_id]).encode()).decode()


def decode_cursor(token: str, field: str) -> tuple[Any, str]:
    """The sort value and id of an ``after`` token made for ordering by ``field``.

    Raises:
        InvalidParametersError: a token this store did not make, or made for another sort
            (its value is not of the field's type: a forged cursor never reaches SQL).
    """
    kind: type | tuple[type, ...] = str if field == "name" else (int, float)
    try:
        value, task_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(task_id, str) or len(task_id) > 64 or isinstance(value, bool) \
                or not isinstance(value, kind) or (isinstance(value, str) and len(value) > 200):
            raise ValueError("bad cursor")
        return value, task_id
    except (ValueError, TypeError, UnicodeError, binascii.Error):
        raise InvalidParametersError(
            [{"field": "after", "reason": "not a cursor from a previous page"}]) from None


def _conditions(query: TaskQuery) -> list[sa.ColumnElement[bool]]:
    cond: list[sa.ColumnElement[bool]] = []
    if query.status:
        cond.append(tasks.c.status.in_([s.value for s in query.status]))
    if query.task_type:
        cond.append(tasks.c.task_type.in_(query.task_type))
    if query.priority:
        cond.append(tasks.c.priority.in_([int(p) for p in query.priority]))
    if query.queue:
        cond.append(tasks.c.queue == query.queue)
    if query.owner:
        cond.append(tasks.c.owner == query.owner)
    for tag in query.tags or []:
        cond.append(tasks.c.tags.contains(f",{tag},", autoescape=True))
    if query.created_after:
        cond.append(tasks.c.created_at >= query.created_after.timestamp())
    if query.created_before:
        cond.append(tasks.c.created_at < query.created_before.timestamp())
    if query.text:
        cond.append(tasks.c.name.contains(query.text, autoescape=True))
    return cond


class TaskReader:
    """The store's reads of tasks (and of their progress and task types)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        #: lineage environments read so far, by digest (each written once, never changed)
        self._environments: dict[str, dict[str, Any]] = {}

    def with_environments(self, found: Iterable[Task]) -> None:
        """Give each task's lineage its environment's keys back (``raytasks.lineage``),
        reading those this process has not met yet."""
        named = [t for t in found if t.lineage and "environment" in t.lineage]
        missing = {t.lineage["environment"] for t in named if t.lineage} - set(self._environments)
        if missing:
            with self._engine.connect() as conn:
                for digest, body in driver.query_ids(
                        conn, f"SELECT digest, body FROM {environments.name} WHERE digest IN",
                        sorted(missing)):
                    self._environments[digest] = json.loads(body)
        for task in named:
            task.lineage = whole(task.lineage or {}, self._environments)

    def get(self, task_id: str) -> Task | None:
        return self.get_many([task_id]).get(task_id)

    def get_many(self, task_ids: list[str]) -> dict[str, Task]:
        """The stored tasks among ``task_ids``, by id (plain SQL: every finished task a
        client waits for is read here)."""
        out: dict[str, Task] = {}
        with self._engine.connect() as conn:
            for values in driver.query_ids(conn, f"{_SELECT_TASKS} WHERE id IN", task_ids):
                task = row_to_task(dict(zip(driver.TASK_NAMES, values, strict=True)))
                out[task.id] = task
        self.with_environments(out.values())
        return out

    def checkpoint(self, task_id: str) -> Any:
        with self._engine.connect() as conn:
            raw = conn.execute(
                sa.select(tasks.c.checkpoint).where(tasks.c.id == task_id)).scalar()
        return json.loads(raw) if raw else None

    def find_idempotent(self, scope: str, keys: list[str]) -> dict[str, Task]:
        if not keys:
            return {}
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(tasks).where(tasks.c.idempotency_scope == scope)
                                .where(tasks.c.idempotency_key.in_(driver.padded(keys))))
            found = [row_to_task(r) for r in rows]
        self.with_environments(found)
        return {t.idempotency_key: t for t in found if t.idempotency_key}

    def cached(self, key: str, owner: str | None, any_owner: bool = False,
               limit: int = 3) -> list[Task]:
        sql = f"{_SELECT_TASKS} WHERE cache_key = ? AND status = 'COMPLETED'"
        params: list[Any] = [key]
        if not any_owner:
            sql += " AND owner IS NULL" if owner is None else " AND owner = ?"
            params += [] if owner is None else [owner]
        with self._engine.connect() as conn:
            sql = sql.replace("?", driver.mark(conn))
            raw = driver.query(conn, f"{sql} ORDER BY finished_at DESC LIMIT {int(limit)}",
                               params)
        found = [row_to_task(dict(zip(driver.TASK_NAMES, r, strict=True))) for r in raw]
        self.with_environments(found)
        return found

    def query(self, query: TaskQuery, *, count: bool = True) -> TaskRows:
        """One page of tasks matching ``query``, newest first by default.

        ``next_after`` continues after the page's last row (keyset pagination: an index
        range, not an OFFSET scan). ``total`` counts up to ``COUNT_CAP`` matches (None
        past it, or when ``count`` is off: the manager's counters know the common totals).
        """
        cond = _conditions(query)
        field = query.order_by.lstrip("-")
        column = _ORDER[field]
        desc = query.order_by.startswith("-")
        if query.after:
            value, last_id = decode_cursor(query.after, field)
            key = sa.tuple_(column, tasks.c.id)
            cond.append(key < sa.tuple_(value, last_id) if desc
                        else key > sa.tuple_(value, last_id))
        where = sa.and_(sa.true(), *cond)
        order = [column.desc(), tasks.c.id.desc()] if desc else [column.asc(), tasks.c.id.asc()]
        stmt = (sa.select(tasks, column.label("_key")).where(where).order_by(*order)
                .offset(query.offset).limit(query.limit))
        total: int | None = None
        with self._engine.connect() as conn:
            raw = list(conn.execute(stmt))
            if count and not query.after and not query.offset and len(raw) < query.limit:
                total = len(raw)  # the whole result fits on this first page
            elif count:
                capped = sa.select(sa.literal(1)).select_from(tasks).where(
                    sa.and_(sa.true(), *_conditions(query))).limit(COUNT_CAP + 1).subquery()
                n = int(conn.execute(sa.select(sa.func.count()).select_from(capped)).scalar()
                        or 0)
                total = n if n <= COUNT_CAP else None
        rows = [row_to_summary(r) for r in raw]
        after = encode_cursor(raw[-1]._mapping["_key"], raw[-1]._mapping["id"]) \
            if len(raw) == query.limit else None
        return TaskRows(rows, total, after)

    def active_rows(self, task_ids: list[str] | None = None) -> list[ActiveRow]:
        """Every PENDING or RUNNING task (of ``task_ids``), oldest first.

        What the manager rebuilds its memory from, and reads each adopted task with: plain
        SQL (building and caching a SQLAlchemy statement cost more than the read).
        """
        sql = (f"SELECT {_ACTIVE_COLUMNS} FROM {tasks.name} "
               "WHERE status IN ('PENDING', 'RUNNING')")
        with self._engine.connect() as conn:
            if task_ids is None:
                raw = driver.query(conn, f"{sql} ORDER BY created_at", [])
            else:
                raw = sorted(driver.query_ids(conn, f"{sql} AND id IN", task_ids),
                             key=lambda r: r[12])  # created_at
        return [ActiveRow(
            id=r[0], task_type=r[1], status=TaskStatus(r[2]), priority=r[3], queue=r[4],
            attempt=r[5], max_retries=r[6], timeout_s=r[7], parameters=r[8],
            owner=r[9], queued=bool(r[10]), lease_token=r[11], created_at=r[12],
            enqueued_at=r[13], not_before=r[14], cancel_requested=bool(r[15]),
            depends_on=json.loads(r[16]), lease_request=r[17], lease_executor=r[18],
            max_cpu_s=r[19], deadline=r[20], work_units=r[21], started_at=r[22],
            preemptions=r[23] or 0, cached=bool(r[24]))
            for r in raw]

    def intake_rows(self, limit: int = 1000) -> list[tuple[str, float]]:
        """Tasks clients committed that the manager has not adopted: (id, created_at),
        oldest first."""
        with self._engine.connect() as conn:
            rows = driver.query(conn, f"SELECT task_id, created_at FROM {intake.name} "
                                      f"ORDER BY created_at LIMIT {int(limit)}", [])
        return [(r[0], r[1]) for r in rows]

    def states(self, task_ids: list[str]) -> dict[str, tuple[TaskStatus, str | None]]:
        """Status and owner of each task that exists, by id."""
        with self._engine.connect() as conn:
            rows = driver.query_ids(
                conn, f"SELECT id, status, owner FROM {tasks.name} WHERE id IN", task_ids)
        return {r[0]: (TaskStatus(r[1]), r[2]) for r in rows}

    def status_counts(self) -> dict[str, int]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(tasks.c.status, sa.func.count()).group_by(tasks.c.status))
            return {r[0]: int(r[1]) for r in rows}

    def finished_before(self, before: float, limit: int,
                        columns: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` rows of tasks that finished before ``before``, oldest first:
        whole, or only ``columns``."""
        chosen = tasks.c if columns is None else [tasks.c[c] for c in columns]
        stmt = (sa.select(*chosen).where(tasks.c.finished_at < before)
                .where(tasks.c.status.in_(["COMPLETED", "FAILED", "CANCELLED"]))
                .order_by(tasks.c.finished_at).limit(limit))
        with self._engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def recent_runs(self, limit: int) -> list[tuple[str, str, int | None, float]]:
        """The latest ``limit`` completed tasks' (type, parameters, work units, seconds from
        their start to their end), oldest first: what run-time estimates start from."""
        stmt = (sa.select(tasks.c.task_type, tasks.c.parameters, tasks.c.work_units,
                          tasks.c.started_at, tasks.c.finished_at)
                .where(tasks.c.status == "COMPLETED", tasks.c.started_at.is_not(None),
                       tasks.c.preemptions == 0)  # a resumed run is not a whole one
                .order_by(tasks.c.finished_at.desc()).limit(limit))
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [(t, p, u, f - s) for t, p, u, s, f in reversed(rows) if f is not None]

    def finished_counts(self) -> dict[tuple[str | None, str], int]:
        """Finished tasks by (owner, status): what the manager's counters start from.

        A task still in the intake (a client ran it directly, and the manager has not
        adopted it) is left out: the manager counts it when it claims it.
        """
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(tasks.c.owner, tasks.c.status, sa.func.count())
                .where(tasks.c.status.in_(["COMPLETED", "FAILED", "CANCELLED"]),
                       tasks.c.id.not_in(sa.select(intake.c.task_id)))
                .group_by(tasks.c.owner, tasks.c.status))
            return {(r[0], r[1]): int(r[2]) for r in rows}

    def usage_of_day(self, day: str) -> dict[str, tuple[float, int]]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(usage.c.owner, usage.c.cpu_s, usage.c.preempted)
                                .where(usage.c.day == day))
            return {owner: (float(cpu), int(n or 0)) for owner, cpu, n in rows}

    def attempts(self, task_id: str) -> list[AttemptInfo]:
        """The attempts of ``task_id`` that reported, in order."""
        stmt = (sa.select(attempts).where(attempts.c.task_id == task_id)
                .order_by(attempts.c.attempt, attempts.c.lease_token))
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [AttemptInfo(attempt=r.attempt, lease_token=r.lease_token, outcome=r.outcome,
                            reason=r.reason, run_s=r.run_s, estimate_s=r.estimate_s,
                            cpu_s=r.cpu_s, peak_rss_bytes=r.peak_rss_bytes,
                            reported_at=datetime.fromtimestamp(r.reported_at, tz=UTC))
                for r in rows]

    def runs_of(self, task_ids: list[str]) -> list[tuple[str, str, int | None, float]]:
        """(type, parameters, work units, handler seconds) of the completed attempts of
        ``task_ids`` that ran whole (no preemption before them)."""
        stmt = (sa.select(tasks.c.task_type, tasks.c.parameters, tasks.c.work_units,
                          attempts.c.run_s)
                .join(tasks, tasks.c.id == attempts.c.task_id)
                .where(attempts.c.task_id.in_(driver.padded(task_ids)),
                       attempts.c.outcome == "completed", attempts.c.run_s > 0,
                       tasks.c.preemptions == 0))
        with self._engine.connect() as conn:
            return [(r.task_type, r.parameters, r.work_units, float(r.run_s))
                    for r in conn.execute(stmt)]

    def estimate_errors(self, since: float) -> list[tuple[str, float, float]]:
        """(type, predicted, actual seconds) of the first attempts completed since ``since``
        that had a prediction: how good the run-time estimates were."""
        stmt = (sa.select(attempts.c.task_id, attempts.c.estimate_s, attempts.c.run_s,
                          tasks.c.task_type)
                .join(tasks, tasks.c.id == attempts.c.task_id)
                .where(attempts.c.outcome == "completed", attempts.c.reported_at >= since,
                       attempts.c.estimate_s.is_not(None), attempts.c.run_s > 0,
                       tasks.c.preemptions == 0))
        with self._engine.connect() as conn:
            return [(r.task_type, float(r.estimate_s), float(r.run_s))
                    for r in conn.execute(stmt)]

    def model_digest(self, key: str) -> str | None:
        """The SHA-256 recorded for the model version ``key`` (see ``rt_models``)."""
        with self._engine.connect() as conn:
            digest: str | None = conn.execute(
                sa.select(models.c.sha256).where(models.c.key == key)).scalar()
        return digest

    def get_progress(self, task_id: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(progress).where(progress.c.task_id == task_id)).first()
        return dict(row._mapping) if row else None

    def task_types(self) -> list[tuple[str, bytes, int]]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(task_types.c.name, task_types.c.blob,
                                          task_types.c.version))
            return [(r[0], bytes(r[1]), int(r[2])) for r in rows]
