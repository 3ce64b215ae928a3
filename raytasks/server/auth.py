"""Who is calling: bearer tokens (stored as SHA-256 digests) and dashboard sessions.

An API client sends ``Authorization: Bearer <token>``. The dashboard instead
logs in once (``POST /session`` with the token) and gets an HttpOnly,
SameSite=Strict session cookie that page script cannot read, plus a CSRF token
it keeps in memory only; every state-changing request made with the cookie must
echo that token in ``X-CSRF-Token``. Nothing is kept in ``localStorage``.
Sessions live in the server process: restarting ``raytasks serve`` logs
dashboards out.

Guessing is slowed per client address (:class:`WrongTokens`): past
``api.max_wrong_tokens`` wrong tokens in a minute, the address is refused (429) before
its token is checked, a right one included, until the minute has room again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from ..settings import ApiToken

SESSION_COOKIE = "raytasks_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL_S = 12 * 3600.0
MAX_SESSIONS = 10_000
#: The window over which wrong tokens are counted, per client address.
WRONG_TOKEN_WINDOW_S = 60.0
#: Client addresses whose wrong tokens are remembered at once (the oldest go first).
MAX_TRACKED_ADDRESSES = 10_000


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


class WrongTokens:
    """Wrong tokens by client address, over a sliding window.

    An address that presented ``limit`` wrong tokens within ``window_s`` is refused
    until the oldest of them leaves the window: its next token is not checked at all,
    so a right guess is refused like a wrong one and guessing runs at ``limit`` tries
    per window. Only wrong tokens count (an expired session cookie is no guess), and a
    right token does not clear the count.
    """

    def __init__(self, limit: int, window_s: float = WRONG_TOKEN_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic,
                 max_addresses: int = MAX_TRACKED_ADDRESSES) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self.max_addresses = max_addresses
        self._by_address: OrderedDict[str, deque[float]] = OrderedDict()

    def refused_for(self, address: str) -> float:
        """Seconds until ``address`` may present a token again (0.0: it may now)."""
        wrong = self._recent(address)
        if wrong is None or len(wrong) < self.limit:
            return 0.0
        return max(0.0, wrong[0] + self.window_s - self.clock())

    def wrong(self, address: str) -> None:
        """``address`` presented a wrong token."""
        wrong = self._recent(address)
        if wrong is None:
            wrong = self._by_address[address] = deque(maxlen=self.limit)
            while len(self._by_address) > self.max_addresses:
                self._by_address.popitem(last=False)
        wrong.append(self.clock())
        self._by_address.move_to_end(address)

    def _recent(self, address: str) -> deque[float] | None:
        wrong = self._by_address.get(address)
        if wrong is None:
            return None
        cutoff = self.clock() - self.window_s
        while wrong and wrong[0] <= cutoff:
            wrong.popleft()
        if not wrong:
            del self._by_address[address]
            return None
        return wrong
