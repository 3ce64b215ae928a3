"""What a store fault means to a caller: the store away (:class:`StoreUnavailableError`)
or its filesystem full (:class:`StoreFullError`), told apart from a bad row.

A database restarting, a connection cut, a SQLite file another process holds locked: the
same call succeeds again later, and nothing was written. A full disk: the same, once
space is freed. Everything else (a duplicate key, a guarded update that found its row
changed) is the caller's and passes through unchanged.
"""

from __future__ import annotations

import errno
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from ..errors import StoreError, StoreFullError, StoreUnavailableError

#: SQLite's result codes (the primary code, the low byte) that mean "later", not "never".
_SQLITE_AWAY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN,
                sqlite3.SQLITE_IOERR, sqlite3.SQLITE_PROTOCOL}
#: PostgreSQL's SQLSTATEs of a full disk (53100) or out of memory and connections (53xxx),
#: and of an administrator or a crash ending the server (57P01..57P03).
_PG_FULL = {"53100"}
_PG_AWAY_PREFIXES = ("08", "53", "57P")
_OS_FULL = {errno.ENOSPC, errno.EDQUOT}


def store_fault(exc: BaseException, path: str) -> StoreError | None:
    """The store error ``exc`` means, or None when it is not a fault of the store.

    ``path``: what a full disk is reported against (the SQLite file, the database URL's
    host, an artifact directory).
    """
    if isinstance(exc, StoreUnavailableError | StoreFullError):
        return exc
    if isinstance(exc, OSError) and exc.errno in _OS_FULL:
        return StoreFullError(str(exc.filename or path), exc.strerror or "no space left")
    orig = getattr(exc, "orig", None) if isinstance(exc, sa.exc.DBAPIError) else exc
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary == sqlite3.SQLITE_FULL or "disk is full" in str(orig):
            return StoreFullError(path, "database or disk is full")
        if primary in _SQLITE_AWAY or "locked" in str(orig):
            return StoreUnavailableError(_first_line(orig))
        return None
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str):
        if sqlstate in _PG_FULL:
            return StoreFullError(path, _first_line(orig))
        if sqlstate.startswith(_PG_AWAY_PREFIXES):
            return StoreUnavailableError(_first_line(orig))
        return None
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError
                  | sa.exc.DisconnectionError) or (
            isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated):
        # no SQLSTATE: the driver could not connect or lost the connection
        return StoreUnavailableError(_first_line(orig or exc))
    return None


@contextmanager
def faults(path: str) -> Iterator[None]:
    """Raise a store fault inside as :class:`StoreUnavailableError` or
    :class:`StoreFullError` (chained to the driver's error); anything else unchanged."""
    try:
        yield
    except (sa.exc.SQLAlchemyError, sqlite3.Error, OSError) as exc:
        fault = store_fault(exc, path)
        if fault is None or fault is exc:
            raise
        raise fault from exc


#: The server's address in a driver's message: the operator's log has it (the chained
#: error); a caller over HTTP needs only what happened.
_ADDRESS = re.compile(r'connection to server at "[^"]*"(?:\s*\([^)]*\))?, port \d+ failed: ')


def _first_line(exc: object) -> str:
    text = str(exc).strip().splitlines()
    return _ADDRESS.sub("", text[0] if text else type(exc).__name__)[:300]
