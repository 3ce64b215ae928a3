"""The write path: a WriteBatch in one transaction, progress under its lease, intake claims.

**Guarded updates.** A :class:`RowUpdate` with a token or status guard that finds its row
changed (or gone) fails the whole batch (:class:`StaleWriteError`). A batch's events go
to the outbox in the same transaction, under the events lock (:mod:`.outbox`).
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..messages import ProgressReport
from . import driver
from .base import RowUpdate, StaleWriteError, WriteBatch, cpu_day, encode_tags
from .engines import Committing
from .outbox import insert_events, lock_events
from .schema import attempts, environments, intake, logs, models, progress, task_types, tasks, usage

_PROGRESS_GUARD = ("FROM rt_tasks WHERE id = :task_id AND status = 'RUNNING' "
                   "AND lease_token = :token")


class TaskWriter:
    """The store's writes of tasks: ``committing`` takes the batches (the hot path),
    ``writer`` the rest."""

    def __init__(self, committing: Committing, writer: Engine) -> None:
        self._committing, self._writer = committing, writer
        #: the lineage environments known stored: each is written once per process
        self._environments: set[str] = set()

    def commit(self, batch: WriteBatch) -> list[int]:
        if not batch:
            return []
        ids: list[int] = []
        with self._committing.begin() as conn:
            if batch.events:
                lock_events(conn)
            if batch.inserts:
                _insert_tasks(conn, batch.inserts)
            if batch.intake:
                mark = driver.mark(conn)
                driver.run(conn, f"INSERT INTO {intake.name} (task_id, client, created_at) "
                                 f"VALUES ({mark}, {mark}, {mark})",
                           [(r["task_id"], r["client"], r["created_at"]) for r in batch.intake])
            if batch.logs:  # plain inserts: each line's fenced update is in this batch
                mark = driver.mark(conn)
                driver.run(conn, f"INSERT INTO {logs.name} (task_id, attempt, at, stream, line) "
                                 f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark})",
                           [(r["task_id"], r["attempt"], r["at"], r["stream"], r["line"])
                            for r in batch.logs])
            for key, group in _group_updates(batch.updates).items():
                _apply_updates(conn, key, group)
            if batch.models:  # after the updates: a stale lease has failed the batch by now
                conn.execute(models.insert(), batch.models)
            if batch.attempts:
                _insert_attempts(conn, batch.attempts)
            if batch.deletes:
                gone = driver.padded(batch.deletes)
                conn.execute(tasks.delete().where(tasks.c.id.in_(gone)))
                conn.execute(progress.delete().where(progress.c.task_id.in_(gone)))
                conn.execute(logs.delete().where(logs.c.task_id.in_(gone)))
                conn.execute(attempts.delete().where(attempts.c.task_id.in_(gone)))
            if batch.events:
                ids = insert_events(conn, batch.events)
            fresh = {k: v for k, v in batch.environments.items() if k not in self._environments}
            if fresh:
                _insert_environments(conn, fresh)
        self._environments.update(fresh)  # committed
        return ids

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
            lock_events(conn)
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

    def claim_intake(self, task_ids: list[str]) -> list[str]:
        """Delete the intake rows of ``task_ids``; the ids whose row this call deleted.

        The manager adopts a task a client committed only when its claim deleted the
        row: a task is adopted once, whichever of a client's notice, a sweep or a lookup
        claims it first, and a notice repeated after a restart claims nothing.
        """
        with self._writer.begin() as conn:
            rows = driver.query_ids(conn, f"DELETE FROM {intake.name} WHERE task_id IN",
                                    task_ids, "RETURNING task_id")
        return [r[0] for r in rows]

    def save_task_type(self, name: str, blob: bytes, version: int) -> None:
        with self._writer.begin() as conn:
            conn.execute(task_types.delete().where(task_types.c.name == name))
            conn.execute(task_types.insert().values(
                name=name, blob=blob, version=version, updated_at=time.time()))


def _insert_attempts(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Attempt rows, and their CPU and preemptions added to each owner's day (one upsert
    per owner)."""
    conn.execute(attempts.insert(), rows)
    by_day: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        # a drained node's hand-back is no owner's doing: not in the preemption budget
        preempted = row["outcome"] == "preempted" and row.get("reason") != "drained"
        if row["cpu_s"] or preempted:
            key = (row["owner"] or "", cpu_day(row["reported_at"]))
            day = by_day.setdefault(key, [0.0, 0])
            day[0] += row["cpu_s"] or 0.0
            day[1] += preempted
    if by_day:  # ON CONFLICT ... DO UPDATE: SQLite 3.24+ and PostgreSQL alike
        conn.execute(sa.text(
            f"INSERT INTO {usage.name} (owner, day, cpu_s, preempted) "
            "VALUES (:owner, :day, :cpu_s, :preempted) "
            f"ON CONFLICT (owner, day) DO UPDATE SET cpu_s = {usage.name}.cpu_s + "
            f"excluded.cpu_s, preempted = {usage.name}.preempted + excluded.preempted"),
            [{"owner": o, "day": d, "cpu_s": c, "preempted": int(n)}
             for (o, d), (c, n) in by_day.items()])


