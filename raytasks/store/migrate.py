"""Bring a store to the current schema with Alembic, whoever opens it first.

Every process that opens the store (the manager, the tracker, the notifier, a
CLI) runs this; the first one migrates, the others find the store at head. A
store written by raytasks 0.1 (schema 1, made before migrations were Alembic's)
has no ``alembic_version`` table: it is stamped at revision 0001 and upgraded.

A store already at :data:`HEAD` is recognised with one query, without importing
Alembic (a quarter of a second in every actor that opens the store).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
#: the newest revision under migrations/versions (a test holds it to Alembic's own head)
HEAD = "0005"
#: PostgreSQL advisory lock key: one migrator at a time across processes.
MIGRATION_LOCK = 727274


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
    if revision in ("head", HEAD) and current_revision(engine) == HEAD:
        return
    from alembic import command
    from alembic.util.exc import CommandError

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
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


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        value = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        return None if value is None else str(value)
