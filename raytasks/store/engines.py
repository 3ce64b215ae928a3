"""How the store connects, per backend: SQLite's WAL and writer connections, PostgreSQL's
pinged checkout.

On SQLite reads and writes go through two engines: the writer's transactions all begin
IMMEDIATE (writers are serialised anyway, and the events' order needs it: see
:mod:`.outbox`), waiting for another writer in :func:`_begin_immediate`, and a few
threads keep their writer connection between commits (:class:`_KeptWriter`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..errors import StoreError
from . import driver, migrate

#: What the commit path begins its transactions on: a thread's kept writer connection
#: (SQLite) or the engine, which checks out a pinged connection per commit (PostgreSQL).
Committing: TypeAlias = "Engine | _KeptWriter"

#: Seconds a PostgreSQL connect may take before the store counts as unavailable.
CONNECT_TIMEOUT_S = 5

#: WAL pages after which a committing connection checkpoints itself (SQLite's default
#: is 1,000): only reached when the manager's own timer (``checkpoint_wal``) falls behind.
WAL_AUTOCHECKPOINT_PAGES = 20_000


class StoreEngines:
    """The engines of one store URL: ``reader`` for reads, ``writer`` for writes (and
    migrations), ``committing`` for the commit path. Dialect differences in connecting
    stay here; on PostgreSQL one engine does all three.

    ``busy_timeout_s`` bounds how long a write waits for another writer (SQLite).

    Raises:
        StoreError: a URL of neither backend.
    """

    def __init__(self, url: str, *, busy_timeout_s: float) -> None:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            pragmas = _sqlite_pragmas(int(busy_timeout_s * 1000))
            args = {"timeout": busy_timeout_s, "check_same_thread": False}
            self.reader: Engine = sa.create_engine(url, connect_args=args)
            sa.event.listen(self.reader, "connect", pragmas)
            self.writer: Engine = sa.create_engine(url, connect_args=args)
            sa.event.listen(self.writer, "connect", _sqlite_pragmas(0))
            sa.event.listen(self.writer, "connect", _manual_transactions)
            sa.event.listen(self.writer, "begin", _begin_immediate(busy_timeout_s))
            self.committing: Committing = _KeptWriter(self.writer)
        elif url.startswith("postgresql"):
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://"):]
            # a server that does not answer fails a connect within CONNECT_TIMEOUT_S (a
            # store outage: StoreUnavailableError), never hangs the commit path
            self.reader = self.writer = sa.create_engine(
                url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
            # each commit checks a connection out, pinged: one lost with a restarted
            # server is replaced before the commit, not after it failed
            self.committing = self.writer
        else:
            raise StoreError(f"unsupported store URL {url!r}: use sqlite:/// or postgresql://")

    def checkpoint_wal(self) -> tuple[int, int]:
        """Copy SQLite's write-ahead log into the database, without blocking writers.

        Run off the commit path (the manager does it on a timer), so commits never pay a
        checkpoint's fsyncs. Returns the log's frames and how many of them are now in the
        database (a reader still on an older snapshot can hold some back). Nothing to do
        on PostgreSQL: ``(0, 0)``.
        """
        if self.reader.dialect.name != "sqlite":
            return 0, 0
        with self.reader.connect() as conn:
            _busy, frames, done = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        return int(frames), int(done)

    def close(self) -> None:
        if isinstance(self.committing, _KeptWriter):
            self.committing.close()
        self.reader.dispose()
        self.writer.dispose()


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
                driver.run(conn, "BEGIN IMMEDIATE")
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
