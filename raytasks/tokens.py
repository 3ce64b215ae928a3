"""API tokens managed from the command line, kept as SHA-256 digests in ``<data_dir>``.

``raytasks token create|list|revoke`` and the first ``raytasks serve`` (which
creates an admin token when there is none, as Jupyter does) write
``<data_dir>/api_tokens.json``; only digests are stored, so the file never
holds a usable token. The HTTP server takes :func:`api_tokens`: the operator's
``api.tokens`` from the settings plus this file's, re-read when the file
changes, so a revoked token stops working without a restart.

A token may carry scopes (``read``, ``submit``, ``admin``; none: its role's) and, with
``submit``, the task types it may submit. Revoking a token also ends its dashboard
sessions in the store, and :func:`audit` records both changes in the store's audit
trail (who ran the command, on which host).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from .errors import SettingsError
from .settings import ApiToken, Settings

log = logging.getLogger("raytasks.tokens")

Role = Literal["user", "admin"]
Scope = Literal["read", "submit", "admin"]
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
    scopes: tuple[Scope, ...] | None = None  # None: the role's
    task_types: tuple[str, ...] | None = None  # None: every type

    def api_token(self) -> ApiToken:
        return ApiToken(sha256=self.sha256, owner=self.owner, role=self.role,
                        scopes=None if self.scopes is None else list(self.scopes),
                        task_types=None if self.task_types is None else list(self.task_types))

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TokenRecord:
        """A record as the file holds it (files written before scopes have none)."""
        lists = {k: tuple(row[k]) for k in ("scopes", "task_types")
                 if row.get(k) is not None}
        return cls(**{**row, **lists})


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
        return [TokenRecord.from_row(row) for row in rows]
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


def _plain(name: str) -> bool:
    return bool(name) and len(name) <= 64 and name.replace("-", "").replace("_", "")\
        .replace(".", "").replace("@", "").isalnum()


def create(settings: Settings, owner: str, role: Role = "user",
           scopes: list[Scope] | None = None,
           task_types: list[str] | None = None) -> tuple[str, TokenRecord]:
    """Make a token for ``owner``; returns the token (shown once, stored nowhere) and its
    record. ``scopes`` None: the role's; ``task_types`` limits what it may submit.

    Raises:
        SettingsError: ``owner`` or a task type is not a plain name, or task types are
            named for a token that cannot submit.
    """
    owner = owner.strip()
    if not _plain(owner):
        raise SettingsError(f"owner {owner!r} is not a plain name (letters, digits, - _ . @)",
                            owner=owner)
    for name in task_types or []:
        if not _plain(name):
            raise SettingsError(f"task type {name!r} is not a plain name", task_type=name)
    if task_types and scopes is not None and "submit" not in scopes:
        raise SettingsError("task types limit what a token submits: give it the submit scope")
    token = "rt_" + secrets.token_urlsafe(32)
    sha = digest(token)
    record = TokenRecord(id=sha[:10], sha256=sha, owner=owner, role=role,
                         created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                         scopes=None if scopes is None else tuple(dict.fromkeys(scopes)),
                         task_types=None if task_types is None else tuple(task_types))
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
    token, record = create(settings, "admin", "admin")
    audit(settings, "token.create", [record], "first raytasks serve")
    return token


def audit(settings: Settings, action: Literal["token.create", "token.revoke"],
          records: list[TokenRecord], detail: str | None = None) -> bool:
    """Record token changes in the store's audit trail, as the operator who ran the
    command; a revoke also ends the revoked tokens' dashboard sessions there. Returns
    False (after logging why) when the store cannot be written: the token file holds."""
    from .store.access import AccessStore

    if not records:
        return True
    assert settings.store_url is not None
    try:
        actor = f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in the environment nor the password file
        actor = "cli:unknown"
    request_id = uuid.uuid4().hex
    try:
        access = AccessStore(settings.store_url, busy_timeout_s=settings.store_busy_timeout_s)
        try:
            if action == "token.revoke":
                access.sessions.end_tokens([r.sha256 for r in records])
            access.audit.append([{
                "at": time.time(), "owner": actor, "source": socket.gethostname(),
                "request_id": request_id, "action": action, "target": r.id,
                "target_owner": r.owner, "detail": detail} for r in records])
        finally:
            access.close()
    except Exception as exc:  # RaytasksError, OSError, the database's own (SQLAlchemy's)
        log.warning("the audit trail in %s could not record %s: %s", settings.store_url,
                    action, exc)
        return False
    return True


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


__all__ = ["TokenRecord", "api_tokens", "audit", "create", "digest", "ensure_first_admin",
           "load", "revoke", "token_file"]
