"""The HTTP face of raytasks: REST, WebSocket, metrics and the dashboard (``raytasks serve``).

Thin: every route calls a client facade. Errors are JSON ``{"error", "message",
...}`` with 401 (no or bad token), 404 (unknown, or another owner's task),
409 (illegal transition), 413 (body too large), 422 (bad JSON or invalid
parameters, the field named) and 429 (queue full).
"""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from ..api import ProgressTracker, TaskExecutionEngine, TaskManager, TaskNotificationService
from ..errors import (
    InvalidParametersError,
    InvalidTransitionError,
    PayloadTooLargeError,
    QueueFullError,
    QuotaExceededError,
    RaytasksError,
    TaskNotFoundError,
    UnknownTaskTypeError,
    WaitTimeoutError,
)
from ..metrics import queue_metrics_text
from ..models import (
    Task,
    TaskCreateRequest,
    TaskPriority,
    TaskProgress,
    TaskQuery,
    TaskStatus,
    TaskUpdateRequest,
)
from ..runtime import Runtime
from .auth import Principal, authenticate, principal_for

_STATUS = [
    (TaskNotFoundError, 404), (InvalidTransitionError, 409), (PayloadTooLargeError, 413),
    (InvalidParametersError, 422), (UnknownTaskTypeError, 422), (QueueFullError, 429),
    (QuotaExceededError, 429),
    (WaitTimeoutError, 504),
]


def _error(status: int, kind: str, message: str, **data: Any) -> JSONResponse:
    return JSONResponse({"error": kind, "message": message, **data}, status_code=status)


class _BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes, declared or streamed."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and int(declared) > self.limit:
            response = _error(413, "PayloadTooLargeError",
                              f"request body over the limit of {self.limit} bytes")
            return await response(scope, receive, send)
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise PayloadTooLargeError("request body", seen, self.limit)
            return message

        return await self.app(scope, limited, send)


class _Unauthorized(Exception):
    pass


def principal(request: Request) -> Principal:
    """The caller, from its bearer token; 401 without a valid one."""
    found = authenticate(request.headers.get("authorization"), request.app.state.tokens)
    if found is None:
        raise _Unauthorized()
    return found


Auth = Annotated[Principal, Depends(principal)]


