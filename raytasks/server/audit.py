"""The audit trail at the edge: what a caller did, recorded with who, with which token,
from where and in which request.

Recorded after the action succeeded: task create, update, cancel, retry and delete,
schedule create, pause, resume and delete, dashboard sign-in and sign-out (one session
or everywhere), and an admin's read of another owner's task (the task, its progress or
its logs, over HTTP or a socket). ``raytasks token create|revoke`` record theirs from the
command line (:mod:`raytasks.tokens`). The table is append-only
(:class:`raytasks.store.access.AuditTable`); entries leave by age only.

An entry that cannot be written does not undo the action: the server log has it, with
the request id, as an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from starlette.requests import HTTPConnection

from ..store.access import AuditTable
from .auth import Principal

log = logging.getLogger("raytasks.server")


class AuditEntry(BaseModel):
    """One thing someone did: ``owner`` (with ``token_id``) did ``action`` to
    ``target`` (of ``target_owner``), from ``source``, in request ``request_id``."""

    id: int
    at: float
    owner: str
    token_id: str | None
    source: str | None
    request_id: str | None
    action: str
    target: str | None
    target_owner: str | None
    detail: str | None


class AuditPage(BaseModel):
    """Entries newest first; ``next_before`` fetches the older ones (null: no more)."""

    items: list[AuditEntry]
    next_before: int | None


def request_id(caller: HTTPConnection) -> str:
    """The request's id (the one its response carries); a socket gets one of its own."""
    state = caller.scope.setdefault("state", {})
    if "request_id" not in state:
        state["request_id"] = uuid.uuid4().hex
    return str(state["request_id"])


class AuditTrail:
    """Appends entries to the store's audit table, off the event loop."""

    def __init__(self, table: AuditTable, clock: Callable[[], float] = time.time) -> None:
        self.table, self.clock = table, clock

    async def record(self, caller: HTTPConnection, who: Principal, action: str,
                     targets: list[tuple[str | None, str | None]] | None = None,
                     detail: str | None = None) -> None:
        """One entry per ``(target, target owner)`` (one without a target when none)."""
        base: dict[str, Any] = {
            "at": self.clock(), "owner": who.owner, "token_id": who.token_id,
            "source": caller.client.host if caller.client else None,
            "request_id": request_id(caller), "action": action, "detail": detail}
        entries = [{**base, "target": target, "target_owner": owner}
                   for target, owner in (targets or [(None, None)])]
        try:
            await asyncio.to_thread(self.table.append, entries)
        except Exception:
            log.exception("request %s: the audit trail could not record %s by %s",
                          base["request_id"], action, who.owner)

    def page(self, limit: int, **filters: Any) -> AuditPage:
        rows = self.table.query(limit=limit, **filters)
        return AuditPage(items=[AuditEntry.model_validate(r) for r in rows],
                         next_before=rows[-1]["id"] if len(rows) == limit else None)
