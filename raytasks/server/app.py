"""The HTTP face of raytasks: REST, WebSocket, metrics and the dashboard (``raytasks serve``).

Thin: every route calls a client facade. Routes live by resource: ``routes_tasks``
(tasks and their logs), ``routes_schedules``, ``pages`` (dashboard, static files,
interactive docs); sessions, stats, metrics and the WebSocket are here. Everything
that arrives is untrusted (see README "Security"): bodies are parsed strictly
(:mod:`.edge`), requests are checked against the operator's named resources and notify
allow-list before they reach the manager, another owner's task is a 404 like a
random id, and responses never carry a traceback or a server path.

Errors are JSON ``{"error", "message", "errors": [{"field", "reason"}], ...}``:
401 (no or bad token), 403 (a cookie request without its CSRF token), 404
(unknown, or another owner's task), 409 (illegal transition), 413 (body too
large), 422 (bad JSON, query or parameters, the field named), 429 (queue full
or an owner's quota), 500/503 (with the ``request_id`` the server log has).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from ..api import ProgressTracker, TaskExecutionEngine, TaskManager, TaskNotificationService
from ..errors import (
    InvalidParametersError,
    InvalidTransitionError,
    NotConnectedError,
    PayloadTooLargeError,
    QueueFullError,
    QuotaExceededError,
    RaytasksError,
    StoreError,
    TaskError,
    TaskNotFoundError,
    UnknownTaskTypeError,
    WaitTimeoutError,
)
from ..metrics import queue_metrics_text
from ..models import QueueStats
from ..runtime import Runtime
from . import pages, routes_schedules, routes_tasks
from .auth import CSRF_HEADER, SESSION_COOKIE, SESSION_TTL_S, principal_for
from .common import Auth, CsrfRefused, Services, TooManyWrongTokens, Unauthorized
from .edge import Edge, ErrorBody, error, scrub
from .socket import serve_socket

log = logging.getLogger("raytasks.server")

_STATUS = [
    (TaskNotFoundError, 404), (InvalidTransitionError, 409), (PayloadTooLargeError, 413),
    (InvalidParametersError, 422), (UnknownTaskTypeError, 422), (QueueFullError, 429),
    (QuotaExceededError, 429), (WaitTimeoutError, 504), (NotConnectedError, 503),
    (StoreError, 503), (TaskError, 400),
]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 413, 422, 429, 500)}
_PUBLIC_EXECUTOR_FIELDS = ("executor_id", "task_type", "held", "completed", "error")


class Login(BaseModel):
    token: str = Field(min_length=1, max_length=1024)


class SessionInfo(BaseModel):
    owner: str
    role: str
    csrf: str = Field(description=f"send it back as {CSRF_HEADER} on every change")


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    """A field named the way the manager names it: ``priority``, ``requests[2].notify``,
    ``parameters.days``; query parameters keep their ``query.`` prefix."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
        if parts and isinstance(parts[0], int):
            parts[0] = f"requests[{parts[0]}]"
    return ".".join(str(p) for p in parts) or "body"


def create_app(runtime: Runtime) -> FastAPI:
    settings = runtime.settings
    svc = Services(settings, TaskManager(runtime), ProgressTracker(runtime),
                   TaskNotificationService(runtime), TaskExecutionEngine(runtime))
    tm, notifier, sessions = svc.tm, svc.notifier, svc.sessions
    # the OpenAPI document is served below, behind the token like everything but /health
    app = FastAPI(title="raytasks", version="0.1.0", openapi_url=None, docs_url=None,
                  redoc_url=None, description="Durable, prioritised task management on Ray",
                  responses=_ERRORS)
    app.state.services = svc
    app.add_middleware(Edge, max_body_bytes=settings.api.max_body_bytes)

    @app.exception_handler(RaytasksError)
    async def _raytasks_error(request: Request, exc: RaytasksError) -> JSONResponse:
        status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
        if status >= 500:  # the server's fault: the log keeps the details, under the id
            request_id = request.scope.get("state", {}).get("request_id")
            log.error("request %s failed: %s", request_id, exc, exc_info=exc)
            return error(status, type(exc).__name__, "the service is not available; quote "
                         f"request id {request_id} to the operator", request_id=request_id)
        data: dict[str, Any] = {k: v for k, v in exc.data.items()
                                if isinstance(v, str | int | float | list)}
        if "errors" in data:
            data["errors"] = [{"field": str(e["field"]), "reason": scrub(str(e["reason"]))}
                              for e in data["errors"]]
        return error(status, type(exc).__name__, scrub(str(exc)),
                     **{k: v for k, v in data.items() if k != "task_ids"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(e["loc"]), "reason": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return error(422, "InvalidParametersError", f"invalid request: {detail}",
                     errors=errors)

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_: Request, __: Exception) -> JSONResponse:
        response = error(401, "Unauthorized", "a valid bearer token is required")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(TooManyWrongTokens)
    async def _too_many_wrong(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TooManyWrongTokens)
        response = error(429, "TooManyWrongTokens", str(exc))
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        return response

    @app.exception_handler(CsrfRefused)
    async def _csrf(_: Request, __: Exception) -> JSONResponse:
        return error(403, "CsrfError", f"a request with the session cookie must send the "
                     f"session's {CSRF_HEADER} header")

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(who: Auth) -> Any:
        return app.openapi()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/session")
    async def login(body: Login, request: Request, response: Response) -> SessionInfo:
        """Log a dashboard in: an HttpOnly session cookie and the session's CSRF token."""
        origin = request.headers.get("origin")
        if origin and origin.split("://", 1)[-1] != request.headers.get("host"):
            raise CsrfRefused()
        who = svc.vet(request, lambda: principal_for(body.token, svc.tokens()))
        session_id, session = sessions.open(who)
        response.set_cookie(SESSION_COOKIE, session_id, max_age=int(SESSION_TTL_S),
                            httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")
        return SessionInfo(owner=who.owner, role=who.role, csrf=session.csrf)

    @app.get("/session")
    async def current_session(request: Request) -> SessionInfo:
        session = sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise Unauthorized()
        return SessionInfo(owner=session.principal.owner, role=session.principal.role,
                           csrf=session.csrf)

    @app.delete("/session", status_code=204)
    async def logout(request: Request, who: Auth) -> Response:
        sessions.close(request.cookies.get(SESSION_COOKIE))
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/stats/queues")
    async def queue_stats(who: Auth) -> Any:
        # aggregates only: whatever else the manager reports per queue stays inside
        return [{k: q[k] for k in QueueStats.model_fields if k in q}
                for q in (await tm.stats())["queues"]]

    @app.get("/stats/executors")
    async def executor_stats(who: Auth) -> Any:
        rows = await asyncio.to_thread(svc.engine.executors_sync)
        if who.admin:
            return rows
        visible = set()
        for task_id in {r["current"] for r in rows if r.get("current")}:
            try:
                visible.add((await svc.own_task(task_id, who)).id)
            except TaskNotFoundError:
                continue
        return [{**{k: r[k] for k in _PUBLIC_EXECUTOR_FIELDS if k in r},
                 "current": r.get("current") if r.get("current") in visible
                 else ("hidden" if r.get("current") else None)} for r in rows]

    @app.get("/task-types")
    async def task_types(who: Auth) -> Any:
        return [t.model_dump() for t in await asyncio.to_thread(tm.task_types_sync)]

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(who: Auth) -> str:
        return await notifier.metrics_text() + queue_metrics_text(await tm.stats())

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await serve_socket(socket, svc)

    for module in (routes_tasks, routes_schedules, pages):
        app.include_router(module.router)
    return app