def create_app(runtime: Runtime) -> FastAPI:
    settings = runtime.settings
    tm, tracker = TaskManager(runtime), ProgressTracker(runtime)
    notifier, engine = TaskNotificationService(runtime), TaskExecutionEngine(runtime)
    # the OpenAPI document is served below, behind the token like everything but /health
    app = FastAPI(title="raytasks", version="0.1.0", openapi_url=None, docs_url=None,
                  redoc_url=None, description="Durable, prioritised task management on Ray")
    app.state.tokens = settings.api.tokens
    app.add_middleware(_BodyLimit, limit=settings.api.max_body_bytes)

    @app.exception_handler(RaytasksError)
    async def _raytasks_error(_: Request, exc: RaytasksError) -> JSONResponse:
        status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 400)
        return _error(status, type(exc).__name__, str(exc),
                      **json.loads(json.dumps(exc.data, default=str)))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]}
                  for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return _error(422, "InvalidParametersError", f"invalid request: {detail}",
                      errors=errors)

    @app.exception_handler(_Unauthorized)
    async def _unauthorized(_: Request, __: Exception) -> JSONResponse:
        response = _error(401, "Unauthorized", "a valid bearer token is required")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    async def own_task(task_id: str, who: Principal) -> Task:
        task = await tm.get_task(task_id)
        if not who.may_see(task.owner):
            raise TaskNotFoundError(task_id)  # another owner's task does not exist for you
        return task

    def stamped(request: TaskCreateRequest, who: Principal) -> TaskCreateRequest:
        if who.admin and request.owner:
            return request
        return request.model_copy(update={"owner": who.owner})

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(who: Auth) -> Any:
        return app.openapi()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/tasks", status_code=201)
    async def create(request: TaskCreateRequest, who: Auth) -> Task:
        return await tm.submit(stamped(request, who))

    @app.post("/tasks/batch", status_code=201)
    async def create_batch(requests: list[TaskCreateRequest], who: Auth) -> list[Task]:
        return await tm.submit_many([stamped(r, who) for r in requests])

    @app.get("/tasks")
    async def list_tasks(
        who: Auth,
        status: Annotated[list[TaskStatus] | None, Query()] = None,
        task_type: Annotated[list[str] | None, Query()] = None,
        priority: Annotated[list[TaskPriority] | None, Query()] = None,
        queue: str | None = None, owner: str | None = None,
        tags: Annotated[list[str] | None, Query()] = None, text: str | None = None,
        offset: int = 0, limit: int = 100, order_by: str = "-created_at",
    ) -> Any:
        query = TaskQuery.model_validate({
            "status": status, "task_type": task_type, "priority": priority, "queue": queue,
            "owner": owner if who.admin else who.owner, "tags": tags, "text": text,
            "offset": offset, "limit": limit, "order_by": order_by})
        return (await tm.list_tasks(query)).model_dump(mode="json")

    @app.get("/tasks/{task_id}")
    async def get(task_id: str, who: Auth) -> Task:
        return await own_task(task_id, who)

    @app.patch("/tasks/{task_id}")
    async def update(task_id: str, request: TaskUpdateRequest, who: Auth) -> Task:
        await own_task(task_id, who)
        return await tm.update_task(task_id, request)

    @app.post("/tasks/{task_id}/cancel")
    async def cancel(task_id: str, who: Auth) -> Task:
        await own_task(task_id, who)
        return await tm.cancel_task(task_id)

    @app.post("/tasks/{task_id}/retry")
    async def retry(task_id: str, who: Auth) -> Task:
        await own_task(task_id, who)
        return await tm.retry_task(task_id)

    @app.delete("/tasks/{task_id}", status_code=204)
    async def delete(task_id: str, who: Auth) -> Response:
        await own_task(task_id, who)
        await tm.delete_task(task_id)
        return Response(status_code=204)

    @app.get("/tasks/{task_id}/progress")
    async def progress(task_id: str, who: Auth) -> TaskProgress:
        await own_task(task_id, who)
        return await tracker.get_progress(task_id)

    @app.get("/stats/queues")
    async def queue_stats(who: Auth) -> Any:
        return (await tm.stats())["queues"]

    @app.get("/stats/executors")
    async def executor_stats(who: Auth) -> Any:
        return await asyncio.to_thread(engine.executors_sync)

    @app.get("/task-types")
    async def task_types(who: Auth) -> Any:
        return [t.model_dump() for t in await asyncio.to_thread(tm.task_types_sync)]

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(who: Auth) -> str:
        return await notifier.metrics_text() + queue_metrics_text(await tm.stats())

    @app.get("/", response_class=HTMLResponse)
    async def dashboard() -> str:
        return resources.files("raytasks.server").joinpath("dashboard.html").read_text()

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await _serve_socket(socket, notifier, settings.api.tokens,
                            settings.notify.ws_progress_interval_s)

    return app


async def _serve_socket(socket: WebSocket, notifier: TaskNotificationService,
                        tokens: list[Any], progress_interval_s: float) -> None:
    """Stream events to one WebSocket client.

    The client's first message: ``{"token": "...", "after_id": 0, "task_ids": [...] or
    null, "filter": {"status": [...], "task_type": [...]}}`` (``token`` may instead
    come as the ``token`` query parameter). Every message sent is one event with its
    ``event_id``; reconnect with ``after_id`` set to the last one seen to resume.
    """
    await socket.accept()
    try:
        hello = json.loads(await socket.receive_text())
    except (WebSocketDisconnect, json.JSONDecodeError):
        await socket.close(code=1003)
        return
    token = hello.get("token") or socket.query_params.get("token") or ""
    who = principal_for(token, tokens)
    if who is None:
        await socket.send_json({"error": "Unauthorized", "message": "a valid token is required"})
        await socket.close(code=1008)
        return
    after = hello.get("after_id")
    cursor = int(after) if after is not None else await notifier.last_event_id()
    task_ids = set(hello["task_ids"]) if hello.get("task_ids") else None
    wanted = hello.get("filter") or {}
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
                await socket.send_json(data)
            if not events:  # keep-alive, and notice a client that went away
                await socket.send_json({"heartbeat": cursor})
    except (WebSocketDisconnect, RuntimeError):
        return


_FINAL = ("COMPLETED", "FAILED", "CANCELLED")


def _wanted(data: dict[str, Any], who: Principal, task_ids: set[str] | None,
            wanted: dict[str, Any], last_progress: dict[str, float], interval_s: float) -> bool:
    if task_ids is not None and data["task_id"] not in task_ids:
        return False
    if not who.may_see(data.get("owner")):
        return False
    if data["kind"] == "status":
        if wanted.get("status") and data["status"] not in wanted["status"]:
            return False
        return not (wanted.get("task_type") and data.get("task_type") not in wanted["task_type"])
    now = time.monotonic()
    if data.get("percentage", 0) < 1 and now - last_progress.get(data["task_id"], -1e9) \
            < interval_s:
        return False
    last_progress[data["task_id"]] = now
    return True
