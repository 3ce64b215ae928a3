"""SqlTaskStore: the TaskStore contract on SQLite (WAL) or PostgreSQL, via SQLAlchemy Core.

Two disciplines make concurrent writers safe:

- **Guarded updates.** A :class:`RowUpdate` with a token or status guard that finds
  its row changed (or gone) fails the whole batch (:class:`StaleWriteError`).
- **One ordered outbox.** Event ids must become visible in id order, or a reader's
  cursor could move past an id that commits later. On PostgreSQL every transaction
  that inserts events first takes one advisory lock, held to commit; on SQLite every
  write transaction begins IMMEDIATE (writers are serialised anyway). So the next
  event-writing transaction starts only after the previous one committed.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..errors import InvalidParametersError, StoreError
from ..messages import ProgressReport
from ..models import Task, TaskQuery, TaskStatus
from . import migrate
from .base import (
    ActiveRow,
    RowUpdate,
    StaleWriteError,
    TaskRows,
    TaskStore,
    WriteBatch,
    encode_tags,
    row_to_summary,
    row_to_task,
    to_json,
)
from .logs import LogTable
from .schedules import ScheduleTable
from .schema import (
    cursors,
    deliveries,
    events,
    intake,
    logs,
    progress,
    schema,
    task_types,
    tasks,
)

#: PostgreSQL advisory lock key taken by every transaction that inserts events.
EVENTS_LOCK = 727275

_ORDER: dict[str, sa.ColumnElement[Any]] = {
    "created_at": tasks.c.created_at,
    "priority": tasks.c.priority,
    # unfinished tasks sort as finished at 0, so a keyset cursor never meets a NULL
    "finished_at": sa.func.coalesce(tasks.c.finished_at, 0.0),
    "name": tasks.c.name,
}
#: ``total`` is counted up to this many matches; past it a page says None (unknown).
COUNT_CAP = 1000


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

_PROGRESS_GUARD = ("FROM rt_tasks WHERE id = :task_id AND status = 'RUNNING' "
                   "AND lease_token = :token")


#: WAL pages after which a committing connection checkpoints itself (SQLite's default
#: is 1,000): only reached when the manager's own timer (``checkpoint_wal``) falls behind.
WAL_AUTOCHECKPOINT_PAGES = 20_000


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    """``busy_timeout_ms``: SQLite's own wait for another writer (0 for the writer's
    connections, whose BEGIN IMMEDIATE waits in :func:`_begin_immediate` instead)."""
    def apply(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        _into_wal(cur)
        # NORMAL in WAL mode survives any process crash; only an OS crash or power
        # loss can drop the last commits.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        # commits never wait for a checkpoint's fsyncs: the manager checkpoints on a
        # timer of its own (checkpoint_wal); this bound holds the WAL if nobody does
        cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        cur.close()
    return apply


def _into_wal(cur: Any) -> None:
    """Put a new file in WAL mode, or find it there, however many processes open it at once.

    Switching a new file needs its exclusive lock. When two openers switch together, SQLite
    answers one of them "database is locked" at once, without its busy handler (waiting
    would deadlock), and a shared lock held past the busy timeout does the same. The
    system actors open a new store side by side, so the switch is retried for as long as
    an opener waits for another's migration (:data:`migrate.MIGRATION_WAIT_S`).
    """
    deadline = time.monotonic() + migrate.MIGRATION_WAIT_S
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY  # any BUSY_* too
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SqlTaskStore(TaskStore):
    """One implementation for both SQL backends; dialect differences stay in ``__init__``.

    ``busy_timeout_s`` bounds how long a write waits for another writer (SQLite):
    keep it well under the lease TTL, so one stall cannot expire healthy leases.
    """

    def __init__(self, url: str, *, busy_timeout_s: float = 2.0) -> None:
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            pragmas = _sqlite_pragmas(int(busy_timeout_s * 1000))
            args = {"timeout": busy_timeout_s, "check_same_thread": False}
            self.engine: Engine = sa.create_engine(url, connect_args=args)
            sa.event.listen(self.engine, "connect", pragmas)
            self._writer: Engine = sa.create_engine(url, connect_args=args)
            sa.event.listen(self._writer, "connect", _sqlite_pragmas(0))
            sa.event.listen(self._writer, "connect", _manual_transactions)
            sa.event.listen(self._writer, "begin", _begin_immediate(busy_timeout_s))
            self._committing: Engine | _KeptWriter = _KeptWriter(self._writer)
        elif url.startswith("postgresql"):
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://"):]
            self.engine = self._writer = sa.create_engine(url, pool_pre_ping=True)
            # each commit checks a connection out, pinged: one lost with a restarted
            # server is replaced before the commit, not after it failed
            self._committing = self._writer
        else:
            raise StoreError(f"unsupported store URL {url!r}: use sqlite:/// or postgresql://")
        migrate.upgrade(self._writer, self.url)
        self.schedules = ScheduleTable(self.engine, self._writer)
        self.logs = LogTable(self.engine, self._writer)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(schema.c.version))).scalar() or 0)

    def _lock_events(self, conn: sa.Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (EVENTS_LOCK,))

    # -- writes ----------------------------------------------------------------

    def commit(self, batch: WriteBatch) -> list[int]:
        if not batch:
            return []
        ids: list[int] = []
        with self._committing.begin() as conn:
            if batch.events:
                self._lock_events(conn)
            if batch.inserts:
                _insert_tasks(conn, batch.inserts)
            if batch.intake:
                mark = _mark(conn)
                _run(conn, f"INSERT INTO {intake.name} (task_id, client, created_at) "
                           f"VALUES ({mark}, {mark}, {mark})",
                     [(r["task_id"], r["client"], r["created_at"]) for r in batch.intake])
            if batch.logs:  # plain inserts: each line's fenced update is in this batch
                mark = _mark(conn)
                _run(conn, f"INSERT INTO {logs.name} (task_id, attempt, at, stream, line) "
                           f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark})",
                     [(r["task_id"], r["attempt"], r["at"], r["stream"], r["line"])
                      for r in batch.logs])
            for key, group in _group_updates(batch.updates).items():
                _apply_updates(conn, key, group)
            if batch.deletes:
                conn.execute(tasks.delete().where(tasks.c.id.in_(batch.deletes)))
                conn.execute(progress.delete().where(progress.c.task_id.in_(batch.deletes)))
                conn.execute(logs.delete().where(logs.c.task_id.in_(batch.deletes)))
            if batch.events:
                ids = _insert_events(conn, batch.events)
        return ids

    def append_events(self, rows: list[dict[str, Any]]) -> list[int]:
        if not rows:
            return []
        with self._writer.begin() as conn:
            self._lock_events(conn)
            return _insert_events(conn, rows)

    def record_progress(self, reports: list[tuple[ProgressReport, str]],
                        now: float) -> None:
        """Save progress and append its events, each only while its attempt holds the lease.

        ``reports`` pairs each report with its event payload (JSON). The guard (RUNNING
        under the report's token) is checked in the same transaction as the writes, under
        the events lock: a progress event can never follow its task's final status.
        """
        if not reports:
            return
        rows = [{"task_id": r.task_id, "token": r.token, "payload": payload,
                 "progress": json.dumps({"task_id": r.task_id, "status": "RUNNING",
                                         "percentage": r.percentage, "message": r.message,
                                         "stage": r.stage, "updated_at": r.updated_at}),
                 "now": now} for r, payload in reports]
        with self._writer.begin() as conn:
            self._lock_events(conn)
            conn.execute(sa.text(f"DELETE FROM rt_progress WHERE task_id = :task_id AND "
                                 f"EXISTS (SELECT 1 {_PROGRESS_GUARD})"), rows)
            conn.execute(sa.text(
                "INSERT INTO rt_progress (task_id, payload, updated_at) SELECT id, "
                f"CAST(:progress AS TEXT), CAST(:now AS DOUBLE PRECISION) {_PROGRESS_GUARD}"),
                rows)
            conn.execute(sa.text(
                "INSERT INTO rt_events (task_id, kind, payload, created_at) SELECT id, "
                "'progress', CAST(:payload AS TEXT), CAST(:now AS DOUBLE PRECISION) "
                f"{_PROGRESS_GUARD}"), rows)

    def checkpoint_wal(self) -> tuple[int, int]:
        """Copy SQLite's write-ahead log into the database, without blocking writers.

        Run off the commit path (the manager does it on a timer), so commits never pay a
        checkpoint's fsyncs. Returns the log's frames and how many of them are now in the
        database (a reader still on an older snapshot can hold some back). Nothing to do
        on PostgreSQL: ``(0, 0)``.
        """
        if self.dialect != "sqlite":
            return 0, 0
        with self.engine.connect() as conn:
            _busy, frames, done = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        return int(frames), int(done)

    def prune_events(self, before: float) -> int:
        """Delete events older than ``before`` that every delivery cursor has passed.

        The newest event is always kept, so ids never restart and cursors stay valid.
        """
        with self._writer.begin() as conn:
            self._lock_events(conn)
            newest = conn.execute(sa.select(sa.func.max(events.c.id))).scalar() or 0
            lowest_cursor = conn.execute(sa.select(sa.func.min(cursors.c.last_id))).scalar()
            limit = newest if lowest_cursor is None else min(newest, int(lowest_cursor) + 1)
            return int(conn.execute(events.delete().where(events.c.id < limit)
                                    .where(events.c.created_at < before)).rowcount or 0)

    def save_task_type(self, name: str, blob: bytes, version: int) -> None:
        with self._writer.begin() as conn:
            conn.execute(task_types.delete().where(task_types.c.name == name))
            conn.execute(task_types.insert().values(
                name=name, blob=blob, version=version, updated_at=time.time()))

    def set_cursor(self, name: str, last_id: int) -> None:
        with self._writer.begin() as conn:
            updated = conn.execute(cursors.update().where(cursors.c.name == name)
                                   .values(last_id=last_id)).rowcount
            if not updated:
                conn.execute(cursors.insert().values(name=name, last_id=last_id))

    def get_cursor(self, name: str) -> int | None:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(cursors.c.last_id)
                                 .where(cursors.c.name == name)).scalar()
        return None if value is None else int(value)

    def log_delivery(self, rows: list[dict[str, Any]]) -> None:
        """Append ``{"channel", "target", "event_id", "attempt", "outcome", "detail", "at"}``."""
        if rows:
            with self._writer.begin() as conn:
                conn.execute(deliveries.insert(), rows)

    def set_delivery_outcome(self, channel: str, outcome: str, new_outcome: str) -> None:
        with self._writer.begin() as conn:
            conn.execute(deliveries.update().where(deliveries.c.channel == channel)
                         .where(deliveries.c.outcome == outcome).values(outcome=new_outcome))

    def deliveries(self, channel: str | None = None, outcome: str | None = None,
                   limit: int = 1000) -> list[dict[str, Any]]:
        stmt = sa.select(deliveries).order_by(deliveries.c.id).limit(limit)
        if channel is not None:
            stmt = stmt.where(deliveries.c.channel == channel)
        if outcome is not None:
            stmt = stmt.where(deliveries.c.outcome == outcome)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    # -- reads -----------------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        return self.get_many([task_id]).get(task_id)

    def get_many(self, task_ids: list[str]) -> dict[str, Task]:
        """The stored tasks among ``task_ids``, by id (plain SQL: every finished task a
        client waits for is read here)."""
        out: dict[str, Task] = {}
        with self.engine.connect() as conn:
            for values in _query_ids(conn, f"{_SELECT_TASKS} WHERE id IN", task_ids):
                task = row_to_task(dict(zip(_TASK_NAMES, values, strict=True)))
                out[task.id] = task
        return out

    def checkpoint(self, task_id: str) -> Any:
        with self.engine.connect() as conn:
            raw = conn.execute(
                sa.select(tasks.c.checkpoint).where(tasks.c.id == task_id)).scalar()
        return json.loads(raw) if raw else None

    def find_idempotent(self, scope: str, keys: list[str]) -> dict[str, Task]:
        if not keys:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tasks).where(tasks.c.idempotency_scope == scope)
                                .where(tasks.c.idempotency_key.in_(keys)))
            found = [row_to_task(r) for r in rows]
        return {t.idempotency_key: t for t in found if t.idempotency_key}

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
        with self.engine.connect() as conn:
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
        with self.engine.connect() as conn:
            if task_ids is None:
                raw = _query(conn, f"{sql} ORDER BY created_at", [])
            else:
                raw = sorted(_query_ids(conn, f"{sql} AND id IN", task_ids),
                             key=lambda r: r[12])  # created_at
        return [ActiveRow(
            id=r[0], task_type=r[1], status=TaskStatus(r[2]), priority=r[3], queue=r[4],
            attempt=r[5], max_retries=r[6], timeout_s=r[7], parameters=r[8],
            owner=r[9], queued=bool(r[10]), lease_token=r[11], created_at=r[12],
            enqueued_at=r[13], not_before=r[14], cancel_requested=bool(r[15]),
            depends_on=json.loads(r[16]), lease_request=r[17], lease_executor=r[18])
            for r in raw]

    def intake_rows(self, limit: int = 1000) -> list[tuple[str, float]]:
        """Tasks clients committed that the manager has not adopted: (id, created_at),
        oldest first."""
        with self.engine.connect() as conn:
            rows = _query(conn, f"SELECT task_id, created_at FROM {intake.name} "
                                f"ORDER BY created_at LIMIT {int(limit)}", [])
        return [(r[0], r[1]) for r in rows]

    def claim_intake(self, task_ids: list[str]) -> list[str]:
        """Delete the intake rows of ``task_ids``; the ids whose row this call deleted.

        The manager adopts a task a client committed only when its claim deleted the
        row: a task is adopted once, whichever of a client's notice, a sweep or a lookup
        claims it first, and a notice repeated after a restart claims nothing.
        """
        with self._writer.begin() as conn:
            rows = _query_ids(conn, f"DELETE FROM {intake.name} WHERE task_id IN", task_ids,
                              "RETURNING task_id")
        return [r[0] for r in rows]

    def states(self, task_ids: list[str]) -> dict[str, tuple[TaskStatus, str | None]]:
        """Status and owner of each task that exists, by id."""
        with self.engine.connect() as conn:
            rows = _query_ids(conn, f"SELECT id, status, owner FROM {tasks.name} WHERE id IN",
                              task_ids)
        return {r[0]: (TaskStatus(r[1]), r[2]) for r in rows}

    def status_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(tasks.c.status, sa.func.count()).group_by(tasks.c.status))
            return {r[0]: int(r[1]) for r in rows}

    def finished_before(self, before: float, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` whole rows of tasks that finished before ``before``, oldest first."""
        stmt = (sa.select(tasks).where(tasks.c.finished_at < before)
                .where(tasks.c.status.in_(["COMPLETED", "FAILED", "CANCELLED"]))
                .order_by(tasks.c.finished_at).limit(limit))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def finished_counts(self) -> dict[tuple[str | None, str], int]:
        """Finished tasks by (owner, status): what the manager's counters start from.

        A task still in the intake (a client ran it directly, and the manager has not
        adopted it) is left out: the manager counts it when it claims it.
        """
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(tasks.c.owner, tasks.c.status, sa.func.count())
                .where(tasks.c.status.in_(["COMPLETED", "FAILED", "CANCELLED"]),
                       tasks.c.id.not_in(sa.select(intake.c.task_id)))
                .group_by(tasks.c.owner, tasks.c.status))
            return {(r[0], r[1]): int(r[2]) for r in rows}

    def events_after(self, after_id: int, limit: int = 1000) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(events).where(events.c.id > after_id)
                .order_by(events.c.id).limit(limit)
            )
            return [dict(r._mapping) for r in rows]

    def max_event_id(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(events.c.id))).scalar() or 0)

    def get_progress(self, task_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(progress).where(progress.c.task_id == task_id)).first()
        return dict(row._mapping) if row else None

    def task_types(self) -> list[tuple[str, bytes, int]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(task_types.c.name, task_types.c.blob,
                                          task_types.c.version))
            return [(r[0], bytes(r[1]), int(r[2])) for r in rows]

    def close(self) -> None:
        if isinstance(self._committing, _KeptWriter):
            self._committing.close()
        self.engine.dispose()
        self._writer.dispose()


