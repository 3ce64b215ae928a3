"""SqlTaskStore: the TaskStore contract on SQLite (WAL) or PostgreSQL, via SQLAlchemy Core.

Two disciplines make concurrent writers safe:

- **Guarded updates.** A :class:`RowUpdate` with a token or status guard that finds
  its row changed (or gone) fails the whole batch (:class:`StaleWriteError`).
- **One ordered outbox.** Event ids must become visible in id order, or a reader's
  cursor could move past an id that commits later. On PostgreSQL every transaction
  that inserts events first takes one advisory lock, held to commit; on SQLite every
  write transaction begins IMMEDIATE (writers are serialised anyway). So the next
  event-writing transaction starts only after the previous one committed.

The store is composed of parts with one job each: :mod:`.engines` connects to each
backend, :mod:`.writes` commits (the guarded updates), :mod:`.reads` reads tasks,
:mod:`.outbox` holds the events and their delivery, :mod:`.logs` and :mod:`.schedules`
their tables; :mod:`.driver` runs the hot paths' plain SQL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..errors import StoreUnavailableError
from ..messages import ProgressReport
from ..models import AttemptInfo, Task, TaskQuery, TaskStatus
from . import migrate
from .base import ActiveRow, TaskRows, TaskStore, WriteBatch, to_json
from .engines import KEPT_WRITERS, StoreEngines
from .faults import faults
from .logs import LogTable
from .outbox import EVENTS_LOCK, Outbox
from .reads import TaskReader
from .schedules import ScheduleTable
from .schema import schema
from .writes import TaskWriter

log = logging.getLogger(__name__)


#: How long a system actor (manager, tracker, notifier) that starts while the store is away
#: waits for it: one restarted during an outage comes up once the store is back, rather
#: than die (Ray does not restart an actor whose constructor raised).
ACTOR_OPEN_WAIT_S = 600.0


class SqlTaskStore(TaskStore):
    """One implementation for both SQL backends; dialect differences in connecting stay
    in :class:`StoreEngines`.

    ``busy_timeout_s`` bounds how long a write waits for another writer (SQLite):
    keep it well under the lease TTL, so one stall cannot expire healthy leases.
    ``open_wait_s``: how long opening waits for a store that is away (0: fail at once).
    """

    def __init__(self, url: str, *, busy_timeout_s: float = 2.0,
                 open_wait_s: float = 0.0) -> None:
        self.url = url
        #: what a full disk or an outage is reported against: the SQLite file, or the
        #: server and database (never a password)
        self.where = url.split("///", 1)[-1] if url.startswith("sqlite") else \
            sa.engine.make_url(url).render_as_string(hide_password=True)
        self._engines = StoreEngines(url, busy_timeout_s=busy_timeout_s)
        self.engine: Engine = self._engines.reader
        self._writer: Engine = self._engines.writer
        self._committing = self._engines.committing
        self._open(open_wait_s)
        self._writes = TaskWriter(self._committing, self._writer)
        self._reads = TaskReader(self.engine)
        self._outbox = Outbox(self.engine, self._writer)
        self.schedules = ScheduleTable(self.engine, self._writer)
        self.logs = LogTable(self.engine, self._writer, self.where)

    def _open(self, wait_s: float) -> None:
        """Migrate (or find migrated) the store, waiting up to ``wait_s`` while it is away.

        Raises:
            StoreUnavailableError: still away after ``wait_s``.
        """
        deadline = time.monotonic() + wait_s
        told = 0.0
        while True:
            try:
                with faults(self.where):
                    migrate.upgrade(self._writer, self.url)
                return
            except StoreUnavailableError as exc:
                now = time.monotonic()
                if now >= deadline:
                    raise
                if now - told > 10:
                    told = now
                    log.warning("waiting for the store to open: %s", exc)
            time.sleep(0.5)  # the store's own restart takes seconds

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def ping(self) -> None:
        """Begin a write transaction and end it: raises :class:`StoreUnavailableError`
        while the store is away (a server down or cut off, a SQLite file locked by
        another process)."""
        with faults(self.where), self._writer.begin() as conn:
            conn.exec_driver_sql("SELECT 1")

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(schema.c.version))).scalar() or 0)

    # -- writes ----------------------------------------------------------------

    def commit(self, batch: WriteBatch) -> list[int]:
        with faults(self.where):
            return self._writes.commit(batch)

    def append_events(self, rows: list[dict[str, Any]]) -> list[int]:
        with faults(self.where):
            return self._outbox.append_events(rows)

    def record_progress(self, reports: list[tuple[ProgressReport, str]],
                        now: float) -> None:
        with faults(self.where):
            self._writes.record_progress(reports, now)

    def checkpoint_wal(self) -> tuple[int, int]:
        with faults(self.where):
            return self._engines.checkpoint_wal()

    def prune_events(self, before: float) -> int:
        with faults(self.where):
            return self._outbox.prune_events(before)

    def save_task_type(self, name: str, blob: bytes, version: int) -> None:
        with faults(self.where):
            self._writes.save_task_type(name, blob, version)

    def set_cursor(self, name: str, last_id: int) -> None:
        with faults(self.where):
            self._outbox.set_cursor(name, last_id)

    def get_cursor(self, name: str) -> int | None:
        with faults(self.where):
            return self._outbox.get_cursor(name)

    def log_delivery(self, rows: list[dict[str, Any]]) -> None:
        with faults(self.where):
            self._outbox.log_delivery(rows)

    def set_delivery_outcome(self, channel: str, outcome: str, new_outcome: str) -> None:
        with faults(self.where):
            self._outbox.set_delivery_outcome(channel, outcome, new_outcome)

    def deliveries(self, channel: str | None = None, outcome: str | None = None,
                   limit: int = 1000) -> list[dict[str, Any]]:
        with faults(self.where):
            return self._outbox.deliveries(channel, outcome, limit)

    # -- reads -----------------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        with faults(self.where):
            return self._reads.get(task_id)

    def get_many(self, task_ids: list[str]) -> dict[str, Task]:
        with faults(self.where):
            return self._reads.get_many(task_ids)

    def with_environments(self, found: Iterable[Task]) -> None:
        """Each task's lineage with its environment's keys back (``raytasks.lineage``):
        a task built from a row this process wrote rather than read."""
        with faults(self.where):
            self._reads.with_environments(found)

    def checkpoint(self, task_id: str) -> Any:
        with faults(self.where):
            return self._reads.checkpoint(task_id)

    def find_idempotent(self, scope: str, keys: list[str]) -> dict[str, Task]:
        with faults(self.where):
            return self._reads.find_idempotent(scope, keys)

    def cached(self, key: str, owner: str | None, any_owner: bool = False,
               limit: int = 3) -> list[Task]:
        with faults(self.where):
            return self._reads.cached(key, owner, any_owner, limit)

    def query(self, query: TaskQuery, *, count: bool = True) -> TaskRows:
        with faults(self.where):
            return self._reads.query(query, count=count)

    def active_rows(self, task_ids: list[str] | None = None) -> list[ActiveRow]:
        with faults(self.where):
            return self._reads.active_rows(task_ids)

    def intake_rows(self, limit: int = 1000) -> list[tuple[str, float]]:
        with faults(self.where):
            return self._reads.intake_rows(limit)

    def claim_intake(self, task_ids: list[str]) -> list[str]:
        with faults(self.where):
            return self._writes.claim_intake(task_ids)

    def states(self, task_ids: list[str]) -> dict[str, tuple[TaskStatus, str | None]]:
        with faults(self.where):
            return self._reads.states(task_ids)

    def status_counts(self) -> dict[str, int]:
        with faults(self.where):
            return self._reads.status_counts()

    def finished_before(self, before: float, limit: int,
                        columns: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        with faults(self.where):
            return self._reads.finished_before(before, limit, columns)

    def finished_counts(self) -> dict[tuple[str | None, str], int]:
        with faults(self.where):
            return self._reads.finished_counts()

    def events_after(self, after_id: int, limit: int = 1000) -> list[dict[str, Any]]:
        with faults(self.where):
            return self._outbox.events_after(after_id, limit)

    def max_event_id(self) -> int:
        with faults(self.where):
            return self._outbox.max_event_id()

    def get_progress(self, task_id: str) -> dict[str, Any] | None:
        with faults(self.where):
            return self._reads.get_progress(task_id)

    def model_digest(self, key: str) -> str | None:
        with faults(self.where):
            return self._reads.model_digest(key)

    def usage_of_day(self, day: str) -> dict[str, tuple[float, int]]:
        with faults(self.where):
            return self._reads.usage_of_day(day)

    def attempts(self, task_id: str) -> list[AttemptInfo]:
        with faults(self.where):
            return self._reads.attempts(task_id)

    def runs_of(self, task_ids: list[str]) -> list[tuple[str, str, int | None, float]]:
        with faults(self.where):
            return self._reads.runs_of(task_ids)

    def estimate_errors(self, since: float) -> list[tuple[str, float, float]]:
        with faults(self.where):
            return self._reads.estimate_errors(since)

    def recent_runs(self, limit: int) -> list[tuple[str, str, int | None, float]]:
        with faults(self.where):
            return self._reads.recent_runs(limit)

    def task_types(self) -> list[tuple[str, bytes, int]]:
        with faults(self.where):
            return self._reads.task_types()

    def close(self) -> None:
        self._engines.close()


__all__ = ["ACTOR_OPEN_WAIT_S", "EVENTS_LOCK", "KEPT_WRITERS", "SqlTaskStore", "to_json"]
