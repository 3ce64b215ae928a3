"""Task logs at the edge: a page of lines, a follow stream, and the cursor both use.

Lines are what a handler printed or logged (secrets already redacted by the executor),
so they can hold anything, markup included: they leave here as JSON strings and the
dashboard shows them as text. Reading is owner-scoped by the caller (another owner's
task is a 404), and a follow stream ends when the task has finished and every line is
sent, or after its ``timeout_s``, whichever comes first.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, field_validator

from ..api import TaskManager
from ..errors import QuotaExceededError, TaskNotFoundError
from ..models import TaskStatus

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from .auth import Principal
    from .common import Services

#: Lines read from the manager in one call.
PAGE_LINES = 1000
#: How often a follow stream asks for new lines while the task runs.
POLL_S = 0.5
#: A follow stream with nothing new says so this often (keeps proxies from closing it).
HEARTBEAT_S = 10.0
#: Tasks one WebSocket may follow the logs of at once.
MAX_LOG_TASKS = 20


class LogLine(BaseModel):
    """One line of a task's log: ``stream`` is ``stdout``, ``stderr``, a logging level or
    ``raytasks`` (the framework's own lines about the attempt)."""

    id: int
    attempt: int
    at: float
    stream: str
    line: str

    @field_validator("stream", "line")
    @classmethod
    def _encodable(cls, value: str) -> str:
        # a lone surrogate a handler printed cannot be sent as UTF-8: shown replaced
        return value.encode("utf-8", "replace").decode("utf-8")


class LogPage(BaseModel):
    """Lines after ``after``; ``next_after`` continues. ``complete``: the task has
    finished and no line follows this page."""

    task_id: str
    status: TaskStatus
    lines: list[LogLine]
    next_after: int
    complete: bool


class StreamEnd(BaseModel):
    """The last line of a follow stream: why it ended and where to continue."""

    end: Literal["finished", "timeout", "gone"]
    status: TaskStatus | None
    next_after: int


class LogCursor:
    """One task's log, read so far up to ``after`` (of one attempt, or all)."""

    def __init__(self, tm: TaskManager, task_id: str, attempt: int | None = None,
                 after: int = 0) -> None:
        self.tm, self.task_id, self.attempt, self.after = tm, task_id, attempt, after
        self.status: TaskStatus | None = None
        self.done = False

    async def poll(self, limit: int = PAGE_LINES) -> list[dict[str, Any]]:
        """The next lines; sets ``done`` once the task has finished and all are read.

        Raises:
            TaskNotFoundError: the task is gone (deleted or pruned).
        """
        # the status first: lines are written before the attempt reports, so a task seen
        # finished here has every line in the store by the read below
        self.status, rows = await self.tm.log_page(self.task_id, self.attempt, self.after,
                                                   limit)
        if rows:
            self.after = int(rows[-1]["id"])
        self.done = self.status.finished and len(rows) < limit
        return rows


async def page(tm: TaskManager, task_id: str, attempt: int | None, after: int,
               limit: int) -> LogPage:
    cursor = LogCursor(tm, task_id, attempt, after)
    rows = await cursor.poll(limit)
    assert cursor.status is not None
    return LogPage(task_id=task_id, status=cursor.status,
                   lines=[LogLine.model_validate(r) for r in rows],
                   next_after=cursor.after, complete=cursor.done)


async def follow(cursor: LogCursor, timeout_s: float) -> AsyncIterator[bytes]:
    """NDJSON: every line as it comes, then one :class:`StreamEnd`."""
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    while True:
        try:
            rows = await cursor.poll()
        except TaskNotFoundError:
            yield _ndjson(StreamEnd(end="gone", status=None, next_after=cursor.after))
            return
        for row in rows:
            yield _ndjson(LogLine.model_validate(row))
        if cursor.done or time.monotonic() >= deadline:
            yield _ndjson(StreamEnd(end="finished" if cursor.done else "timeout",
                                    status=cursor.status, next_after=cursor.after))
            return
        if rows:
            quiet_since = time.monotonic()
            continue
        if time.monotonic() - quiet_since >= HEARTBEAT_S:
            quiet_since = time.monotonic()
            yield (json.dumps({"heartbeat": cursor.after}) + "\n").encode()
        await asyncio.sleep(POLL_S)


def _ndjson(model: BaseModel) -> bytes:
    return (model.model_dump_json() + "\n").encode()


class SocketLogs:
    """The log lines one WebSocket follows: the caller's own tasks only, one live reader
    of the owner's while it follows any."""

    def __init__(self, svc: Services, who: Principal, socket: HTTPConnection) -> None:
        self.svc, self.who, self.socket = svc, who, socket
        self.cursors: dict[str, LogCursor] = {}
        self._release: Callable[[], None] | None = None

    async def follow(self, change: Any) -> list[dict[str, Any]]:
        """Follow ``change.logs`` (from ``change.logs_after``) instead of what came before;
        returns a ``log_error`` message for each id that is not the caller's task."""
        after: dict[str, int] = change.logs_after or {}
        messages, cursors = [], {}
        for task_id in dict.fromkeys(change.logs):
            try:
                await self.svc.read_task(self.socket, task_id, self.who)
            except TaskNotFoundError as exc:  # another owner's: the same as a random id
                messages.append(_error(task_id, exc))
                continue
            kept = self.cursors.get(task_id)
            cursors[task_id] = kept if kept is not None and task_id not in after else \
                LogCursor(self.svc.tm, task_id, None, after.get(task_id, 0))
        self.cursors = cursors
        if not cursors:
            self.close()
        elif self._release is None:
            try:
                self._release = self.svc.live.acquire(self.who.owner)
            except QuotaExceededError as exc:
                self.cursors = {}
                messages.append({**_error(None, exc), "limit": "live_log_readers"})
        return messages

    async def poll(self) -> list[dict[str, Any]]:
        """New lines of every task followed, and ``log_end`` for each that is done."""
        out: list[dict[str, Any]] = []
        for task_id, cursor in list(self.cursors.items()):
            try:
                rows = await cursor.poll()
            except TaskNotFoundError as exc:  # deleted while followed
                out.append(_error(task_id, exc))
                del self.cursors[task_id]
                continue
            out += [{"kind": "log", "task_id": task_id,
                     **LogLine.model_validate(r).model_dump()} for r in rows]
            if cursor.done:
                assert cursor.status is not None
                out.append({"kind": "log_end", "task_id": task_id,
                            "status": cursor.status.value, "next_after": cursor.after})
                del self.cursors[task_id]
        if not self.cursors:
            self.close()
        return out

    def close(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None


def _error(task_id: str | None, exc: Exception) -> dict[str, Any]:
    return {"kind": "log_error", "task_id": task_id, "error": type(exc).__name__,
            "message": str(exc)}