#: Threads whose SQLite writer connection is kept between commits; further threads
#: check one out per commit (the pool holds 15: a process of many committing threads, an
#: HTTP server's, say, must never wait for one).
KEPT_WRITERS = 4


class _KeptWriter:
    """The SQLite writer connections of a few threads, kept between their commits: a pool
    checkout and checkin per commit cost more than SQLite's commit of a small batch. A
    thread's connection goes back to the pool when the thread ends."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._local = threading.local()
        self._held: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._lock = threading.Lock()

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        held: _Held | None = getattr(self._local, "held", None)
        if held is None or held.conn.closed or held.conn.invalidated:
            self._local.held = held = None
            with self._lock:
                if len(self._held) < KEPT_WRITERS:
                    held = self._local.held = _Held(self._engine.connect())
                    self._held.add(held)
        if held is None:
            with self._engine.begin() as conn:
                yield conn
            return
        with held.conn.begin():
            yield held.conn

    def close(self) -> None:
        with self._lock:
            held = list(self._held)
        for h in held:
            h.conn.close()


class _Held:
    """One thread's kept connection (closed with the thread's locals)."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        # an interpreter exiting may have nothing left to return it to
        with suppress(Exception):
            self.conn.close()


def _manual_transactions(dbapi_conn: Any, _record: Any) -> None:
    # let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE (pysqlite would defer it)
    dbapi_conn.isolation_level = None


