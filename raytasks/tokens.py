"""API tokens managed from the command line, kept as SHA-256 digests in ``<data_dir>``.

``raytasks token create|list|revoke`` and the first ``raytasks serve`` (which
creates an admin token when there is none, as Jupyter does) write
``<data_dir>/api_tokens.json``; only digests are stored, so the file never
holds a usable token. The HTTP server takes :func:`api_tokens`: the operator's
``api.tokens`` from the settings plus this file's, re-read when the file
changes, so a revoked token stops working without a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from .errors import SettingsError
from .settings import ApiToken, Settings

Role = Literal["user", "admin"]
FILE_NAME = "api_tokens.json"


def digest(token: str) -> str:
    """The SHA-256 hex digest stored for a token (the same as the server's ``hash_token``)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    """One stored token: its digest, whose it is, and an id to name it by (not secret)."""

    id: str
    sha256: str
    owner: str
    role: Role
    created_at: str

    def api_token(self) -> ApiToken:
        return ApiToken(sha256=self.sha256, owner=self.owner, role=self.role)


def token_file(settings: Settings) -> Path:
    return Path(settings.data_dir) / FILE_NAME


def load(settings: Settings) -> list[TokenRecord]:
    """The tokens in ``<data_dir>/api_tokens.json`` (none when there is no file).

    Raises:
        SettingsError: the file is not a token file raytasks wrote.
    """
    path = token_file(settings)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        return [TokenRecord(**row) for row in rows]
    except FileNotFoundError:
        return []
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"{path} is not a raytasks token file ({exc}); move it away "
                            "and create tokens again", path=str(path)) from None


def _save(settings: Settings, records: list[TokenRecord]) -> None:
    path = token_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # digests only, but still nobody else's business who holds tokens here
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump([asdict(r) for r in records], fh, indent=1)
    tmp.replace(path)


def create(settings: Settings, owner: str, role: Role = "user") -> tuple[str, TokenRecord]:
    """Make a token for ``owner``; returns the token (shown once, stored nowhere) and its record.

    Raises:
        SettingsError: ``owner`` is empty or not a plain name.
    """
    owner = owner.strip()
    if not owner or len(owner) > 64 or not owner.replace("-", "").replace("_", "")\
            .replace(".", "").replace("@", "").isalnum():
        raise SettingsError(f"owner {owner!r} is not a plain name (letters, digits, - _ . @)",
                            owner=owner)
    token = "rt_" + secrets.token_urlsafe(32)
    sha = digest(token)
    record = TokenRecord(id=sha[:10], sha256=sha, owner=owner, role=role,
                         created_at=datetime.now(UTC).isoformat(timespec="seconds"))
    _save(settings, [*load(settings), record])
    return token, record


def revoke(settings: Settings, *, owner: str | None = None,
           token_id: str | None = None) -> list[TokenRecord]:
    """Remove every stored token of ``owner``, or the one with ``token_id``; returns them.

    Tokens in the settings' ``api.tokens`` are the operator's file to edit, not this one's.
    """
    if owner is None and token_id is None:
        raise SettingsError("name the tokens to revoke: an owner or a token id")
    records = load(settings)
    gone = [r for r in records if (owner is not None and r.owner == owner)
            or (token_id is not None and r.id == token_id)]
    if gone:
        _save(settings, [r for r in records if r not in gone])
    return gone


def ensure_first_admin(settings: Settings) -> str | None:
    """On a fresh install (no token anywhere) create an ``admin`` token and return it."""
    if settings.api.tokens or load(settings):
        return None
    token, _ = create(settings, "admin", "admin")
    return token


_cache: dict[Path, tuple[tuple[int, int, int], list[ApiToken]]] = {}
_cache_lock = threading.Lock()


def api_tokens(settings: Settings) -> list[ApiToken]:
    """Every token the server accepts: the settings' ``api.tokens`` plus the token file's.

    Cheap per request: the file is parsed again only when its mtime changes.
    """
    path = token_file(settings)
    try:
        st = path.stat()
    except FileNotFoundError:
        return list(settings.api.tokens)
    # every write replaces the file, so a new inode tells a change even within one mtime tick
    version = (st.st_mtime_ns, st.st_ino, st.st_size)
    with _cache_lock:
        hit = _cache.get(path)
        if hit is None or hit[0] != version:
            hit = _cache[path] = (version, [r.api_token() for r in load(settings)])
    return [*settings.api.tokens, *hit[1]]


__all__ = ["TokenRecord", "api_tokens", "create", "digest", "ensure_first_admin", "load",
           "revoke", "token_file"]
