"""The HTTP face of raytasks: REST, WebSocket, metrics and the dashboard (``raytasks serve``).

Thin: every route calls a client facade. Routes live by resource: ``routes_tasks``
(tasks and their logs), ``routes_schedules``, ``pages`` (dashboard, static files,
interactive docs), ``routes_access`` (dashboard sessions, the audit trail); stats,
metrics and the WebSocket are here. Every route declares the token scope it needs
(``read``, ``submit`` or ``admin``, see :mod:`.auth`). Everything
that arrives is untrusted (see README "Security"): bodies are parsed strictly
(:mod:`.edge`), requests are checked against the operator's named resources and notify
allow-list before they reach the manager, another owner's task is a 404 like a
random id, and responses never carry a traceback or a server path.

Errors are JSON ``{"error", "message", "errors": [{"field", "reason"}], ...}``:
401 (no or bad token), 403 (a cookie request without its CSRF token, or a token
without the route's scope), 404
(unknown, or another owner's task), 409 (illegal transition), 413 (body too
large), 422 (bad JSON, query or parameters, the field named), 429 (queue full,
an owner's quota, wrong tokens, sign-ins or task calls too often: the last three with
``Retry-After``), 500/503 (with the
``request_id`` the server log has).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

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
    StoreFullError,
    StoreUnavailableError,
    TaskError,
    TaskNotFoundError,
    UnknownTaskTypeError,
    WaitTimeoutError,
)
from ..metrics import queue_metrics_text
from ..models import QueueStats
from ..runtime import Runtime
from ..store.access import AccessStore
from . import pages, routes_access, routes_schedules, routes_tasks
from .auth import CSRF_HEADER
from .common import (
    CsrfRefused,
    MissingScope,
    Reader,
    Services,
    TooManyRequests,
    TooManySignIns,
    TooManyWrongTokens,
    Unauthorized,
)
from .edge import Edge, ErrorBody, error, scrub
from .peers import Peers
from .socket import serve_socket

log = logging.getLogger("raytasks.server")

_STATUS = [
    (TaskNotFoundError, 404), (InvalidTransitionError, 409), (PayloadTooLargeError, 413),
    (InvalidParametersError, 422), (UnknownTaskTypeError, 422), (QueueFullError, 429),
    (QuotaExceededError, 429), (WaitTimeoutError, 504), (NotConnectedError, 503),
    (StoreFullError, 507), (StoreUnavailableError, 503), (StoreError, 503), (TaskError, 400),
]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 413, 422, 429, 500)}
_PUBLIC_EXECUTOR_FIELDS = ("executor_id", "task_type", "held", "completed", "error")


#: How often a server deletes ended sessions and audit entries past their retention.
PRUNE_EVERY_S = 600.0


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
    assert settings.store_url is not None
    access = AccessStore(settings.store_url, busy_timeout_s=settings.store_busy_timeout_s)
    svc = Services(settings, TaskManager(runtime), ProgressTracker(runtime),
                   TaskNotificationService(runtime), TaskExecutionEngine(runtime), access)
    tm, notifier = svc.tm, svc.notifier

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pruning = asyncio.create_task(_prune(svc))
        try:
            yield
        finally:
            pruning.cancel()
            with suppress(asyncio.CancelledError):
                await pruning
            access.close()

    # the OpenAPI document is served below, behind the token like everything but /health
    app = FastAPI(title="raytasks", version="0.1.0", openapi_url=None, docs_url=None,
                  redoc_url=None, description="Durable, prioritised task management on Ray",
                  responses=_ERRORS, lifespan=lifespan)
    app.state.services = svc
    app.add_middleware(Edge, max_body_bytes=settings.api.max_body_bytes)
    app.add_middleware(Peers, trusted=settings.api.trusted_proxies)  # outermost: first
    _handle_errors(app, svc)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(who: Reader) -> Any:
        return app.openapi()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stats/queues")
    async def queue_stats(who: Reader) -> Any:
        # aggregates only: whatever else the manager reports per queue stays inside
        return [{k: q[k] for k in QueueStats.model_fields if k in q}
                for q in (await tm.stats())["queues"]]

    @app.get("/stats/executors")
    async def executor_stats(who: Reader) -> Any:
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
    async def task_types(who: Reader) -> Any:
        return [t.model_dump() for t in await asyncio.to_thread(tm.task_types_sync)]

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(who: Reader) -> str:
        return await notifier.metrics_text() + queue_metrics_text(await tm.stats())

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await serve_socket(socket, svc)

    for module in (routes_tasks, routes_schedules, routes_access, pages):
        app.include_router(module.router)
    return app


def _handle_errors(app: FastAPI, svc: Services) -> None:
    """Every error the app raises, as the JSON error body with its status."""

    @app.exception_handler(RaytasksError)
    async def _raytasks_error(request: Request, exc: RaytasksError) -> JSONResponse:
        status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
        if isinstance(exc, StoreUnavailableError | StoreFullError):
            # the store away or full: the caller should know why and retry later
            log.warning("request refused, the store is away or full: %s", exc)
            told = {k: scrub(str(exc.data[k])) for k in ("reason", "where") if k in exc.data}
            response = error(status, exc.kind, scrub(str(exc)), **told)
            response.headers["Retry-After"] = "5"
            return response
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
        await svc.slow_down(exc.delay_s)
        response = error(429, "TooManyWrongTokens", str(exc))
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        return response

    @app.exception_handler(TooManySignIns)
    async def _too_many_sign_ins(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TooManySignIns)
        response = error(429, "TooManySignIns", str(exc), limit=exc.limit)
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        return response

    @app.exception_handler(TooManyRequests)
    async def _too_many_requests(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TooManyRequests)
        # held back a moment: a client that waits for each answer floods that much slower
        await svc.slow_down(svc.settings.api.rate_limit_delay_s)
        response = error(429, "TooManyRequests", str(exc), limit=exc.limit)
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        return response

    @app.exception_handler(MissingScope)
    async def _missing_scope(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, MissingScope)
        return error(403, "MissingScope", str(exc), scope=exc.scope)

    @app.exception_handler(CsrfRefused)
    async def _csrf(_: Request, __: Exception) -> JSONResponse:
        return error(403, "CsrfError", f"a request with the session cookie must send the "
                     f"session's {CSRF_HEADER} header")


async def _prune(svc: Services) -> None:
    """Delete ended sessions and audit entries past ``api.audit_retention_s``, now and
    every :data:`PRUNE_EVERY_S` (each server on a store does it; doing it twice is
    harmless)."""
    while True:
        try:
            await asyncio.to_thread(prune_access, svc)
        except Exception:
            log.exception("pruning sessions and the audit trail failed; trying again later")
        await asyncio.sleep(PRUNE_EVERY_S)


def prune_access(svc: Services, now: float | None = None) -> tuple[int, int]:
    """Delete ended sessions and old audit entries; returns how many of each."""
    sessions = svc.sessions.prune()
    retention = svc.settings.api.audit_retention_s
    if retention is None:
        return sessions, 0
    now = svc.audit.clock() if now is None else now
    return sessions, svc.audit.table.prune(now - retention)
