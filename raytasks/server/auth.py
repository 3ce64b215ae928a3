"""Bearer tokens: stored as SHA-256 digests, each bound to an owner and a role."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from ..settings import ApiToken


def hash_token(token: str) -> str:
    """The digest to put in ``api.tokens[].sha256`` for a token."""
    return hashlib.sha256(token.encode()).hexdigest()


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
    for entry in tokens:
        if hmac.compare_digest(entry.sha256, digest):
            return Principal(entry.owner, entry.role)
    return None