#: Tries of BEGIN IMMEDIATE that only yield the CPU before the writer starts sleeping.
SPIN_TRIES = 20


def _begin_immediate(timeout_s: float) -> Any:
    """The writer's BEGIN IMMEDIATE, waiting up to ``timeout_s`` for another writer.

    SQLite's own busy handler sleeps 1, 2, 5, 10 ms... between tries: every collision of
    the manager and a client committing its own tasks would cost a millisecond or more.
    Here the first tries only yield the CPU, then each waits 0.1 ms (about 0.5 ms on
    this kernel), so a commit waits about as long as the other writer's transaction.
    """
    def begin(conn: sa.Connection) -> None:
        deadline, tries = 0.0, 0
        while True:
            try:
                _run(conn, "BEGIN IMMEDIATE")
                return
            except sa.exc.OperationalError as exc:
                if getattr(exc.orig, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY:
                    raise
                now = time.monotonic()
                deadline = deadline or now + timeout_s
                if now >= deadline:
                    raise
            tries += 1
            time.sleep(0 if tries <= SPIN_TRIES else 1e-4)
    return begin


def _insert_events(conn: sa.Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Append events in order; their ids, in the order of ``rows``.

    The caller holds the events lock (SQLite: the write lock of BEGIN IMMEDIATE). SQLite
    gets ids handed out here, after the newest, in one statement (it cannot return
    ids in parameter order from one multi-row insert, so SQLAlchemy would insert
    row by row); PostgreSQL takes them from its sequence in one batch.
    """
    if conn.dialect.name == "sqlite":
        newest = int(_run(conn, f"SELECT max(id) FROM {events.name}").fetchone()[0] or 0)
        ids = list(range(newest + 1, newest + 1 + len(rows)))
        _run(conn, f"INSERT INTO {events.name} (id, task_id, kind, payload, created_at) "
                   "VALUES (?, ?, ?, ?, ?)",
             [(i, e["task_id"], e["kind"], e["payload"], e["created_at"])
              for i, e in zip(ids, rows, strict=True)])
        return ids
    values = [{"task_id": e["task_id"], "kind": e["kind"], "payload": e["payload"],
               "created_at": e["created_at"]} for e in rows]
    result = conn.execute(
        events.insert().returning(events.c.id, sort_by_parameter_order=True), values)
    return [int(r[0]) for r in result]


#: Every task column with the value it takes when a new row leaves it out (the
#: schema's Python-side default, else NULL): plain inserts fill them in themselves.
_TASK_COLUMNS = tuple((c.name, getattr(c.default, "arg", None)
                       if c.default is not None and c.default.is_scalar else None)
                      for c in tasks.c)
_TASK_NAMES = tuple(name for name, _ in _TASK_COLUMNS)
_SELECT_TASKS = f"SELECT {', '.join(_TASK_NAMES)} FROM {tasks.name}"


#: What ``active_rows`` reads, in ``ActiveRow``'s order.
_ACTIVE_COLUMNS = ("id, task_type, status, priority, queue, attempt, max_retries, timeout_s, "
                   "parameters, owner, queued, lease_token, created_at, enqueued_at, "
                   "not_before, cancel_requested, depends_on, lease_request, lease_executor")


def _query_ids(conn: sa.Connection, head: str, ids: list[str],
               tail: str = "") -> list[tuple[Any, ...]]:
    """The rows of ``{head} (ids...) {tail}`` in plain SQL, run for 500 ids at a time."""
    mark, rows = _mark(conn), []
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        rows += _query(conn, f"{head} ({', '.join([mark] * len(chunk))}) {tail}", chunk)
    return rows


def _query(conn: sa.Connection, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """The rows of a plain SQL query (straight on the driver's cursor on SQLite)."""
    if conn.dialect.name != "sqlite":
        return [tuple(r) for r in conn.exec_driver_sql(sql, tuple(params))]
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        rows: list[tuple[Any, ...]] = cursor.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
    return rows


def _insert_tasks(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """New task rows, as one plain executemany on the driver (every column named, so
    each row gets the schema's defaults, never the driver's)."""
    mark = _mark(conn)
    sql = (f"INSERT INTO {tasks.name} ({', '.join(_TASK_NAMES)}) "
           f"VALUES ({', '.join([mark] * len(_TASK_NAMES))})")
    values = []
    for row in rows:
        full = {**row, "tags": encode_tags(row.get("tags") or []),
                "idempotency_scope": row.get("owner") or ""}
        values.append(tuple(full.get(name, default) for name, default in _TASK_COLUMNS))
    _run(conn, sql, values)


_UpdateKey = tuple[tuple[str, ...], bool, bool]


def _group_updates(updates: list[RowUpdate]) -> dict[_UpdateKey, list[RowUpdate]]:
    groups: dict[_UpdateKey, list[RowUpdate]] = {}
    for u in updates:
        key = (tuple(sorted(u.fields)), u.token is not None, u.status is not None)
        groups.setdefault(key, []).append(u)
    return groups


def _apply_updates(conn: sa.Connection, key: _UpdateKey, group: list[RowUpdate]) -> None:
    """One executemany per shape; a row missing or failing its guard fails the batch.

    Plain SQL on the driver (the columns are the table's own, never input): the hot path
    of every lease and report, where SQLAlchemy's per-row parameter work cost more than
    the update itself.
    """
    fields, fenced, guarded = key
    mark = _mark(conn)
    sql = (f"UPDATE {tasks.name} SET " + ", ".join(f"{tasks.c[f].name} = {mark}" for f in fields)
           + f" WHERE id = {mark}" + (f" AND lease_token = {mark}" if fenced else "")
           + (f" AND status = {mark}" if guarded else ""))
    rows = []
    for u in group:
        row = [u.fields[f] for f in fields]
        row.append(u.task_id)
        if fenced:
            row.append(u.token)
        if guarded:
            row.append(u.status)
        rows.append(tuple(row))
    changed = _run(conn, sql, rows).rowcount
    if changed != len(rows):
        raise StaleWriteError(_stale(conn, group))


def _run(conn: sa.Connection, sql: str, rows: list[tuple[Any, ...]] | None = None) -> Any:
    """Plain SQL in ``conn``'s transaction: on SQLite straight on the driver's cursor
    (SQLAlchemy's per-statement work cost more than SQLite's), on PostgreSQL through
    SQLAlchemy's driver call. ``rows``: one tuple per execution (executemany). Returns
    the cursor (``rowcount`` counts every execution's rows)."""
    if conn.dialect.name != "sqlite":
        return conn.exec_driver_sql(sql, rows) if rows is not None else conn.exec_driver_sql(sql)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if rows is None:
            cursor.execute(sql)
        else:
            cursor.executemany(sql, rows)
    except sqlite3.Error as exc:  # as SQLAlchemy raises it (IntegrityError, OperationalError)
        raise sa.exc.DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
    return cursor


def _mark(conn: sa.Connection) -> str:
    """The driver's positional parameter marker (plain SQL on the hot paths)."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _stale(conn: sa.Connection, group: list[RowUpdate]) -> list[str]:
    found = {r[0]: (r[1], r[2]) for r in conn.execute(
        sa.select(tasks.c.id, tasks.c.lease_token, tasks.c.status)
        .where(tasks.c.id.in_([u.task_id for u in group])))}
    return [u.task_id for u in group if u.task_id not in found
            or (u.token is not None and found[u.task_id][0] != u.token)
            or (u.status is not None and found[u.task_id][1] != u.status)]


__all__ = ["EVENTS_LOCK", "SqlTaskStore", "to_json"]
