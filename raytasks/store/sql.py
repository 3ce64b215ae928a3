"""SqlTaskStore: the TaskStore contract on SQLite (WAL) or PostgreSQL, via SQLAlchemy Core."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..errors import StoreError
from ..models import Task, TaskQuery, TaskSummary
from .base import (
    SCHEMA_VERSION,
    TaskStore,
    WriteBatch,
    encode_tags,
    row_to_summary,
    row_to_task,
)

metadata = sa.MetaData()

tasks = sa.Table(
    "rt_tasks",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("task_type", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("queue", sa.String(64), nullable=False),
    sa.Column("parameters", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, default=0),
    sa.Column("max_retries", sa.Integer, nullable=False, default=0),
    sa.Column("timeout_s", sa.Float, nullable=True),
    sa.Column("depends_on", sa.Text, nullable=False, default="[]"),
    sa.Column("idempotency_key", sa.String(200), nullable=True, unique=True),
    sa.Column("tags", sa.Text, nullable=False, default=""),
    sa.Column("owner", sa.String(200), nullable=True),
    sa.Column("notify", sa.Text, nullable=False, default="[]"),
    sa.Column("result", sa.Text, nullable=True),
    sa.Column("result_uri", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("checkpoint", sa.Text, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("queued", sa.Boolean, nullable=False, default=False),
    sa.Column("lease_token", sa.BigInteger, nullable=False, default=0),
    sa.Column("not_before", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Index("rt_tasks_status", "status"),
    sa.Index("rt_tasks_created", "created_at"),
    sa.Index("rt_tasks_owner", "owner"),
)

events = sa.Table(
    "rt_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

progress = sa.Table(
    "rt_progress",
    metadata,
    sa.Column("task_id", sa.String(64), primary_key=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

task_types = sa.Table(
    "rt_task_types",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("blob", sa.LargeBinary, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

cursors = sa.Table(
    "rt_cursors",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("last_id", sa.BigInteger, nullable=False),
)

deliveries = sa.Table(
    "rt_deliveries",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("channel", sa.String(200), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("event_id", sa.BigInteger, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("rt_deliveries_channel", "channel", "outcome"),
)

schema = sa.Table(
    "rt_schema",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.Float, nullable=False),
)

_ORDER = {
    "created_at": tasks.c.created_at,
    "priority": tasks.c.priority,
    "finished_at": tasks.c.finished_at,
    "name": tasks.c.name,
}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives any process crash; only an OS crash or power
    # loss can drop the last commits.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class SqlTaskStore(TaskStore):
    """One implementation for both SQL backends; dialect differences stay in ``__init__``."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = sa.create_engine(url, connect_args={"timeout": 10})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        elif url.startswith("postgresql"):
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://"):]
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        else:
            raise StoreError(f"unsupported store URL {url!r}: use sqlite:/// or postgresql://")
        self._migrate()

    # -- schema ----------------------------------------------------------------

    def _migrate(self) -> None:
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                # one migrator at a time across processes
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(727274)"))
            metadata.create_all(conn, checkfirst=True)
            found = conn.execute(sa.select(sa.func.max(schema.c.version))).scalar()
            if found is None:
                conn.execute(schema.insert().values(version=SCHEMA_VERSION,
                                                    applied_at=time.time()))
            elif found > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.url} is at schema version {found}, newer than this "
                    f"raytasks ({SCHEMA_VERSION}); upgrade raytasks"
                )

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(schema.c.version))).scalar() or 0)

    # -- writes ----------------------------------------------------------------

    def commit(self, batch: WriteBatch) -> list[int]:
        if not batch:
            return []
        ids: list[int] = []
        with self.engine.begin() as conn:
            if batch.inserts:
                conn.execute(tasks.insert(), [_task_row(r) for r in batch.inserts])
            for (fields, fenced), rows in _group_updates(batch.updates).items():
                stmt = tasks.update().where(tasks.c.id == sa.bindparam("b_id"))
                if fenced:
                    stmt = stmt.where(tasks.c.lease_token == sa.bindparam("b_token"))
                stmt = stmt.values({f: sa.bindparam(f"v_{f}") for f in fields})
                conn.execute(stmt, rows)
            if batch.deletes:
                conn.execute(tasks.delete().where(tasks.c.id.in_(batch.deletes)))
                conn.execute(progress.delete().where(progress.c.task_id.in_(batch.deletes)))
            if batch.events:
                ids = _insert_events(conn, batch.events)
        return ids

    def append_events(self, rows: list[dict[str, Any]]) -> list[int]:
        if not rows:
            return []
        with self.engine.begin() as conn:
            return _insert_events(conn, rows)

    def max_event_id(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(events.c.id))).scalar() or 0)

    def save_progress(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        with self.engine.begin() as conn:
            ids = [r["task_id"] for r in rows]
            conn.execute(progress.delete().where(progress.c.task_id.in_(ids)))
            conn.execute(progress.insert(), rows)

    def save_task_type(self, name: str, blob: bytes, version: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(task_types.delete().where(task_types.c.name == name))
            conn.execute(task_types.insert().values(
                name=name, blob=blob, version=version, updated_at=time.time()))

    def set_cursor(self, name: str, last_id: int) -> None:
        with self.engine.begin() as conn:
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
            with self.engine.begin() as conn:
                conn.execute(deliveries.insert(), rows)

    def set_delivery_outcome(self, channel: str, outcome: str, new_outcome: str) -> None:
        with self.engine.begin() as conn:
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
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).first()
        return row_to_task(row) if row else None

    def get_many(self, task_ids: list[str]) -> dict[str, Task]:
        out: dict[str, Task] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(task_ids), 500):
                chunk = task_ids[start:start + 500]
                for row in conn.execute(sa.select(tasks).where(tasks.c.id.in_(chunk))):
                    task = row_to_task(row)
                    out[task.id] = task
        return out

    def checkpoint(self, task_id: str) -> Any:
        with self.engine.connect() as conn:
            raw = conn.execute(
                sa.select(tasks.c.checkpoint).where(tasks.c.id == task_id)).scalar()
        return json.loads(raw) if raw else None

    def find_idempotent(self, keys: list[str]) -> dict[str, Task]:
        if not keys:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tasks).where(tasks.c.idempotency_key.in_(keys)))
            found = [row_to_task(r) for r in rows]
        return {t.idempotency_key: t for t in found if t.idempotency_key}

    def query(self, query: TaskQuery) -> tuple[list[TaskSummary], int]:
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
        where = sa.and_(sa.true(), *cond)
        field = query.order_by.lstrip("-")
        column = _ORDER[field]
        order = column.desc() if query.order_by.startswith("-") else column.asc()
        stmt = (
            sa.select(tasks).where(where).order_by(order, tasks.c.id)
            .offset(query.offset).limit(query.limit)
        )
        with self.engine.connect() as conn:
            rows = [row_to_summary(r) for r in conn.execute(stmt)]
            total = conn.execute(sa.select(sa.func.count()).select_from(tasks).where(where))
            return rows, int(total.scalar() or 0)

    def active(self) -> list[Task]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(tasks)
                .where(tasks.c.status.in_(["PENDING", "RUNNING"]))
                .order_by(tasks.c.created_at)
            )
            return [row_to_task(r) for r in rows]

    def queued_flags(self, task_ids: list[str]) -> dict[str, bool]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(tasks.c.id, tasks.c.queued).where(tasks.c.id.in_(task_ids)))
            return {r[0]: bool(r[1]) for r in rows}

    def status_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(tasks.c.status, sa.func.count()).group_by(tasks.c.status))
            return {r[0]: int(r[1]) for r in rows}

    def events_after(self, after_id: int, limit: int = 1000) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(events).where(events.c.id > after_id)
                .order_by(events.c.id).limit(limit)
            )
            return [dict(r._mapping) for r in rows]

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
        self.engine.dispose()


def _insert_events(conn: sa.Connection, rows: list[dict[str, Any]]) -> list[int]:
    values = [{"task_id": e["task_id"], "kind": e["kind"], "payload": e["payload"],
               "created_at": e["created_at"]} for e in rows]
    result = conn.execute(
        events.insert().returning(events.c.id, sort_by_parameter_order=True), values)
    return [int(r[0]) for r in result]


def _task_row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["tags"] = encode_tags(out.get("tags") or [])
    return out


def _group_updates(
    updates: list[tuple[str, dict[str, Any], int | None]],
) -> dict[tuple[tuple[str, ...], bool], list[dict[str, Any]]]:
    groups: dict[tuple[tuple[str, ...], bool], list[dict[str, Any]]] = {}
    for task_id, fields, token in updates:
        key = (tuple(sorted(fields)), token is not None)
        row = {f"v_{k}": v for k, v in fields.items()}
        row["b_id"] = task_id
        if token is not None:
            row["b_token"] = token
        groups.setdefault(key, []).append(row)
    return groups
