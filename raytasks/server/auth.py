"""Who is calling: bearer tokens (stored as SHA-256 digests) and dashboard sessions.

An API client sends ``Authorization: Bearer <token>``. The dashboard instead
logs in once (``POST /session`` with the token) and gets an HttpOnly,
SameSite=Strict session cookie that page script cannot read, plus a CSRF token
it keeps in memory only; every state-changing request made with the cookie must
echo that token in ``X-CSRF-Token``. Nothing is kept in ``localStorage``.
Sessions live in the server process: restarting ``raytasks serve`` logs
dashboards out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..settings import ApiToken

SESSION_COOKIE = "raytasks_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL_S = 12 * 3600.0
MAX_SESSIONS = 10_000


def hash_token(token: str) -> str:
    """The digest to put in ``api.tokens[].sha256`` for a token."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class Principal:
    owner: str
    role: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def may_see(self, owner: str | None) -> bool:
        return self.admin or owner == self.owner


def authenticate(header: str | None, tokens: list[ApiToken]) -> Principal | None:
    """The principal of an ``Authorization: Bearer <token>`` header, or None."""
    if not header or not header.lower().startswith("bearer "):
        return None
    return principal_for(header[7:].strip(), tokens)


def principal_for(token: str, tokens: list[ApiToken]) -> Principal | None:
    digest = hash_token(token)
    found = None
    for entry in tokens:  # no early exit: every token costs the same comparison time
        if hmac.compare_digest(entry.sha256, digest) and found is None:
            found = Principal(entry.owner, entry.role)
    return found


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str
    expires_at: float

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(self.csrf, presented)


class Sessions:
    """Dashboard sessions by their random id (the cookie's value), with a lifetime."""

    def __init__(self, ttl_s: float = SESSION_TTL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.ttl_s, self.clock = ttl_s, clock
        self._by_id: dict[str, Session] = {}

    def open(self, who: Principal) -> tuple[str, Session]:
        """A new session for ``who``: (its id for the cookie, the session)."""
        now = self.clock()
        if len(self._by_id) >= MAX_SESSIONS:
            self._by_id = {k: s for k, s in self._by_id.items() if s.expires_at > now}
            while len(self._by_id) >= MAX_SESSIONS:  # still full: the oldest goes
                del self._by_id[next(iter(self._by_id))]
        session_id = secrets.token_urlsafe(32)
        session = Session(who, secrets.token_urlsafe(32), now + self.ttl_s)
        self._by_id[session_id] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is not None and session.expires_at <= self.clock():
            del self._by_id[session_id]
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)
