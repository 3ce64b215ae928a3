"""Task logs: what a handler printed or logged, per attempt, written under its lease.

Lines are appended only while the attempt holds the lease (the same guard as progress),
so a superseded attempt cannot add to what readers see; they go with their task when it
is deleted or pruned, and by age with ``event_retention_s``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .faults import faults
from .schema import logs, tasks

_GUARD = ("FROM rt_tasks WHERE id = :task_id AND status = 'RUNNING' "
          "AND lease_token = :token")


def insert_lines(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Rows of ``task_id, token, attempt, at, stream, line``, each only under its lease."""
    conn.execute(sa.text(
        "INSERT INTO rt_logs (task_id, attempt, at, stream, line) SELECT id, "
        "CAST(:attempt AS INTEGER), CAST(:at AS DOUBLE PRECISION), "
        f"CAST(:stream AS VARCHAR(16)), CAST(:line AS TEXT) {_GUARD}"), rows)


class LogTable:
    """``where``: what a full disk or an outage is reported against (see :mod:`.faults`)."""

    def __init__(self, engine: Engine, writer: Engine, where: str = "the task store") -> None:
        self._engine, self._writer, self._where = engine, writer, where

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Rows of ``task_id, token, attempt, at, stream, line``; fenced by the token."""
        if not rows:
            return
        with faults(self._where), self._writer.begin() as conn:
            insert_lines(conn, rows)

    def read(self, task_id: str, attempt: int | None = None, after_id: int = 0,
             limit: int = 1000) -> list[dict[str, Any]]:
        stmt = (sa.select(logs).where(logs.c.task_id == task_id).where(logs.c.id > after_id)
                .order_by(logs.c.id).limit(limit))
        if attempt is not None:
            stmt = stmt.where(logs.c.attempt == attempt)
        with self._engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def prune(self, before: float) -> int:
        """Delete lines older than ``before`` and lines whose task is gone."""
        with self._writer.begin() as conn:
            old = conn.execute(logs.delete().where(logs.c.at < before)).rowcount or 0
            orphans = conn.execute(logs.delete().where(
                ~sa.exists().where(tasks.c.id == logs.c.task_id))).rowcount or 0
        return int(old + orphans)
