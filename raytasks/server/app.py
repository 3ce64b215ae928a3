"""The HTTP face of raytasks: REST, WebSocket, metrics and the dashboard (``raytasks serve``).

Thin: every route calls a client facade. Everything that arrives here is
untrusted (see README "Security"): bodies are parsed strictly (:mod:`.edge`),
requests are checked against the operator's named resources and notify
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
from importlib import resources as package
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Path, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field, ValidationError

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
from ..inputs import check_tags
from ..metrics import queue_metrics_text
from ..models import (
    OrderField,
    QueueStats,
    Task,
    TaskCreateRequest,
    TaskPriority,
    TaskProgress,
    TaskQuery,
    TaskStatus,
    TaskUpdateRequest,
)
from ..runtime import Runtime
from .auth import (
    CSRF_HEADER,
    SESSION_COOKIE,
    SESSION_TTL_S,
    Principal,
    Sessions,
    authenticate,
    principal_for,
)
from .edge import Edge, ErrorBody, error, scrub
from .socket import serve_socket
from .vetting import vet_create, vet_notify

log = logging.getLogger("raytasks.server")

_STATUS = [
    (TaskNotFoundError, 404), (InvalidTransitionError, 409), (PayloadTooLargeError, 413),
    (InvalidParametersError, 422), (UnknownTaskTypeError, 422), (QueueFullError, 429),
    (QuotaExceededError, 429), (WaitTimeoutError, 504), (NotConnectedError, 503),
    (StoreError, 503), (TaskError, 400),
]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 413, 422, 429, 500)}
DASHBOARD_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                 "connect-src 'self'; base-uri 'none'; form-action 'self'; "
                 "frame-ancestors 'none'")
_STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
_PUBLIC_EXECUTOR_FIELDS = ("executor_id", "task_type", "held", "completed", "error")


class _Unauthorized(Exception):
    pass


class _CsrfRefused(Exception):
    pass


def principal(request: Request) -> Principal:
    """The caller: a bearer token, or a dashboard session (with its CSRF token when the
    request changes something); 401/403 otherwise."""
    header = request.headers.get("authorization")
    if header:
        found = authenticate(header, request.app.state.tokens)
        if found is None:
            raise _Unauthorized()
        return found
    session = request.app.state.sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise _Unauthorized()
    if request.method not in ("GET", "HEAD", "OPTIONS") and \
            not session.csrf_ok(request.headers.get(CSRF_HEADER)):
        raise _CsrfRefused()
    return session.principal


Auth = Annotated[Principal, Depends(principal)]
TaskId = Annotated[str, Path(min_length=1, max_length=200)]


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


def public(task: Task) -> Task:
    """A task as a client may see it: no traceback, no server paths in its error."""
    if task.error is None:
        return task
    return task.model_copy(update={"error": task.error.model_copy(update={
        "traceback": None, "message": scrub(task.error.message)})})


def create_app(runtime: Runtime) -> FastAPI:
    settings = runtime.settings
    tm, tracker = TaskManager(runtime), ProgressTracker(runtime)
    notifier, engine = TaskNotificationService(runtime), TaskExecutionEngine(runtime)
    # the OpenAPI document is served below, behind the token like everything but /health
    app = FastAPI(title="raytasks", version="0.1.0", openapi_url=None, docs_url=None,
                  redoc_url=None, description="Durable, prioritised task management on Ray",
                  responses=_ERRORS)
    app.state.tokens = settings.api.tokens
    app.state.sessions = sessions = Sessions()
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

    @app.exception_handler(_Unauthorized)
    async def _unauthorized(_: Request, __: Exception) -> JSONResponse:
        response = error(401, "Unauthorized", "a valid bearer token is required")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(_CsrfRefused)
    async def _csrf(_: Request, __: Exception) -> JSONResponse:
        return error(403, "CsrfError", f"a request with the session cookie must send the "
                     f"session's {CSRF_HEADER} header")

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

    @app.post("/session")
    async def login(body: Login, request: Request, response: Response) -> SessionInfo:
        """Log a dashboard in: an HttpOnly session cookie and the session's CSRF token."""
        origin = request.headers.get("origin")
        if origin and origin.split("://", 1)[-1] != request.headers.get("host"):
            raise _CsrfRefused()
        who = principal_for(body.token, settings.api.tokens)
        if who is None:
            raise _Unauthorized()
        session_id, session = sessions.open(who)
        response.set_cookie(SESSION_COOKIE, session_id, max_age=int(SESSION_TTL_S),
                            httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")
        return SessionInfo(owner=who.owner, role=who.role, csrf=session.csrf)

    @app.get("/session")
    async def current_session(request: Request) -> SessionInfo:
        session = sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise _Unauthorized()
        return SessionInfo(owner=session.principal.owner, role=session.principal.role,
                           csrf=session.csrf)

    @app.delete("/session", status_code=204)
    async def logout(request: Request, who: Auth) -> Response:
        sessions.close(request.cookies.get(SESSION_COOKIE))
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.post("/tasks", status_code=201)
    async def create(request: TaskCreateRequest, who: Auth) -> Task:
        vet_create([request], settings)
        return public(await tm.submit(stamped(request, who)))

    @app.post("/tasks/batch", status_code=201)
    async def create_batch(
            requests: Annotated[list[TaskCreateRequest], Body(max_length=1000)],
            who: Auth) -> list[Task]:
        vet_create(requests, settings)
        return [public(t) for t in await tm.submit_many([stamped(r, who) for r in requests])]

    @app.get("/tasks")
    async def list_tasks(
        who: Auth,
        status: Annotated[list[TaskStatus] | None, Query(max_length=10)] = None,
        task_type: Annotated[list[str] | None, Query(max_length=100)] = None,
        priority: Annotated[list[TaskPriority] | None, Query(max_length=10)] = None,
        queue: Annotated[str | None, Query(max_length=64)] = None,
        owner: Annotated[str | None, Query(max_length=200)] = None,
        tags: Annotated[list[str] | None, Query(max_length=20)] = None,
        text: Annotated[str | None, Query(max_length=200)] = None,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        order_by: OrderField = "-created_at",
    ) -> Any:
        try:
            check_tags(tags or [])
            query = TaskQuery.model_validate({
                "status": status, "task_type": task_type, "priority": priority,
                "queue": queue, "owner": owner if who.admin else who.owner, "tags": tags,
                "text": text, "offset": offset, "limit": limit, "order_by": order_by})
        except ValueError as exc:
            reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise InvalidParametersError([{"field": "query", "reason": reason}]) from None
        return (await tm.list_tasks(query)).model_dump(mode="json")

    @app.get("/tasks/{task_id}")
    async def get(task_id: TaskId, who: Auth) -> Task:
        return public(await own_task(task_id, who))

    @app.patch("/tasks/{task_id}")
    async def update(task_id: TaskId, request: TaskUpdateRequest, who: Auth) -> Task:
        await own_task(task_id, who)
        vet_notify(request.notify or [], settings, "")
        return public(await tm.update_task(task_id, request))

    @app.post("/tasks/{task_id}/cancel")
    async def cancel(task_id: TaskId, who: Auth) -> Task:
        await own_task(task_id, who)
        return public(await tm.cancel_task(task_id))

    @app.post("/tasks/{task_id}/retry")
    async def retry(task_id: TaskId, who: Auth) -> Task:
        await own_task(task_id, who)
        return public(await tm.retry_task(task_id))

    @app.delete("/tasks/{task_id}", status_code=204)
    async def delete(task_id: TaskId, who: Auth) -> Response:
        await own_task(task_id, who)
        await tm.delete_task(task_id)
        return Response(status_code=204)

    @app.get("/tasks/{task_id}/progress")
    async def progress(task_id: TaskId, who: Auth) -> TaskProgress:
        await own_task(task_id, who)
        return await tracker.get_progress(task_id)

    @app.get("/stats/queues")
    async def queue_stats(who: Auth) -> Any:
        # aggregates only: whatever else the manager reports per queue stays inside
        return [{k: q[k] for k in QueueStats.model_fields if k in q}
                for q in (await tm.stats())["queues"]]

    @app.get("/stats/executors")
    async def executor_stats(who: Auth) -> Any:
        rows = await asyncio.to_thread(engine.executors_sync)
        if who.admin:
            return rows
        visible = set()
        for task_id in {r["current"] for r in rows if r.get("current")}:
            try:
                visible.add((await own_task(task_id, who)).id)
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

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        html = package.files("raytasks.server").joinpath("dashboard.html").read_text()
        return HTMLResponse(html, headers={"Content-Security-Policy": DASHBOARD_CSP})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in _STATIC:  # a fixed set of files: no name reaches the file system
            return error(404, "NotFound", "no such file")
        body = package.files("raytasks.server").joinpath("static", name).read_bytes()
        return Response(body, media_type=_STATIC[name])

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await serve_socket(socket, notifier, settings.api.tokens, sessions,
                           settings.notify.ws_progress_interval_s)

    return app
