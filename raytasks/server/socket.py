"""``WS /ws``: the event stream, one owner's events per socket, and log lines on request.

The client's first message, within :data:`AUTH_TIMEOUT_S` seconds, is the hello:
``{"token": "...", "after_id": 0, "task_ids": [...] or null, "filter": {"status":
[...], "task_type": [...]}, "logs": [task ids], "logs_after": {task id: line id}}``.
The dashboard may leave out ``token``: its session cookie then authenticates the
socket, if the page came from this server (the ``Origin`` check stops another site's
page from riding the cookie). Every event sent after carries its ``event_id``;
reconnect with ``after_id`` set to the last one seen to resume.

Log lines of the tasks named in ``logs`` (at most :data:`MAX_LOG_TASKS`, each the
caller's own) come as their own kind, ``{"kind": "log", "task_id", "id", "attempt",
"at", "stream", "line"}``, then ``{"kind": "log_end", "task_id", "status"}`` once the
task has finished and every line is sent. An unknown id, or another owner's, is
``{"kind": "log_error", "task_id", "error": "TaskNotFoundError", ...}``. Later messages
``{"logs": [...], "logs_after": {...}}`` replace the set of tasks followed.

The socket needs a token (or session) with the ``read`` scope, and keeps it: the token
is looked up again every :data:`RECHECK_S` seconds while the socket streams, and a
revoked token or an ended session closes it (1008).

Every :data:`ETA_S` seconds, while the caller has active tasks (those of its task ids
and filter), an ``{"kind": "eta", "tasks": [{"task_id", "status", "predicted_start",
"predicted_finish"}]}`` message carries their predicted start and finish (ISO times, or
null where they cannot be told), as ``GET /tasks`` rows do.

Close codes: 1003 for a message that is not JSON text, 1008 for one of the wrong
shape, a wrong token, a token without the read scope, a revoked token or ended session,
or no hello in time; the reason says which.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from ..models import TaskQuery, TaskStatus
from .auth import READ, SESSION_COOKIE, Principal, hash_token, principal_by_digest, principal_for
from .common import Services, TooManyWrongTokens, Unauthorized
from .edge import scrub, strict_json
from .logs import MAX_LOG_TASKS, SocketLogs

AUTH_TIMEOUT_S = 5.0
#: How often a socket is sent the ETAs of its owner's active tasks.
ETA_S = 2.0
#: Active tasks whose ETAs one message carries at most (the latest created).
ETA_TASKS = 500
#: How often a streaming socket checks that its token (and session) still hold.
RECHECK_S = 0.5
#: Tasks whose last progress one socket remembers before it forgets stale entries.
MAX_TRACKED = 10_000
_FINAL = ("COMPLETED", "FAILED", "CANCELLED")
_Id = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class HelloFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: list[TaskStatus] | None = Field(default=None, max_length=10)
    task_type: list[str] | None = Field(default=None, max_length=100)


class Follow(BaseModel):
    """Which tasks' log lines the socket follows (the caller's own; at most
    :data:`MAX_LOG_TASKS`), each from after its ``logs_after`` line id."""

    model_config = ConfigDict(extra="forbid")

    logs: list[_Id] = Field(max_length=MAX_LOG_TASKS)
    logs_after: dict[_Id, Annotated[int, Field(ge=0, le=2**62)]] | None = \
        Field(default=None, max_length=MAX_LOG_TASKS)


class Hello(BaseModel):
    """The first message a socket sends."""

    model_config = ConfigDict(extra="forbid")

    token: str | None = Field(default=None, max_length=1024)
    after_id: int | None = Field(default=None, ge=0, le=2**62)
    task_ids: list[str] | None = Field(default=None, max_length=10_000)
    filter: HelloFilter | None = None
    logs: list[_Id] | None = Field(default=None, max_length=MAX_LOG_TASKS)
    logs_after: dict[_Id, Annotated[int, Field(ge=0, le=2**62)]] | None = \
        Field(default=None, max_length=MAX_LOG_TASKS)


async def _close(socket: WebSocket, code: int, reason: str) -> None:
    # a close reason is at most 123 bytes of UTF-8
    await socket.close(code=code, reason=reason.encode()[:123].decode(errors="ignore"))


def _invalid(exc: ValueError, what: str) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or what
        return f"invalid {what}: {where}: {first['msg']}"
    return f"the {what} is not JSON: {exc}"


async def _hello(socket: WebSocket) -> Hello | None:
    """The validated hello, or None after closing the socket with the reason."""
    try:
        message = await asyncio.wait_for(socket.receive(), AUTH_TIMEOUT_S)
    except TimeoutError:
        await _close(socket, 1008, f"no hello within {AUTH_TIMEOUT_S:g} s")
        return None
    if message["type"] == "websocket.disconnect":
        return None
    if message.get("text") is None:
        await _close(socket, 1003, "the hello must be a JSON text message")
        return None
    try:
        return Hello.model_validate(strict_json(message["text"].encode("utf-8", "replace")))
    except ValueError as exc:
        await _close(socket, 1008 if isinstance(exc, ValidationError) else 1003,
                     _invalid(exc, "hello"))
        return None


def _same_origin(socket: WebSocket) -> bool:
    origin, host = socket.headers.get("origin"), socket.headers.get("host")
    return bool(origin and host and urlsplit(origin).netloc == host)


@dataclass
class Standing:
    """How a socket authenticated, checked again while it streams: its token must still
    be accepted, and the session it came with (if any) still live."""

    svc: Services
    token_sha256: str | None
    cookie: str | None
    checked_at: float = 0.0

    async def holds(self) -> bool:
        now = time.monotonic()
        if now - self.checked_at < RECHECK_S:
            return True
        self.checked_at = now
        if self.cookie is not None:
            found = await asyncio.to_thread(self.svc.sessions.find, self.cookie,
                                            self.svc.tokens())
            return found is not None
        return self.token_sha256 is not None and \
            principal_by_digest(self.token_sha256, self.svc.tokens()) is not None


async def _authenticate(socket: WebSocket, svc: Services,
                        hello: Hello) -> tuple[Principal, Standing] | None:
    """The socket's caller from its hello's token (or its session cookie), or None after
    closing it with the reason."""
    who: Principal | None = None
    standing = Standing(svc, None, None)
    if hello.token is not None:
        token = hello.token
        try:
            who = svc.vet(socket, lambda: principal_for(token, svc.tokens()))
        except TooManyWrongTokens as exc:
            await svc.slow_down(exc.delay_s)
            await socket.send_json({"error": "TooManyWrongTokens", "message": str(exc)})
            await _close(socket, 1008, "too many wrong tokens from this address")
            return None
        except Unauthorized:
            who = None
        standing = Standing(svc, hash_token(token), None)
    elif _same_origin(socket):
        cookie = socket.cookies.get(SESSION_COOKIE)
        session = await asyncio.to_thread(svc.sessions.find, cookie, svc.tokens())
        who = session.principal if session else None
        standing = Standing(svc, None, cookie)
    if who is None:
        await socket.send_json({"error": "Unauthorized", "message": "a valid token is required"})
        await _close(socket, 1008, "a valid token (or dashboard session) is required")
        return None
    if READ not in who.granted:
        await socket.send_json({"error": "MissingScope", "message": "the event stream needs "
                                "a token with the read scope"})
        await _close(socket, 1008, "the token lacks the read scope")
        return None
    standing.checked_at = time.monotonic()
    return who, standing


async def serve_socket(socket: WebSocket, svc: Services) -> None:
    """Authenticate one socket from its hello, then stream the events (and log lines) it
    may see until the client goes away, or its token or session ends."""
    await socket.accept()
    hello = await _hello(socket)
    if hello is None:
        return
    found = await _authenticate(socket, svc, hello)
    if found is None:
        return
    who, standing = found
    cursor = hello.after_id if hello.after_id is not None else await svc.notifier.last_event_id()
    stream = EventStream(who, set(hello.task_ids) if hello.task_ids else None,
                         hello.filter or HelloFilter(),
                         svc.settings.notify.ws_progress_interval_s)
    logs = SocketLogs(svc, who, socket)
    await socket.send_json({"subscribed": True, "after_id": cursor})
    changes: asyncio.Queue[Follow] = asyncio.Queue()
    if hello.logs is not None:
        changes.put_nowait(Follow(logs=hello.logs, logs_after=hello.logs_after))
    reader = asyncio.create_task(_read_changes(socket, changes))
    eta_at = 0.0
    try:
        while not reader.done():
            if time.monotonic() - eta_at >= ETA_S:
                eta_at = time.monotonic()
                etas = await _etas(svc, who, stream)
                if etas:
                    await socket.send_json({"kind": "eta", "tasks": etas})
            while not changes.empty():
                for message in await logs.follow(changes.get_nowait()):
                    await socket.send_json(message)
            events = await svc.notifier.events(cursor, timeout_s=1.0)
            for event in events:
                cursor = event.event_id
                data = stream.visible(event.model_dump(mode="json"))
                if data is not None:
                    await socket.send_json(data)
            for message in await logs.poll():
                await socket.send_json(message)
            if not events:  # keep-alive, and notice a client that went away
                await socket.send_json({"heartbeat": cursor})
            if not await standing.holds():
                await _close(socket, 1008, "the token was revoked or the session ended")
                return
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        reader.cancel()
        logs.close()


async def _etas(svc: Services, who: Principal, stream: EventStream) -> list[dict[str, Any]]:
    """The predicted start and finish of the socket's active tasks (its owner's: an
    admin's, everyone's), within its task ids and filter."""
    page = await svc.tm.list_tasks(TaskQuery(
        status=[TaskStatus.PENDING, TaskStatus.RUNNING], owner=None if who.admin else who.owner,
        task_type=stream.wanted.task_type, limit=ETA_TASKS))
    return [{"task_id": t.id, "status": t.status.value,
             "predicted_start": t.predicted_start.isoformat() if t.predicted_start else None,
             "predicted_finish": t.predicted_finish.isoformat() if t.predicted_finish
             else None}
            for t in page.items
            if (stream.task_ids is None or t.id in stream.task_ids)
            and (not stream.wanted.status or t.status in stream.wanted.status)]


async def _read_changes(socket: WebSocket, changes: asyncio.Queue[Follow]) -> None:
    """Messages after the hello: ``{"logs": [...], "logs_after": {...}}`` changes which
    tasks' logs the socket follows; anything else closes it with the reason."""
    while True:
        try:
            message = await socket.receive()
        except (WebSocketDisconnect, RuntimeError):  # closed under us: nothing to read
            return
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            await _close(socket, 1003, "messages must be JSON text")
            return
        try:
            changes.put_nowait(Follow.model_validate(strict_json(text.encode("utf-8",
                                                                             "replace"))))
        except ValueError as exc:
            reason = _invalid(exc, "message")
            await _close(socket, 1008 if isinstance(exc, ValidationError) else 1003, reason)
            return


