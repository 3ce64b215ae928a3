"""Dashboard sessions: opened with a token, kept in the store, ended with the token.

A session is a row of the store's ``rt_sessions`` (:mod:`raytasks.store.access`), so
every ``raytasks serve`` on the store shares it: two servers behind a balancer need no
sticky sessions, and signing out (or out everywhere) holds on all of them.

On every request the session's token is looked up again among the tokens accepted now
(the token file is re-read when it changes): a revoked token's sessions are refused
from their next request on, on every server. The caller is the token's principal, so a
session never has more scopes than its token. A session also ends after
``api.session_idle_s`` unused and ``api.session_max_s`` after sign-in; an owner holds
at most ``api.max_sessions_per_owner``, and a new one ends that owner's oldest (never
another owner's).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..settings import ApiSettings, ApiToken
from ..store.access import SessionRow, SessionTable, cookie_digest
from .auth import Principal, csrf_for, principal_by_digest

#: A session's last use is written at most this often (and at most every tenth of the
#: idle lifetime): the idle lifetime is kept to within this much, without a store write
#: per request.
TOUCH_S = 60.0
#: What the store keeps of a source address.
MAX_SOURCE = 64


@dataclass(frozen=True)
class Session:
    """A live session: its caller, its id in the store, and its CSRF token."""

    principal: Principal
    digest: str
    csrf: str

    @property
    def handle(self) -> str:
        """A name for the session in the audit trail (not enough to use it)."""
        return self.digest[:12]


class Sessions:
    """The store's sessions, with the operator's lifetimes and cap."""

    def __init__(self, table: SessionTable, api: ApiSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.table, self.clock = table, clock
        self.idle_s, self.max_s = api.session_idle_s, api.session_max_s
        self.cap = api.max_sessions_per_owner

    def open(self, who: Principal, source: str) -> tuple[str, Session, int]:
        """A new session for ``who`` (its token's digest binds it): the cookie, the
        session, and how many of the owner's oldest sessions it ended."""
        assert who.token_sha256 is not None, "a session is opened with a token"
        now = self.clock()
        cookie = secrets.token_urlsafe(32)
        digest = cookie_digest(cookie)
        evicted = self.table.open(SessionRow(
            id=digest, owner=who.owner, token_sha256=who.token_sha256,
            source=source[:MAX_SOURCE], created_at=now, seen_at=now,
            expires_at=now + self.max_s), self.cap)
        return cookie, Session(who, digest, csrf_for(cookie)), evicted

    def find(self, cookie: str | None, tokens: list[ApiToken]) -> Session | None:
        """The live session of a cookie, or None: unknown, past a lifetime (then it is
        deleted), or its token is no longer among ``tokens`` (refused; the row goes with
        ``raytasks token revoke`` or its lifetime, so a token file that is unreadable
        for a moment signs nobody out for good)."""
        if not cookie or len(cookie) > 256:
            return None
        digest = cookie_digest(cookie)
        row = self.table.get(digest)
        if row is None:
            return None
        now = self.clock()
        if now >= row.expires_at or now - row.seen_at >= self.idle_s:
            self.table.end(digest)
            return None
        who = principal_by_digest(row.token_sha256, tokens)
        if who is None:
            return None
        if now - row.seen_at >= min(TOUCH_S, self.idle_s / 10):
            self.table.touch(digest, now)
        return Session(who, digest, csrf_for(cookie))

    def close(self, cookie: str | None) -> bool:
        if not cookie or len(cookie) > 256:
            return False
        return self.table.end(cookie_digest(cookie))

    def close_owner(self, owner: str) -> int:
        """Sign ``owner`` out everywhere: every session, on every server."""
        return self.table.end_owner(owner)

    def prune(self) -> int:
        """Delete the sessions past either lifetime (a revoked token's are refused at
        once, and deleted by ``raytasks token revoke`` or here)."""
        return self.table.prune(self.clock(), self.idle_s)
