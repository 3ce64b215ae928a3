"""Bring a store to the current schema with Alembic, whoever opens it first.

Every process that opens the store (the manager, the tracker, the notifier, a
CLI) runs this, under the store's write lock; the first one migrates, the others wait
for that lock (up to :data:`MIGRATION_WAIT_S`, not the everyday busy timeout) and find
the store at head. A store written by raytasks 0.1 (schema 1, made before migrations
were Alembic's) has no ``alembic_version`` table: it is stamped at revision 0001 and
upgraded.

A store already at :data:`HEAD` is recognised with one query, without importing
Alembic (a quarter of a second in every actor that opens the store).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
#: the newest revision under migrations/versions (a test holds it to Alembic's own head)
HEAD = "0013"
#: PostgreSQL advisory lock key: one migrator at a time across processes.
MIGRATION_LOCK = 727274
#: How long an opening process waits for another one's migration (SQLite's write lock):
#: the system actors start side by side, and the first to open a new store migrates it.
MIGRATION_WAIT_S = 120.0


def _config(connection: sa.Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def upgrade(engine: sa.Engine, url: str, revision: str = "head") -> None:
    """Migrate the store behind ``engine`` to ``revision`` (the newest by default).

    Raises:
        StoreError: the store was written by a newer raytasks.
    """
    with engine.connect() as conn, _waiting_for_the_lock(conn), conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        if revision in ("head", HEAD) and _revision(conn) == HEAD:
            return
        from alembic import command
        from alembic.util.exc import CommandError

        inspector = sa.inspect(conn)
        config = _config(conn)
        if not inspector.has_table("alembic_version") and inspector.has_table("rt_tasks"):
            command.stamp(config, "0001")  # schema 1, as raytasks 0.1 created it
        try:
            command.upgrade(config, revision)
        except CommandError as exc:
            raise StoreError(f"store {url} is at a schema revision this raytasks does not "
                             f"know ({exc}); it was written by a newer raytasks: upgrade "
                             "raytasks") from None


@contextmanager
def _waiting_for_the_lock(conn: sa.Connection) -> Iterator[None]:
    """On SQLite, wait up to :data:`MIGRATION_WAIT_S` for the write lock (another process
    may be migrating the same new file), not the store's everyday busy timeout."""
    if conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.driver_connection  # set before SQLAlchemy's BEGIN IMMEDIATE
    assert raw is not None
    usual = raw.execute("PRAGMA busy_timeout").fetchone()[0]
    raw.execute(f"PRAGMA busy_timeout={int(MIGRATION_WAIT_S * 1000)}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA busy_timeout={int(usual)}")


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return _revision(conn)


def _revision(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    value = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    return None if value is None else str(value)
