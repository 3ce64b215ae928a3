"""``WS /ws``: the event stream, one owner's events per socket.

The client's first message, within :data:`AUTH_TIMEOUT_S` seconds, is the hello:
``{"token": "...", "after_id": 0, "task_ids": [...] or null, "filter": {"status":
[...], "task_type": [...]}}``. The dashboard may leave out ``token``: its session
cookie then authenticates the socket, if the page came from this server (the
``Origin`` check stops another site's page from riding the cookie). Every
message sent after is one event with its ``event_id``; reconnect with
``after_id`` set to the last one seen to resume.

Close codes: 1003 for a hello that is not JSON text, 1008 for a hello of the
wrong shape, a wrong token, or none in time; the reason says which.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..api import TaskNotificationService
from ..models import TaskStatus
from .auth import SESSION_COOKIE, Principal, Sessions, principal_for
from .edge import scrub, strict_json

AUTH_TIMEOUT_S = 5.0
_FINAL = ("COMPLETED", "FAILED", "CANCELLED")


class HelloFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: list[TaskStatus] | None = Field(default=None, max_length=10)
    task_type: list[str] | None = Field(default=None, max_length=100)


class Hello(BaseModel):
    """The first message a socket sends."""

    model_config = ConfigDict(extra="forbid")

    token: str | None = Field(default=None, max_length=1024)
    after_id: int | None = Field(default=None, ge=0, le=2**62)
    task_ids: list[str] | None = Field(default=None, max_length=10_000)
    filter: HelloFilter | None = None


async def _close(socket: WebSocket, code: int, reason: str) -> None:
    # a close reason is at most 123 bytes of UTF-8
    await socket.close(code=code, reason=reason.encode()[:123].decode(errors="ignore"))


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
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "hello"
            await _close(socket, 1008, f"invalid hello: {where}: {first['msg']}")
        else:
            await _close(socket, 1003, f"the hello is not JSON: {exc}")
        return None


def _same_origin(socket: WebSocket) -> bool:
    origin, host = socket.headers.get("origin"), socket.headers.get("host")
    return bool(origin and host and urlsplit(origin).netloc == host)


async def serve_socket(socket: WebSocket, notifier: TaskNotificationService,
                       tokens: list[Any], sessions: Sessions,
                       progress_interval_s: float) -> None:
    """Authenticate one socket from its hello, then stream the events it may see."""
    await socket.accept()
    hello = await _hello(socket)
    if hello is None:
        return
    who: Principal | None = None
    if hello.token is not None:
        who = principal_for(hello.token, tokens)
    elif _same_origin(socket):
        session = sessions.get(socket.cookies.get(SESSION_COOKIE))
        who = session.principal if session else None
    if who is None:
        await socket.send_json({"error": "Unauthorized", "message": "a valid token is required"})
        await _close(socket, 1008, "a valid token (or dashboard session) is required")
        return
    cursor = hello.after_id if hello.after_id is not None else await notifier.last_event_id()
    task_ids = set(hello.task_ids) if hello.task_ids else None
    wanted = hello.filter or HelloFilter()
    last_progress: dict[str, float] = {}
    finished: set[str] = set()  # progress is flushed in batches and can trail the end
    await socket.send_json({"subscribed": True, "after_id": cursor})
    try:
        while True:
            events = await notifier.events(cursor, timeout_s=1.0)
            for event in events:
                cursor = event.event_id
                data = event.model_dump(mode="json")
                if data["kind"] == "status" and data["status"] in _FINAL:
                    finished.add(data["task_id"])
                elif data["task_id"] in finished:
                    continue
                if not _wanted(data, who, task_ids, wanted, last_progress,
                               progress_interval_s):
                    continue
                if data.get("error"):  # the traceback stays in the store
                    data["error"] = {**data["error"], "traceback": None,
                                     "message": scrub(data["error"]["message"])}
                await socket.send_json(data)
            if not events:  # keep-alive, and notice a client that went away
                await socket.send_json({"heartbeat": cursor})
    except (WebSocketDisconnect, RuntimeError):
        return


def _wanted(data: dict[str, Any], who: Principal, task_ids: set[str] | None,
            wanted: HelloFilter, last_progress: dict[str, float], interval_s: float) -> bool:
    if task_ids is not None and data["task_id"] not in task_ids:
        return False
    if not who.may_see(data.get("owner")):
        return False
    if data["kind"] == "status":
        if wanted.status and data["status"] not in wanted.status:
            return False
        return not (wanted.task_type and data.get("task_type") not in wanted.task_type)
    now = time.monotonic()
    if data.get("percentage", 0) < 1 and now - last_progress.get(data["task_id"], -1e9) \
            < interval_s:
        return False
    last_progress[data["task_id"]] = now
    return True
