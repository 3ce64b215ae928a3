"""The outbox: events in id order, the notifier's delivery cursors and its delivery log.

Event ids must become visible in id order, or a reader's cursor could move past an id
that commits later. On PostgreSQL every transaction that inserts events first takes one
advisory lock (:func:`lock_events`), held to commit; on SQLite every write transaction
begins IMMEDIATE (writers are serialised anyway). So the next event-writing transaction
starts only after the previous one committed.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import driver
from .schema import cursors, deliveries, events

#: PostgreSQL advisory lock key taken by every transaction that inserts events.
EVENTS_LOCK = 727275


def lock_events(conn: sa.Connection) -> None:
    """Take the events lock for the rest of ``conn``'s transaction (PostgreSQL; SQLite's
    BEGIN IMMEDIATE holds the write lock already)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (EVENTS_LOCK,))


def insert_events(conn: sa.Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Append events in order; their ids, in the order of ``rows``.

    The caller holds the events lock (SQLite: the write lock of BEGIN IMMEDIATE). SQLite
    gets ids handed out here, after the newest, in one statement (it cannot return
    ids in parameter order from one multi-row insert, so SQLAlchemy would insert
    row by row); PostgreSQL takes them from its sequence in one batch.
    """
    if conn.dialect.name == "sqlite":
        newest = int(driver.run(conn, f"SELECT max(id) FROM {events.name}").fetchone()[0] or 0)
        ids = list(range(newest + 1, newest + 1 + len(rows)))
        driver.run(conn, f"INSERT INTO {events.name} (id, task_id, kind, payload, created_at) "
                         "VALUES (?, ?, ?, ?, ?)",
                   [(i, e["task_id"], e["kind"], e["payload"], e["created_at"])
                    for i, e in zip(ids, rows, strict=True)])
        return ids
    values = [{"task_id": e["task_id"], "kind": e["kind"], "payload": e["payload"],
               "created_at": e["created_at"]} for e in rows]
    result = conn.execute(
        events.insert().returning(events.c.id, sort_by_parameter_order=True), values)
    return [int(r[0]) for r in result]


class Outbox:
    """The event table with the delivery cursors and log of the notifier that tails it."""

    def __init__(self, engine: Engine, writer: Engine) -> None:
        self._engine, self._writer = engine, writer

    def append_events(self, rows: list[dict[str, Any]]) -> list[int]:
        if not rows:
            return []
        with self._writer.begin() as conn:
            lock_events(conn)
            return insert_events(conn, rows)

    def prune_events(self, before: float) -> int:
        """Delete events older than ``before`` that every delivery cursor has passed.

        The newest event is always kept, so ids never restart and cursors stay valid.
        """
        with self._writer.begin() as conn:
            lock_events(conn)
            newest = conn.execute(sa.select(sa.func.max(events.c.id))).scalar() or 0
            lowest_cursor = conn.execute(sa.select(sa.func.min(cursors.c.last_id))).scalar()
            limit = newest if lowest_cursor is None else min(newest, int(lowest_cursor) + 1)
            return int(conn.execute(events.delete().where(events.c.id < limit)
                                    .where(events.c.created_at < before)).rowcount or 0)

    def events_after(self, after_id: int, limit: int = 1000) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(events).where(events.c.id > after_id)
                .order_by(events.c.id).limit(limit)
            )
            return [dict(r._mapping) for r in rows]

    def max_event_id(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(events.c.id))).scalar() or 0)

    def set_cursor(self, name: str, last_id: int) -> None:
        with self._writer.begin() as conn:
            updated = conn.execute(cursors.update().where(cursors.c.name == name)
                                   .values(last_id=last_id)).rowcount
            if not updated:
                conn.execute(cursors.insert().values(name=name, last_id=last_id))

    def get_cursor(self, name: str) -> int | None:
        with self._engine.connect() as conn:
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
        with self._engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]