class EventStream:
    """Which events one socket is sent: the owner's (an admin's: all), of its task ids,
    matching its filter, with progress at most every ``interval_s`` per task."""

    def __init__(self, who: Principal, task_ids: set[str] | None, wanted: HelloFilter,
                 interval_s: float, clock: Any = time.monotonic) -> None:
        self.who, self.task_ids, self.wanted = who, task_ids, wanted
        self.interval_s, self.clock = interval_s, clock
        # the last progress sent per task: bounded, a task's entry goes when it finishes
        # (no progress follows a final status) and any entry older than the interval
        # (it no longer holds anything back) when the map grows past MAX_TRACKED
        self.last_progress: dict[str, float] = {}

    def visible(self, data: dict[str, Any]) -> dict[str, Any] | None:
        """The event as sent to this socket, or None when it is not for it."""
        task_id = data["task_id"]
        if data["kind"] == "status" and data["status"] in _FINAL:
            self.last_progress.pop(task_id, None)
        if self.task_ids is not None and task_id not in self.task_ids:
            return None
        if not self.who.may_see(data.get("owner")):
            return None
        if data["kind"] == "status":
            if self.wanted.status and data["status"] not in self.wanted.status:
                return None
            if self.wanted.task_type and data.get("task_type") not in self.wanted.task_type:
                return None
        elif not self._progress_due(task_id, data.get("percentage", 0)):
            return None
        if data.get("error"):  # the traceback stays in the store
            data["error"] = {**data["error"], "traceback": None,
                             "message": scrub(data["error"]["message"])}
        return data

    def _progress_due(self, task_id: str, percentage: float) -> bool:
        now = self.clock()
        if percentage < 1 and now - self.last_progress.get(task_id, -1e18) < self.interval_s:
            return False
        if len(self.last_progress) >= MAX_TRACKED and task_id not in self.last_progress:
            self.last_progress = {k: t for k, t in self.last_progress.items()
                                  if now - t < self.interval_s}
        if len(self.last_progress) < MAX_TRACKED or task_id in self.last_progress:
            self.last_progress[task_id] = now  # (else unthrottled: bounded beats throttled)
        return True