def _insert_tasks(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """New task rows, as one plain executemany on the driver (every column named, so
    each row gets the schema's defaults, never the driver's)."""
    mark = driver.mark(conn)
    sql = (f"INSERT INTO {tasks.name} ({', '.join(driver.TASK_NAMES)}) "
           f"VALUES ({', '.join([mark] * len(driver.TASK_NAMES))})")
    values = []
    for row in rows:
        full = {**row, "tags": encode_tags(row.get("tags") or []),
                "idempotency_scope": row.get("owner") or ""}
        values.append(tuple(full.get(name, default) for name, default in driver.TASK_COLUMNS))
    driver.run(conn, sql, values)


_UpdateKey = tuple[tuple[str, ...], bool, bool]


def _group_updates(updates: list[RowUpdate]) -> dict[_UpdateKey, list[RowUpdate]]:
    groups: dict[_UpdateKey, list[RowUpdate]] = {}
    for u in updates:
        key = (tuple(sorted(u.fields)), u.token is not None, u.status is not None)
        groups.setdefault(key, []).append(u)
    return groups


def _insert_environments(conn: sa.Connection, fresh: dict[str, str]) -> None:
    """Lineage environments, each once: one another process stored first stays."""
    mark, now = driver.mark(conn), time.time()
    driver.run(conn, f"INSERT INTO {environments.name} (digest, body, created_at) "
                     f"VALUES ({mark}, {mark}, {mark}) ON CONFLICT (digest) DO NOTHING",
               [(digest, body, now) for digest, body in fresh.items()])


def _apply_updates(conn: sa.Connection, key: _UpdateKey, group: list[RowUpdate]) -> None:
    """One executemany per shape; a row missing or failing its guard fails the batch.

    Plain SQL on the driver (the columns are the table's own, never input): the hot path
    of every lease and report, where SQLAlchemy's per-row parameter work cost more than
    the update itself.
    """
    fields, fenced, guarded = key
    mark = driver.mark(conn)
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
    changed = driver.run(conn, sql, rows).rowcount
    if changed != len(rows):
        raise StaleWriteError(_stale(conn, group))


def _stale(conn: sa.Connection, group: list[RowUpdate]) -> list[str]:
    found = {r[0]: (r[1], r[2]) for r in conn.execute(
        sa.select(tasks.c.id, tasks.c.lease_token, tasks.c.status)
        .where(tasks.c.id.in_([u.task_id for u in group])))}
    return [u.task_id for u in group if u.task_id not in found
            or (u.token is not None and found[u.task_id][0] != u.token)
            or (u.status is not None and found[u.task_id][1] != u.status)]
