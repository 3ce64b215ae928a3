"""Who is calling, and what its token lets it do: bearer tokens (stored as SHA-256
digests), their scopes, and the CSRF token of a dashboard session.

A token has scopes: ``read`` (dashboards, monitoring: every GET, the event stream),
``submit`` (create and change its owner's tasks and schedules, optionally only of some
task types) and ``admin`` (every owner's tasks, the audit trail; it includes the other
two). A token without explicit scopes has its role's: ``user`` is read and submit,
``admin`` all three. Every route declares the one scope it needs (:mod:`.common`).

The dashboard signs in once (``POST /session``) and is then known by an HttpOnly,
SameSite=Strict cookie; sessions are kept in the store (:mod:`.sessions`), and each is
bound to the token that opened it: its caller is that token's principal, as long as the
token is still accepted.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from ..settings import ApiToken

SESSION_COOKIE = "raytasks_session"
CSRF_HEADER = "X-CSRF-Token"
READ, SUBMIT, ADMIN = "read", "submit", "admin"
SCOPES = (READ, SUBMIT, ADMIN)
ROLE_SCOPES = {"user": frozenset({READ, SUBMIT}), "admin": frozenset(SCOPES)}


def hash_token(token: str) -> str:
    """The digest to put in ``api.tokens[].sha256`` for a token."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """A caller: whose tasks it acts on, what it may do, and (for the audit trail and
    sessions) the digest of the token it presented.

    ``scopes`` None: the role's. ``task_types`` None: a submit scope for every type.
    """

    owner: str
    role: str = "user"
    scopes: frozenset[str] | None = None
    task_types: frozenset[str] | None = None
    token_sha256: str | None = None

    def __post_init__(self) -> None:
        granted = ROLE_SCOPES.get(self.role, frozenset()) if self.scopes is None \
            else frozenset(self.scopes)
        if ADMIN in granted:  # an admin may do whatever a user may
            granted |= {READ, SUBMIT}
        object.__setattr__(self, "scopes", granted)

    @property
    def granted(self) -> frozenset[str]:
        assert self.scopes is not None
        return self.scopes

    @property
    def admin(self) -> bool:
        return ADMIN in self.granted

    @property
    def token_id(self) -> str | None:
        """The token's id as ``raytasks token list`` shows it (not secret)."""
        return self.token_sha256[:10] if self.token_sha256 else None

    def may_see(self, owner: str | None) -> bool:
        return self.admin or owner == self.owner

    def may_submit(self, task_type: str) -> bool:
        return SUBMIT in self.granted and (self.task_types is None
                                           or task_type in self.task_types)


def principal_of(token: ApiToken) -> Principal:
    return Principal(token.owner, token.role,
                     None if token.scopes is None else frozenset(token.scopes),
                     None if token.task_types is None else frozenset(token.task_types),
                     token.sha256)


def authenticate(header: str | None, tokens: list[ApiToken]) -> Principal | None:
    """The principal of an ``Authorization: Bearer <token>`` header, or None."""
    if not header or not header.lower().startswith("bearer "):
        return None
    return principal_for(header[7:].strip(), tokens)


def principal_for(token: str, tokens: list[ApiToken]) -> Principal | None:
    return principal_by_digest(hash_token(token), tokens)


def principal_by_digest(digest: str, tokens: list[ApiToken]) -> Principal | None:
    """The principal of the token with this digest, if it is still accepted."""
    found = None
    for entry in tokens:  # no early exit: every token costs the same comparison time
        if hmac.compare_digest(entry.sha256, digest) and found is None:
            found = principal_of(entry)
    return found


def csrf_for(cookie: str) -> str:
    """A session's CSRF token, derived from its cookie: every server on the store
    computes the same one, and none has to be stored."""
    return hmac.new(cookie.encode("utf-8", "replace"), b"raytasks csrf",
                    hashlib.sha256).hexdigest()


def csrf_ok(cookie: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(csrf_for(cookie), presented)
