"""Plain SQL on the store's hot paths, straight on the driver's cursor on SQLite.

SQLAlchemy's per-statement work cost more than SQLite's own (and, for the reads, building
and caching a statement more than the read): the commit's statements and the reads the
manager and clients make per task go here as plain SQL. The columns they name are the
table's own, never input.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlalchemy as sa

from .schema import tasks

#: Every task column with the value it takes when a new row leaves it out (the
#: schema's Python-side default, else NULL): plain inserts fill them in themselves.
TASK_COLUMNS = tuple((c.name, getattr(c.default, "arg", None)
                      if c.default is not None and c.default.is_scalar else None)
                     for c in tasks.c)
TASK_NAMES = tuple(name for name, _ in TASK_COLUMNS)


#: The most ids one ``IN (...)`` names (:func:`query_ids`).
IN_CHUNK = 512


def query_ids(conn: sa.Connection, head: str, ids: list[str],
              tail: str = "") -> list[tuple[Any, ...]]:
    """The rows of ``{head} (ids...) {tail}`` in plain SQL, run for :data:`IN_CHUNK` ids
    at a time, each list :func:`padded`."""
    marker, rows = mark(conn), []
    for start in range(0, len(ids), IN_CHUNK):
        chunk = padded(ids[start:start + IN_CHUNK])
        rows += query(conn, f"{head} ({', '.join([marker] * len(chunk))}) {tail}", chunk)
    return rows


def padded(ids: list[Any]) -> list[Any]:
    """``ids`` with its last repeated up to the next power of two: an ``IN (...)`` list
    of any length then takes one of a few statement texts, not one per length.

    Each connection keeps the statements it prepared, by text (the sqlite3 module's
    cache, psycopg's prepared statements); one text per length filled those caches a
    little more with every new batch size, which a long-running manager saw as memory
    growing for hours. A repeated value selects, deletes or returns its row once.
    """
    if len(ids) < 2:
        return ids
    return ids + [ids[-1]] * ((1 << (len(ids) - 1).bit_length()) - len(ids))


def query(conn: sa.Connection, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """The rows of a plain SQL query (straight on the driver's cursor on SQLite)."""
    if conn.dialect.name != "sqlite":
        return [tuple(r) for r in conn.exec_driver_sql(sql, tuple(params))]
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        rows: list[tuple[Any, ...]] = cursor.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
    return rows


def run(conn: sa.Connection, sql: str, rows: list[tuple[Any, ...]] | None = None) -> Any:
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


def mark(conn: sa.Connection) -> str:
    """The driver's positional parameter marker (plain SQL on the hot paths)."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"
