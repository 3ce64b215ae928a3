"""Who may act and what they did: dashboard sessions and the audit trail, in the store.

Sessions live in the store, not in one server's memory, so every ``raytasks serve`` on
the store knows every session (two servers behind a balancer need no sticky sessions),
and signing out, or out everywhere, holds on all of them at once. The HTTP server
decides the policy (lifetimes, which tokens still count); this module keeps the rows,
with the two guarantees only the database can give:

- an owner's session cap is applied in the sign-in's own transaction, and evicts only
  that owner's oldest sessions (one owner's sign-ins never end another's session);
- audit rows are appended, read and pruned by age, never changed one by one.

A session's id here is the SHA-256 of its cookie: whoever reads the store cannot sign
in with what it holds.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import migrate
from .engines import StoreEngines
from .schema import audit, sessions

#: The first key of the PostgreSQL advisory locks that serialise one owner's sign-ins
#: (the second is taken from the owner's name).
SESSION_LOCK = 727275
#: The audit columns' widths: longer values are cut to fit, never refused.
_WIDTHS = {"owner": 200, "token_id": 16, "source": 64, "request_id": 64, "action": 32,
           "target": 200, "target_owner": 200, "detail": 400}


@dataclass(frozen=True)
class SessionRow:
    """One dashboard session: ``id`` is its cookie's digest; it ends at ``expires_at``,
    or when it has not been seen for the server's idle lifetime."""

    id: str
    owner: str
    token_sha256: str
    source: str
    created_at: float
    seen_at: float
    expires_at: float


def cookie_digest(cookie: str) -> str:
    """The id a session is stored under: the SHA-256 of its cookie value."""
    return hashlib.sha256(cookie.encode("utf-8", "replace")).hexdigest()


class SessionTable:
    """The sessions every server on the store shares."""

    def __init__(self, engine: Engine, writer: Engine) -> None:
        self._engine, self._writer = engine, writer

    def open(self, row: SessionRow, cap: int) -> int:
        """Store a new session, then end its owner's oldest ones past ``cap``.

        Returns how many of the owner's sessions were ended to make room.
        """
        with self._writer.begin() as conn:
            if conn.dialect.name == "postgresql":  # SQLite writers are serialised already
                key = int.from_bytes(hashlib.sha256(row.owner.encode()).digest()[:4], "big",
                                     signed=True)
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:a, :b)"),
                             {"a": SESSION_LOCK, "b": key})
            conn.execute(sessions.insert().values(**asdict(row)))
            surplus = [r[0] for r in conn.execute(
                sa.select(sessions.c.id).where(sessions.c.owner == row.owner)
                .order_by(sessions.c.created_at.desc(), sessions.c.id.desc())
                .offset(max(cap, 1)))]
            if surplus:
                conn.execute(sessions.delete().where(sessions.c.id.in_(surplus)))
        return len(surplus)

    def get(self, session_id: str) -> SessionRow | None:
        with self._engine.connect() as conn:
            found = conn.execute(sa.select(sessions).where(sessions.c.id == session_id)).first()
        return SessionRow(**found._mapping) if found is not None else None

    def touch(self, session_id: str, now: float) -> None:
        """Mark the session seen at ``now`` (its idle lifetime starts again)."""
        with self._writer.begin() as conn:
            conn.execute(sessions.update().where(sessions.c.id == session_id)
                         .values(seen_at=now))

    def end(self, session_id: str) -> bool:
        with self._writer.begin() as conn:
            return bool(conn.execute(sessions.delete()
                                     .where(sessions.c.id == session_id)).rowcount)

    def end_owner(self, owner: str) -> int:
        """End every session of ``owner`` (signing out everywhere)."""
        with self._writer.begin() as conn:
            return int(conn.execute(sessions.delete()
                                    .where(sessions.c.owner == owner)).rowcount or 0)

    def end_tokens(self, digests: list[str]) -> int:
        """End every session opened with one of these tokens (they were revoked)."""
        if not digests:
            return 0
        with self._writer.begin() as conn:
            return int(conn.execute(sessions.delete().where(
                sessions.c.token_sha256.in_(digests))).rowcount or 0)

    def of_owner(self, owner: str) -> list[SessionRow]:
        """The owner's sessions, oldest first."""
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(sessions).where(sessions.c.owner == owner)
                                .order_by(sessions.c.created_at, sessions.c.id))
            return [SessionRow(**r._mapping) for r in rows]

    def prune(self, now: float, idle_s: float) -> int:
        """Delete the sessions past their lifetime, or not seen for ``idle_s``."""
        with self._writer.begin() as conn:
            return int(conn.execute(sessions.delete().where(sa.or_(
                sessions.c.expires_at <= now,
                sessions.c.seen_at <= now - idle_s))).rowcount or 0)


class AuditTable:
    """The audit trail: appended to, read newest first, pruned by age."""

    def __init__(self, engine: Engine, writer: Engine) -> None:
        self._engine, self._writer = engine, writer

    def append(self, entries: list[dict[str, Any]]) -> None:
        """Entries of ``at, owner, action`` and optionally ``token_id, source,
        request_id, target, target_owner, detail`` (strings cut to the columns' widths)."""
        if not entries:
            return
        rows = [{"at": entry["at"], **{name: _cut(entry.get(name), width)
                                       for name, width in _WIDTHS.items()}}
                for entry in entries]
        with self._writer.begin() as conn:
            conn.execute(audit.insert(), rows)

    def query(self, *, owner: str | None = None, target_owner: str | None = None,
              action: str | None = None, since: float | None = None,
              until: float | None = None, before: int | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
        """Entries newest first; ``before`` (an entry id) continues a previous page."""
        stmt = sa.select(audit).order_by(audit.c.id.desc()).limit(limit)
        for column, value in ((audit.c.owner, owner), (audit.c.target_owner, target_owner),
                              (audit.c.action, action)):
            if value is not None:
                stmt = stmt.where(column == value)
        if since is not None:
            stmt = stmt.where(audit.c.at >= since)
        if until is not None:
            stmt = stmt.where(audit.c.at < until)
        if before is not None:
            stmt = stmt.where(audit.c.id < before)
        with self._engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def prune(self, before: float) -> int:
        """Delete the entries older than ``before`` (the retention setting's cut-off)."""
        with self._writer.begin() as conn:
            return int(conn.execute(audit.delete().where(audit.c.at < before)).rowcount or 0)


def _cut(value: Any, width: int) -> Any:
    return value[:width] if isinstance(value, str) else value


class AccessStore:
    """The sessions and audit tables of one store URL, for the processes that need only
    them: ``raytasks serve`` and the ``token`` and ``audit`` commands. Opening it brings
    the store to the current schema, like every opener.

    Raises:
        StoreError: a URL of neither backend, or a store of a newer raytasks.
    """

    def __init__(self, url: str, *, busy_timeout_s: float = 2.0) -> None:
        self._engines = StoreEngines(url, busy_timeout_s=busy_timeout_s)
        migrate.upgrade(self._engines.writer, url)
        self.sessions = SessionTable(self._engines.reader, self._engines.writer)
        self.audit = AuditTable(self._engines.reader, self._engines.writer)

    def close(self) -> None:
        self._engines.close()


__all__ = ["AccessStore", "AuditTable", "SessionRow", "SessionTable", "cookie_digest"]
